"""chat_data: SFT files mixed by weight into one messages file, DPO pairs normalised, and each bad
input one line naming its file."""
import json

from conftest import REPO, SHARED_DATA, run_fails, run_ok

DEMO_CHAT = str(REPO / "demo/sft/demo_chat.jsonl")
DEMO_ALPACA = str(REPO / "demo/sft/demo_alpaca.json")


def chat_data(tmp_path, kind, sources, *extra):
    out = tmp_path / f"{kind}.jsonl"
    run_ok("training.chat_data", "--kind", kind, "--sources", json.dumps(sources), "--out", out,
           "--stats", tmp_path / f"{kind}.json", *extra)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return records, json.loads((tmp_path / f"{kind}.json").read_text())


def test_sft_files_are_mixed_by_weight_into_messages(tmp_path):
    records, stats = chat_data(tmp_path, "sft", [{"path": DEMO_CHAT, "weight": 2.0},
                                                 {"path": DEMO_ALPACA, "weight": 0.5}])
    written = {path: counts["written"] for path, counts in stats["files"].items()}
    assert written[DEMO_CHAT] == 800 and 70 < written[DEMO_ALPACA] < 130  # a seeded half of 200
    assert len(records) == stats["records"] == sum(written.values())
    assert all([m["role"] for m in r["messages"]][-1] == "assistant" for r in records)
    again, _ = chat_data(tmp_path, "sft", [{"path": DEMO_CHAT, "weight": 2.0}, {"path": DEMO_ALPACA, "weight": 0.5}])
    assert again == records


def test_a_declared_layout_is_read(tmp_path):
    firefly = tmp_path / "firefly.jsonl"
    firefly.write_text(json.dumps({"conversation": [{"human": "你好", "assistant": "你好！"}]}, ensure_ascii=False))
    records, _ = chat_data(tmp_path, "sft", [{"path": str(firefly), "weight": 1.0, "formatting": "sharegpt",
                                              "columns": {"messages": "conversation"},
                                              "tags": {"role_tag": "", "user_tag": "human",
                                                       "assistant_tag": "assistant"}}])
    assert records == [{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}]


def test_dpo_pairs_of_both_layouts_become_trl_pairs(tmp_path):
    sources = [{"path": str(SHARED_DATA / "dpo/dpo_zh_500.jsonl")}, {"path": str(SHARED_DATA / "dpo/dpo_zh_demo.json")}]
    records, stats = chat_data(tmp_path, "dpo", sources)
    assert stats["records"] == len(records) == 800
    assert all(set(r) == {"prompt", "chosen", "rejected"} and r["prompt"][-1]["role"] == "user" for r in records)


def test_each_bad_input_is_one_line_naming_the_file(tmp_path):
    empty, odd = tmp_path / "empty.jsonl", tmp_path / "odd.jsonl"
    empty.write_text("")
    odd.write_text('{"conversation": [], "id": 1}\n')
    common = ("--out", tmp_path / "o.jsonl", "--stats", tmp_path / "o.json", "--kind", "sft")
    mix = [{"path": DEMO_CHAT, "weight": 1.0}]
    run_fails("training.chat_data", f"{empty}: no records; fix the file or remove it from config",
              "--sources", json.dumps(mix + [{"path": str(empty), "weight": 1.0}]), *common)
    run_fails("training.chat_data",
              rf"{odd}: layout not recognised: the first record has keys \['conversation', 'id'\]",
              "--sources", json.dumps([{"path": str(odd), "weight": 1.0}]), *common)
    run_fails("training.chat_data", "the weights left no records", "--sources",
              json.dumps([{"path": str(REPO / "demo/dpo/demo_pairs.jsonl"), "weight": 1e-9}]), "--kind", "dpo",
              "--out", tmp_path / "o.jsonl", "--stats", tmp_path / "o.json")
    assert not (tmp_path / "o.jsonl").exists()


def test_bytes_that_are_not_utf8_are_one_line_with_the_file_and_line(tmp_path):
    bad = tmp_path / "gbk.jsonl"
    lines = [json.dumps({"instruction": "你好", "output": "你好！"}, ensure_ascii=False).encode(),
             json.dumps({"instruction": "再见", "output": "再见！"}, ensure_ascii=False).encode("gb18030")]
    bad.write_bytes(b"\n".join(lines) + b"\n")
    run_fails("training.chat_data",
              rf"chat_data: error: {bad}: line 2 \(byte \d+\): .* is not UTF-8; save the file as UTF-8",
              "--kind", "sft", "--sources", json.dumps([{"path": str(bad)}]), "--out", tmp_path / "o.jsonl",
              "--stats", tmp_path / "o.json")


def test_an_archive_folder_given_without_member_lists_what_it_holds(tmp_path):
    """A zip whose chat file sits in a folder unpacks to that folder; chat_data then gets the folder."""
    unpacked = tmp_path / "fetched"
    (unpacked / "belle" / "data").mkdir(parents=True)
    (unpacked / "belle" / "data" / "train.json").write_text("[]")
    sources = json.dumps([{"path": str(unpacked)}])
    line = run_fails("training.chat_data", "is a folder, not a chat file", "--kind", "sft", "--sources", sources,
                     "--out", tmp_path / "o.jsonl", "--stats", tmp_path / "o.json")
    assert "belle/, belle/data/, belle/data/train.json" in line and "member:" in line

"""tokenizer and tokens: round trip, special tokens, chat template, determinism, shards that decode back."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from conftest import run_ok, run_stage, train_tokenizer
from workflow_scripts.lib.chatml import END_OF_TEXT, IM_END, IM_START, SPECIAL_TOKENS
from workflow_scripts.tokenizer.tokens import token_dtype

HARD_STRINGS = [
    "中华人民共和国成立于1949年10月1日。",
    "Python 3.11 和 PyTorch 2.13：混合 English 与中文，价格 $3.50（约 ¥25）！",
    "表情😀🎉👩‍👩‍👧 与 rare 字 𠀀𪚥𰻞（扩展B/G区）",
    "全角标点：，。；：？！「」『』（）【】《》——……",
    "空白   连续\t\t制表\n\n\n换行\u3000全角空格\u00a0不换行空格  ",
    "  leading and trailing spaces  ",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ and ｶﾀｶﾅ",
    "e\u0301 combining, ﬁ ligature, Ωmega, ß",
    "",
    "<|im_start|>user\n你好<|im_end|>",
]




@pytest.mark.parametrize("text", HARD_STRINGS)
def test_round_trip(trained, text):
    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_report(trained):
    _, report = trained
    validation = report["validation"]
    assert report["vocab_size"] == 800
    assert validation["round_trip_exact"] == 1.0
    assert 1.0 < validation["characters_per_token"] < 3.0
    assert validation["bytes_per_token"] > validation["characters_per_token"]
    assert 0.3 < validation["han_single_token_share"] <= 1.0
    assert report["peak_rss_mb"] > 0 and report["training_seconds"] > 0


def test_special_tokens_are_never_split(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(f"前{token}后", add_special_tokens=False)
        assert tokenizer.convert_tokens_to_ids(token) in ids
        assert tokenizer.decode(ids) == f"前{token}后"
    assert tokenizer.eos_token == END_OF_TEXT and tokenizer.pad_token == "<|pad|>"
    assert Tokenizer.from_file(str(trained[0] / "tokenizer.json")).token_to_id(END_OF_TEXT) == 0


def test_chat_template_renders_multi_turn_conversations(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    messages = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "再见"},
                {"role": "assistant", "content": "再见。"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == ("<|im_start|>system\n你是助手。<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                        "<|im_start|>assistant\n你好！<|im_end|>\n<|im_start|>user\n再见<|im_end|>\n"
                        "<|im_start|>assistant\n再见。<|im_end|>\n")
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = np.array(out["input_ids"]), np.array(out["assistant_masks"], dtype=bool)
    assert tokenizer.decode(ids[mask]) == f"你好！{IM_END}再见。{IM_END}"
    assert (ids == tokenizer.convert_tokens_to_ids(IM_START)).sum() == 5
    assert "chat_template" in json.loads((trained[0] / "tokenizer_config.json").read_text())


def test_training_is_deterministic(demo_docs, trained, tmp_path):
    again, _ = train_tokenizer(tmp_path, demo_docs)
    assert (again / "tokenizer.json").read_bytes() == (trained[0] / "tokenizer.json").read_bytes()


def test_vocab_size_and_char_cap_change_the_tokenizer(demo_docs, trained, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bigger, report = train_tokenizer(tmp_path / "a", demo_docs, 1200)
    assert report["vocab_size"] == 1200
    assert report["validation"]["characters_per_token"] > trained[1]["validation"]["characters_per_token"]
    capped, _ = train_tokenizer(tmp_path / "b", demo_docs, 800, "--max-chars", 5000)
    assert (capped / "tokenizer.json").read_bytes() != (trained[0] / "tokenizer.json").read_bytes()


def make_shards(tokenizer_dir, docs, tmp, shards):
    indexes = []
    for shard in range(shards):
        run_ok("tokenizer.tokens", "--tokenizer", tokenizer_dir, "--input", docs, "--shard", shard, "--shards", shards,
               "--out", tmp / f"train-{shard:03d}.bin", "--index", tmp / f"train-{shard:03d}.json")
        indexes.append(tmp / f"train-{shard:03d}.json")
    run_ok("tokenizer.tokens_index", "--shards", *indexes, "--out", tmp / "index.json")
    return json.loads((tmp / "index.json").read_text())


def decoded_documents(tokenizer_dir, tmp, index):
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    texts = []
    for shard in index["splits"]["train"]["shards"]:
        ids = np.memmap(tmp / shard["file"], dtype=index["dtype"], mode="r")
        assert len(ids) == shard["tokens"] and ids[-1] == index["eod_id"]
        cuts = np.flatnonzero(ids == index["eod_id"])
        assert len(cuts) == shard["documents"]
        texts += [tokenizer.decode(part.tolist()) for part in np.split(ids, cuts + 1)[:-1]]
    return texts


def test_token_shards_decode_back_to_their_documents(trained, demo_docs, tmp_path):
    index = make_shards(trained[0], demo_docs, tmp_path, 3)
    texts = pq.read_table(demo_docs).column("text").to_pylist()
    assert index["dtype"] == "uint16" and index["vocab_size"] == 800
    assert index["splits"]["train"]["documents"] == len(texts)
    assert decoded_documents(trained[0], tmp_path, index) == texts


def test_dtype_switches_at_65536(trained, demo_docs, tmp_path):
    assert token_dtype(65_535) == np.uint16 and token_dtype(65_536) == np.uint32
    big = Tokenizer.from_file(str(trained[0] / "tokenizer.json"))
    big.add_tokens([f"额外{i}" for i in range(65_536 - big.get_vocab_size())] + ["最后一个新词"])
    (tmp_path / "big").mkdir()
    big.save(str(tmp_path / "big" / "tokenizer.json"))
    index = make_shards(tmp_path / "big", demo_docs, tmp_path, 1)
    assert index["dtype"] == "uint32" and index["vocab_size"] == 65_537
    texts = pq.read_table(demo_docs).column("text").to_pylist()
    assert decoded_documents(tmp_path / "big", tmp_path, index) == texts


def test_mixed_tokenizers_are_refused(trained, demo_docs, tmp_path):
    index = make_shards(trained[0], demo_docs, tmp_path, 2)
    shard = json.loads((tmp_path / "train-001.json").read_text())
    (tmp_path / "train-001.json").write_text(json.dumps({**shard, "tokenizer_sha1": "0" * 40}))
    result = run_stage("tokenizer.tokens_index", "--shards", tmp_path / "train-000.json", tmp_path / "train-001.json",
                       "--out", tmp_path / "i.json")
    assert result.returncode == 1 and "disagree on tokenizer_sha1" in result.stderr
    assert index["splits"]["train"]["documents"] > 0


def test_missing_tokenizer_is_a_clear_error(demo_docs, tmp_path):
    result = run_stage("tokenizer.tokens", "--tokenizer", tmp_path / "none", "--input", demo_docs,
                       "--out", tmp_path / "t.bin", "--index", tmp_path / "t.json")
    assert result.returncode == 1 and "train the tokenizer first" in result.stderr

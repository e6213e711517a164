"""The corpus stages of rules/data.smk around dedup, each run as its rule runs it on small hand-made
shards: convert, clean (normalisation and quality filters) and split; and every data stage's
one line for an unreadable input file."""
import json

import pytest

from conftest import chinese, dedup, read, run_fails, run_ok, write_docs
from workflow_scripts.data.split import in_validation
from workflow_scripts.lib.corpus.text_normalization import normalize


def test_convert_turns_taiwan_terms_into_mainland_ones(tmp_path):
    src = write_docs(tmp_path / "in.parquet", [{"id": 1, "title": "軟體", "text": "這個軟體的資料庫很快。"}])
    for config, expected in (("t2s", "这个软体的资料库很快。"), ("tw2sp", "这个软件的数据库很快。")):
        out = tmp_path / f"{config}.parquet"
        run_ok("data.convert", "--opencc-config", config, "--input", src, "--out", out, "--stats", tmp_path / "s.json")
        assert read(out)[0]["text"] == expected
    assert json.loads((tmp_path / "s.json").read_text())["documents_changed"] == 1


def test_normalize_keeps_full_width_punctuation():
    text = "他说：「你好！」（１９９０年）ＡＢＣ……  空格\u3000\u3000折叠\n\n\n下一行"
    assert normalize(text) == "他说：「你好！」（1990年）ABC…… 空格 折叠\n下一行"


@pytest.mark.parametrize("text, reason", [
    ("太短了。", "too_short"),
    ("This page is written in English and has almost no Chinese at all. " * 5, "low_han_fraction"),
    ("同一行重复出现很多次的内容。\n" * 12, "duplicate_lines"),
    ("重复的片段重复的片段" * 30, "repeated_ngrams"),
])
def test_clean_drops_each_kind_and_counts_it(tmp_path, text, reason):
    docs = [{"id": 1, "text": chinese(1)}, {"id": 2, "text": text}]
    out = tmp_path / "out.parquet"
    run_ok("data.clean", "--input", write_docs(tmp_path / "in.parquet", docs), "--min-chars", 100,
           "--min-han-fraction", 0.4, "--max-duplicate-line-fraction", 0.3, "--repetition-ngram", 10,
           "--max-repeated-ngram-fraction", 0.3, "--out", out, "--stats", tmp_path / "s.json")
    assert [d["id"] for d in read(out)] == [1]
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["removed"][reason] == 1 and sum(stats["removed"].values()) == 1


def test_split_is_deterministic_disjoint_and_skips_removed(tmp_path):
    docs = [{"id": i, "text": chinese(i, 50)} for i in range(400)]
    src = write_docs(tmp_path / "clean.parquet", docs)
    dedup_report = tmp_path / "removed.parquet"
    dedup(tmp_path, [[docs[0], {**docs[0], "id": 1000}]])
    args = ["--inputs", src, "--removed", dedup_report, "--validation-fraction", 0.1, "--seed", 3]
    run_ok("data.split", *args, "--train", tmp_path / "t.parquet", "--validation", tmp_path / "v.parquet",
           "--stats", tmp_path / "s.json")
    train, validation = read(tmp_path / "t.parquet"), read(tmp_path / "v.parquet")
    train_ids, validation_ids = {d["id"] for d in train}, {d["id"] for d in validation}
    assert not train_ids & validation_ids and len(train_ids | validation_ids) == 400
    assert 20 <= len(validation) <= 60
    assert validation_ids == {i for i in range(400) if in_validation(i, 0.1, 3)}
    assert validation_ids != {i for i in range(400) if in_validation(i, 0.1, 4)}


@pytest.mark.parametrize("stage, args", [
    ("data.convert", ["--input", "{bad}", "--out", "{tmp}/o.parquet", "--stats", "{tmp}/s.json"]),
    ("data.clean", ["--input", "{bad}", "--out", "{tmp}/o.parquet", "--stats", "{tmp}/s.json"]),
    ("data.minhash", ["--input", "{bad}", "--out", "{tmp}/o.npz"]),
    ("data.dedup_bands", ["--signatures", "{bad}", "--group", "0", "--band-jobs", "1", "--out", "{tmp}/o.npz",
                          "--stats", "{tmp}/s.json"]),
    ("data.dedup_exact", ["--signatures", "{bad}", "--group", "0", "--join-jobs", "1", "--out", "{tmp}/o.npz",
                          "--stats", "{tmp}/s.json"]),
    ("data.dedup_join", ["--signatures", "{bad}", "--exact", "{bad}", "--pairs", "{bad}", "--part", "0",
                         "--report", "{tmp}/r.parquet", "--stats", "{tmp}/s.json"]),
    ("data.dedup", ["--exact", "{bad}", "--parts", "{bad}", "--part-stats", "{bad}", "--report", "{tmp}/r.parquet",
                    "--stats", "{tmp}/s.json"]),
    ("data.split", ["--inputs", "{good}", "--removed", "{bad}", "--train", "{tmp}/t.parquet", "--validation",
                    "{tmp}/v.parquet", "--stats", "{tmp}/s.json"]),
])
def test_an_unreadable_input_file_is_one_line_naming_it(tmp_path, stage, args):
    """A truncated file (what a full disk or a copy cut short leaves) as the stage's input."""
    good = write_docs(tmp_path / "good.parquet", [{"id": 1, "text": chinese(1)}])
    bad = tmp_path / "bad.bin"
    bad.write_bytes(good.read_bytes()[:100])
    values = {"bad": bad, "good": good, "tmp": tmp_path}
    run_fails(stage, rf"{bad.name}: not a readable (Parquet|signature) file .*; rerun",
              *(a.format(**values) for a in args))
    assert not any(tmp_path.glob("[otrv].*"))

"""convert, clean, minhash + dedup, split: each stage's CLI on small hand-made shards."""
import json
import random
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SHARED_DATA, run_dedup, run_fails, run_ok, run_stage
from workflow_scripts.data.split import in_validation
from workflow_scripts.lib.corpus.documents import DocWriter
from workflow_scripts.lib.corpus.minhash_signatures import signatures
from workflow_scripts.lib.corpus.near_duplicates import exact_copies, greedy_removals
from workflow_scripts.lib.corpus.signature_files import SignatureFiles
from workflow_scripts.lib.corpus.text_normalization import normalize

sys.path.insert(0, str(REPO / "benchmarks"))
from dedup_scaling import loop_removals, reference_removals, write_shards  # noqa: E402  the single job dedup replaced

HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"  # noqa: E501


def write_docs(path, docs):
    with DocWriter(path) as writer:
        for doc in docs:
            writer.write({"url": f"https://zh.wikipedia.org/wiki?curid={doc['id']}", "title": f"t{doc['id']}", **doc})
    return path


def read(path):
    return pq.read_table(path).to_pylist()


def chinese(seed, n=300):
    rng = random.Random(seed)
    return "".join(rng.choice(HAN) for _ in range(n))


def test_convert_turns_taiwan_terms_into_mainland_ones(tmp_path):
    src = write_docs(tmp_path / "in.parquet", [{"id": 1, "title": "軟體", "text": "這個軟體的資料庫很快。"}])
    for config, expected in (("t2s", "这个软体的资料库很快。"), ("tw2sp", "这个软件的数据库很快。")):
        out = tmp_path / f"{config}.parquet"
        run_ok("data.convert", "--config", config, "--input", src, "--out", out, "--stats", tmp_path / "s.json")
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


def dedup(tmp_path, shards, threshold=0.8, ngram=5, num_perm=128, join_jobs=1):
    signatures = []
    for n, docs in enumerate(shards):
        src = write_docs(tmp_path / f"clean-{n}.parquet", docs)
        signatures.append(tmp_path / f"sig-{n}.npz")
        run_ok("data.minhash", "--input", src, "--ngram", ngram, "--num-perm", num_perm, "--seed", 1,
               "--out", signatures[-1])
    return run_dedup(tmp_path, signatures, "--threshold", threshold, "--num-perm", num_perm, join_jobs=join_jobs)


def test_the_default_settings_find_copies_of_real_text_with_three_percent_changed(tmp_path):
    """Measured before the defaults were chosen: 0 of these 20 copies removed at 0.8."""
    settings = yaml.safe_load((REPO / "config.yaml").read_text())["dedup"]
    rng = random.Random(0)
    chapters = sorted((SHARED_DATA / "pretrain_text" / "chinese-novels").glob("*.txt"))[::20][:20]
    originals = [p.read_text(encoding="utf-8").replace("\xa0", "")[500:2500] for p in chapters]
    copies = []
    for text in originals:
        chars = list(text)
        for i in rng.sample(range(len(chars)), round(0.03 * len(chars))):
            chars[i] = rng.choice(text)
        copies.append("".join(chars))
    shards = [[{"id": n, "text": t} for n, t in enumerate(originals)],
              [{"id": 100 + n, "text": t} for n, t in enumerate(copies)]]
    removed = dedup(tmp_path, shards, settings["threshold"], settings["ngram"], settings["num_perm"])
    assert sorted((r["id"], r["duplicate_of"]) for r in removed) == [(100 + n, n) for n in range(20)]


def near_copy(text, seed):
    rng = random.Random(seed)
    chars = list(text)
    chars[rng.randrange(len(chars))] = "变"
    return "".join(chars)


def test_dedup_finds_exact_and_near_duplicates_across_shards(tmp_path):
    a, b = chinese(1), chinese(2)
    shards = [[{"id": 5, "text": a}, {"id": 9, "text": chinese(3)}],
              [{"id": 2, "text": b}, {"id": 7, "text": a.replace("", " ")[:-1]}, {"id": 8, "text": near_copy(b, 0)}]]
    removed = dedup(tmp_path, shards)
    got = {(r["id"], r["kind"], r["duplicate_of"]) for r in removed}
    assert got == {(7, "exact", 5), (8, "near", 2)}
    assert all(r["duplicate_of_title"] == f"t{r['duplicate_of']}" for r in removed)


def test_dedup_threshold_decides_what_is_near(tmp_path):
    base = chinese(4)
    half = base[:150] + chinese(5, 150)
    shards = [[{"id": 1, "text": base}, {"id": 2, "text": half}]]
    assert dedup(tmp_path, shards, threshold=0.9) == []
    assert [r["id"] for r in dedup(tmp_path, shards, threshold=0.2)] == [2]


def test_dedup_is_deterministic_whatever_the_shard_order(tmp_path):
    texts = [chinese(10 + i % 7) if i % 3 else near_copy(chinese(10 + i % 7), i) for i in range(40)]
    docs = [{"id": i, "text": t} for i, t in enumerate(texts)]
    (tmp_path / "forward").mkdir()
    (tmp_path / "backward").mkdir()
    forward = dedup(tmp_path / "forward", [docs[:20], docs[20:]])
    backward = dedup(tmp_path / "backward", [docs[20:][::-1], docs[:20][::-1]])
    assert forward == backward and len(forward) > 0
    assert all(r["duplicate_of"] < r["id"] for r in forward)


def test_minhash_signatures_are_those_of_each_texts_ngram_set_whatever_the_batch(tmp_path):
    texts = [chinese(n, 20 + 37 * n) for n in range(300)] + ["", "短", "abcd", "甲乙丙丁戊" * 40, "甲乙丙丁戊" * 3]
    alone = np.vstack([signatures([text], 5, 64, 1) for text in texts])
    assert (signatures(texts, 5, 64, 1) == alone).all()
    assert (alone[-2] == alone[-1]).all()  # the same set of 5-grams, repeated or not
    assert len({row.tobytes() for row in alone}) == len(texts) - 1
    docs = [{"id": n, "text": t} for n, t in enumerate(texts)]  # more documents than one batch of the stage
    run_ok("data.minhash", "--input", write_docs(tmp_path / "in.parquet", docs), "--num-perm", 64,
           "--out", tmp_path / "s.npz")
    assert (np.load(tmp_path / "s.npz")["signatures"] == alone).all()


def test_dedup_of_an_empty_corpus_says_what_to_loosen(tmp_path):
    src = write_docs(tmp_path / "empty.parquet", [])
    run_ok("data.minhash", "--input", src, "--out", tmp_path / "sig.npz")
    run_ok("data.dedup_exact", "--signatures", tmp_path / "sig.npz", "--group", 0, "--groups", 1, "--out",
           tmp_path / "exact.npz", "--stats", tmp_path / "exact.json")
    result = run_stage("data.dedup_join", "--signatures", tmp_path / "sig.npz", "--exact", tmp_path / "exact.npz",
                       "--pairs", tmp_path / "sig.npz", "--part", 0, "--report", tmp_path / "r.parquet",
                       "--stats", tmp_path / "s.json")
    assert result.returncode == 1
    assert "clean left no documents" in result.stderr and "Traceback" not in result.stderr


def test_band_jobs_and_their_join_remove_what_the_single_job_did(tmp_path):
    """Against the single job dedup was (datasketch's LSH holding every kept document, in one pass):
    20 shards of synthetic signatures with exact copies and near copies across shards, the bands
    shared by 1 and by 3 jobs (which find each pair once between them), the exact keys by 1 and by 4."""
    paths = write_shards(tmp_path / "signatures", 4000, seed=3)
    files = SignatureFiles(paths, ["zhwiki"], 128)
    reference = reference_removals(files, 0.55)
    ids = files.in_visiting_order("ids")
    expected = [(int(ids[p]), kind, int(ids[o]), round(sim, 4)) for p, kind, o, sim in reference]
    assert len(expected) > 150 and {kind for _, kind, _, _ in expected} == {"exact", "near"}
    pairs = {}
    for band_jobs, join_jobs in ((1, 1), (3, 7)):
        (tmp_path / str(band_jobs)).mkdir()
        removed = run_dedup(tmp_path / str(band_jobs), paths, "--threshold", 0.55, band_jobs=band_jobs,
                            join_jobs=join_jobs)
        assert [(r["id"], r["kind"], r["duplicate_of"], r["similarity"]) for r in removed] == expected
        found = [np.load(path) for path in sorted((tmp_path / str(band_jobs)).glob("pairs-*-*.npz"))]
        pairs[band_jobs] = [pair for f in found for pair in zip(f["earlier_ids"].tolist(), f["later_ids"].tolist())]
    assert sorted(pairs[3]) == sorted(set(pairs[1])) == sorted(pairs[1])
    parts = [json.loads((tmp_path / "3" / f"join-{part}.json").read_text()) for part in range(7)]
    assert all(part["settled_by_earlier_parts"] for part in parts[1:])  # pairs across parts


def test_a_copy_of_a_document_an_earlier_join_part_removed_points_to_that_ones_original(tmp_path):
    """One document per part: 2 is a near copy of 1, and 3 an exact copy of 2, so 3 is removed as
    2 was, a near copy of 1 (the kept one) with 2's similarity to it, as one job decides."""
    a = chinese(1)
    shards = [[{"id": 1, "text": a}, {"id": 2, "text": near_copy(a, 0)}, {"id": 3, "text": near_copy(a, 0)}]]
    rows = {}
    for join_jobs in (1, 3):
        (tmp_path / str(join_jobs)).mkdir()
        rows[join_jobs] = [(r["id"], r["kind"], r["duplicate_of"], r["duplicate_of_title"], r["similarity"])
                           for r in dedup(tmp_path / str(join_jobs), shards, join_jobs=join_jobs)]
    assert rows[3] == rows[1] and [row[:4] for row in rows[1]] == [(2, "near", 1, "t1"), (3, "near", 1, "t1")]
    assert rows[1][0][4] == rows[1][1][4] < 1
    assert json.loads((tmp_path / "3/join-2.json").read_text())["copies_of_documents_removed_by_earlier_parts"] == 1


@pytest.mark.parametrize("shape", ["random", "chain"])
def test_the_greedy_rounds_decide_as_the_loop_in_visiting_order(shape):
    """Random pair graphs with exact copies (a few rounds each), and a chain of near copies of
    near copies, where every other document is kept and the rounds hand over to the loop."""
    rng = np.random.default_rng(0)
    for _ in range(200 if shape == "random" else 1):
        count = int(rng.integers(2, 300)) if shape == "random" else 3000
        if shape == "random":
            ends = rng.integers(0, count, (2, int(rng.integers(0, 3 * count))))
            ends = np.sort(ends[:, ends[0] != ends[1]], axis=0)
            keys = rng.integers(0, count // int(rng.integers(1, 5)) + 1, count).astype("S20")
        else:
            ends, keys = np.stack([np.arange(count - 1), np.arange(1, count)]), np.arange(count).astype("S20")
        similarity = rng.choice([0.6, 0.7, 0.9], ends.shape[1])
        copies, originals = exact_copies(keys)
        rounds = greedy_removals(count, copies, originals, ends[0], ends[1], similarity)
        assert list(zip(*(a.tolist() for a in rounds))) == loop_removals(count, copies, originals, *ends, similarity)
    assert shape == "random" or len(rounds[0]) == count // 2


def test_more_band_jobs_than_bands_is_one_line_naming_the_setting(tmp_path):
    write_docs(tmp_path / "a.parquet", [{"id": 1, "text": chinese(1)}])
    run_ok("data.minhash", "--input", tmp_path / "a.parquet", "--out", tmp_path / "a.npz")
    run_fails("data.dedup_bands", r"30 band jobs but the LSH has 28 bands .*; set dedup.band_jobs to at most 28",
              "--signatures", tmp_path / "a.npz", "--group", 29, "--groups", 30, "--out", tmp_path / "p.npz",
              "--stats", tmp_path / "p.json")


def test_dedup_stops_on_pairs_of_another_corpus(tmp_path):
    docs = [{"id": i, "text": chinese(i)} for i in range(3)]
    for name, shard in (("a", docs), ("b", docs[:2])):
        write_docs(tmp_path / f"{name}.parquet", shard)
        run_ok("data.minhash", "--input", tmp_path / f"{name}.parquet", "--out", tmp_path / f"{name}.npz")
    run_ok("data.dedup_bands", "--signatures", tmp_path / "b.npz", "--group", 0, "--groups", 1, "--out",
           tmp_path / "pairs.npz", "--stats", tmp_path / "pairs.json")
    run_ok("data.dedup_exact", "--signatures", tmp_path / "a.npz", "--group", 0, "--groups", 1, "--out",
           tmp_path / "exact.npz", "--stats", tmp_path / "exact.json")
    run_fails("data.dedup_join", r"pairs\.npz: made from 2 documents, but the signatures hold 3; rerun dedup_bands",
              "--signatures", tmp_path / "a.npz", "--exact", tmp_path / "exact.npz", "--pairs", tmp_path / "pairs.npz",
              "--part", 0, "--report", tmp_path / "r.parquet", "--stats", tmp_path / "s.json")


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
    ("convert", ["--input", "{bad}", "--out", "{tmp}/o.parquet", "--stats", "{tmp}/s.json"]),
    ("clean", ["--input", "{bad}", "--out", "{tmp}/o.parquet", "--stats", "{tmp}/s.json"]),
    ("minhash", ["--input", "{bad}", "--out", "{tmp}/o.npz"]),
    ("dedup_bands", ["--signatures", "{bad}", "--group", "0", "--groups", "1", "--out", "{tmp}/o.npz", "--stats",
                     "{tmp}/s.json"]),
    ("dedup_exact", ["--signatures", "{bad}", "--group", "0", "--groups", "1", "--out", "{tmp}/o.npz", "--stats",
                     "{tmp}/s.json"]),
    ("dedup_join", ["--signatures", "{bad}", "--exact", "{bad}", "--pairs", "{bad}", "--part", "0", "--report",
                    "{tmp}/r.parquet", "--stats", "{tmp}/s.json"]),
    ("dedup", ["--exact", "{bad}", "--parts", "{bad}", "--part-stats", "{bad}", "--report", "{tmp}/r.parquet",
               "--stats", "{tmp}/s.json"]),
    ("split", ["--inputs", "{good}", "--removed", "{bad}", "--train", "{tmp}/t.parquet", "--validation",
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

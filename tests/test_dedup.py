"""Deduplication (rules minhash_part, dedup_band_group, dedup_exact_group, dedup_join_part, dedup):
exact and near copies found across shards and corpora, the same removals whatever the number of
jobs, and the single job it replaced (benchmarks/dedup_scaling.py) as the reference."""
import json
import random
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, SHARED_DATA, chinese, dedup, run_dedup, run_fails, run_ok, run_stage, write_docs
from workflow_scripts.lib.corpus.minhash_signatures import signatures
from workflow_scripts.lib.corpus.near_duplicates import exact_copies, greedy_removals
from workflow_scripts.lib.corpus.signature_files import SignatureFiles

sys.path.insert(0, str(REPO / "benchmarks"))
from dedup_scaling import loop_removals, reference_removals, write_shards  # noqa: E402  the single job dedup replaced


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
    run_ok("data.dedup_exact", "--signatures", tmp_path / "sig.npz", "--group", 0, "--join-jobs", 1, "--out",
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
              "--signatures", tmp_path / "a.npz", "--group", 29, "--band-jobs", 30, "--out", tmp_path / "p.npz",
              "--stats", tmp_path / "p.json")


def test_dedup_stops_on_pairs_of_another_corpus(tmp_path):
    docs = [{"id": i, "text": chinese(i)} for i in range(3)]
    for name, shard in (("a", docs), ("b", docs[:2])):
        write_docs(tmp_path / f"{name}.parquet", shard)
        run_ok("data.minhash", "--input", tmp_path / f"{name}.parquet", "--out", tmp_path / f"{name}.npz")
    run_ok("data.dedup_bands", "--signatures", tmp_path / "b.npz", "--group", 0, "--band-jobs", 1, "--out",
           tmp_path / "pairs.npz", "--stats", tmp_path / "pairs.json")
    run_ok("data.dedup_exact", "--signatures", tmp_path / "a.npz", "--group", 0, "--join-jobs", 1, "--out",
           tmp_path / "exact.npz", "--stats", tmp_path / "exact.json")
    run_fails("data.dedup_join", r"pairs\.npz: made from 2 documents, but the signatures hold 3; rerun dedup_bands",
              "--signatures", tmp_path / "a.npz", "--exact", tmp_path / "exact.npz", "--pairs", tmp_path / "pairs.npz",
              "--part", 0, "--report", tmp_path / "r.parquet", "--stats", tmp_path / "s.json")

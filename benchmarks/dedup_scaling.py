"""Dedup's jobs at corpus scale: peak memory and wall time of each dedup_bands job and of the dedup
join, against the single job they replaced, on synthetic signatures.

    python benchmarks/dedup_scaling.py --documents 1400000 10000000 --band-jobs 4 --workdir /tmp/dedup-scaling

For each size it writes signature files in the minhash stage's layout (20 shards; random 128-value
signatures, 2 % exact copies and 3 % near copies, whose values differ from an earlier document's
in 10 to 40 % of positions, a third of them in the previous shard), then runs every job as its own
process and reads its peak resident memory from wait4. The single job (datasketch's MinHashLSH
holding every kept document, as dedup was until this benchmark; reference_removals below) runs
where --baseline-max allows; its removals must equal the new jobs'. Writes
benchmarks/results/dedup_scaling.{json,md}.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datasketch import LeanMinHash, MinHashLSH

from results_io import RESULTS, provenance, save

REPO = RESULTS.parents[1]
sys.path.insert(0, str(REPO))
from workflow_scripts.lib.signature_files import SignatureFiles  # noqa: E402

SHARDS, NUM_PERM, THRESHOLD = 20, 128, 0.55


def reference_removals(files, threshold):
    """[(position, kind, original position, similarity)] of these SignatureFiles: dedup as one job,
    visiting positions in order with every kept document's MinHash in datasketch's LSH (its bands
    as lib.near_duplicates.band_shape chooses them)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=files.num_perm, weights=(0.1, 0.9))
    by_key, kept, removed = {}, {}, []
    signatures = files.in_visiting_order("signatures")
    for position, (key, values) in enumerate(zip(files.in_visiting_order("exact").tolist(), signatures)):
        if key in by_key:
            removed.append((position, *by_key[key]))
            continue
        # datasketch asks the scheme of stored values; its LSH and jaccard only compare them, and
        # rensa's are 32-bit as affine32's are.
        minhash = LeanMinHash(seed=1, hashvalues=values, scheme="affine32")
        best = max(((minhash.jaccard(kept[c]), -c) for c in lsh.query(minhash)), default=(0.0, 0))
        if best[0] >= threshold:
            removed.append((position, "near", -best[1], best[0]))
            by_key[key] = ("near", -best[1], best[0])
        else:
            lsh.insert(position, minhash, check_duplication=False)
            kept[position] = minhash
            by_key[key] = ("exact", position, 1.0)
    return removed


def write_shards(folder: Path, documents, seed):
    """Signature files of `documents` synthetic documents; returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    per_shard, previous, paths = -(-documents // SHARDS), None, []
    for shard in range(SHARDS):
        n = min(per_shard, documents - shard * per_shard)
        signatures = rng.integers(0, 2**32, (n, NUM_PERM), dtype=np.uint32)
        exact = rng.integers(0, 256, (n, 20), dtype=np.uint8).view("S20").ravel()
        copies = rng.choice(np.arange(n // 10, n), size=n // 20, replace=False)
        exact_copies, near_copies = copies[:len(copies) * 2 // 5], copies[len(copies) * 2 // 5:]
        sources = rng.integers(0, exact_copies, dtype=np.int64)
        signatures[exact_copies], exact[exact_copies] = signatures[sources], exact[sources]
        for copy in near_copies:
            from_previous = previous is not None and rng.random() < 1 / 3
            values = (previous[rng.integers(0, len(previous))] if from_previous else
                      signatures[rng.integers(0, copy)]).copy()
            changed = rng.choice(NUM_PERM, size=int(rng.integers(NUM_PERM // 10, NUM_PERM * 2 // 5)), replace=False)
            values[changed] = rng.integers(0, 2**32, len(changed), dtype=np.uint32)
            signatures[copy] = values
        ids = np.arange(shard * per_shard, shard * per_shard + n, dtype=np.int64)
        paths.append(folder / f"zhwiki-{shard:03d}.npz")
        np.savez(paths[-1], ids=ids, titles=np.char.add("t", ids.astype(str)), sources=np.full(n, "zhwiki"),
                 exact=exact, signatures=signatures)
        previous = signatures
    return paths


def measured(command, log_path):
    """(wall seconds, peak resident MiB) of one job run as its own process."""
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(command[:3])} failed: {log_path.read_text()[-2000:]}")
    return round(time.time() - started, 1), round(usage.ru_maxrss / 1024)


def new_jobs(folder, paths, band_jobs):
    """Each job's (name, seconds, MiB), and the removed positions the join reported."""
    jobs, pairs = [], []
    for group in range(band_jobs):
        pairs.append(folder / f"bands-{group}.npz")
        jobs.append((f"dedup_bands {group}", *measured(
            [sys.executable, "-m", "workflow_scripts.dedup_bands", "--signatures", *map(str, paths), "--group",
             str(group), "--groups", str(band_jobs), "--threshold", str(THRESHOLD), "--out", str(pairs[-1]),
             "--stats", str(folder / f"bands-{group}.json")], folder / f"bands-{group}.log")))
    report = folder / "removed.parquet"
    jobs.append(("dedup (join)", *measured(
        [sys.executable, "-m", "workflow_scripts.dedup", "--signatures", *map(str, paths), "--pairs",
         *map(str, pairs), "--threshold", str(THRESHOLD), "--report", str(report), "--stats",
         str(folder / "stats.json")], folder / "dedup.log")))
    return jobs, report


def baseline(paths, folder):
    """(seconds, MiB, removed ids) of the single job, in a process of its own."""
    out = folder / "reference.npy"
    seconds, mib = measured([sys.executable, __file__, "--reference", str(out), *map(str, paths)],
                            folder / "reference.log")
    return seconds, mib, np.load(out)


def run_reference(out, paths):
    files = SignatureFiles(paths, ["zhwiki"], NUM_PERM)
    removed = reference_removals(files, THRESHOLD)
    np.save(out, files.gather("ids", np.array([r[0] for r in removed], dtype=np.int64)))


def measure(documents, band_jobs, workdir, baseline_max):
    folder = workdir / f"{documents}"
    paths = write_shards(folder / "signatures", documents, seed=documents)
    jobs, report = new_jobs(folder, paths, band_jobs)
    removed = np.sort(pq.read_table(report, columns=["id"])["id"].to_numpy())
    row = {"documents": documents, "removed": len(removed), "jobs": [
        {"job": name, "seconds": s, "peak_mib": m} for name, s, m in jobs]}
    if documents <= baseline_max:
        seconds, mib, reference = baseline(paths, folder)
        row["single_job"] = {"seconds": seconds, "peak_mib": mib}
        row["identical_to_single_job"] = bool(np.array_equal(np.sort(reference), removed))
    print(row, flush=True)
    return row


def markdown(report):
    lines = [f"# Dedup's jobs at scale ({report['machine']})", "", f"`{report['command']}`", "",
             f"Synthetic signatures ({SHARDS} shards, {NUM_PERM} permutations, threshold {THRESHOLD}); each job a "
             "process of its own, run one after another; peak resident memory from wait4.", "",
             "| documents | job | wall s | peak MiB | MiB per 1,000 documents |", "|---:|---|---:|---:|---:|"]
    for row in report["rows"]:
        jobs = row["jobs"] + ([{"job": "single job (before)", **row["single_job"]}] if "single_job" in row else [])
        for job in jobs:
            lines.append(f"| {row['documents']:,} | {job['job']} | {job['seconds']} | {job['peak_mib']:,} | "
                         f"{job['peak_mib'] * 1000 / row['documents']:.2f} |")
    lines.append("")
    for row in report["rows"]:
        same = row.get("identical_to_single_job")
        lines.append(f"- {row['documents']:,} documents: {row['removed']:,} removed; "
                     + ("the same documents as the single job." if same else
                        "the single job differs!" if same is False else "single job not run (see --baseline-max)."))
    return "\n".join(lines) + "\n"


def main():
    if sys.argv[1:2] == ["--reference"]:
        return run_reference(Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, nargs="+", default=[1_400_000, 10_000_000])
    ap.add_argument("--band-jobs", type=int, default=4)
    ap.add_argument("--baseline-max", type=int, default=1_400_000,
                    help="largest size the single job runs at (it needs about 5 KB per document)")
    ap.add_argument("--workdir", type=Path, required=True, help="a folder that does not exist yet")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True)
    rows = [measure(n, args.band_jobs, args.workdir, args.baseline_max) for n in args.documents]
    report = {**provenance(), "rows": rows}
    save("dedup_scaling", report, markdown(report))


if __name__ == "__main__":
    main()

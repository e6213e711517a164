"""Dedup's jobs at corpus scale: peak memory and wall time of each dedup_bands job, of the
dedup_exact jobs and dedup_join parts at several join_jobs and of dedup (which concatenates the
parts), against the single job they replaced, on synthetic signatures; and the join's greedy pass
against the Python loop it was.

    python benchmarks/dedup_scaling.py --documents 1400000 10000000 --band-jobs 4 --join-jobs 1 4 8 \
        --before /tmp/dedup-before --workdir /tmp/dedup-scaling

For each size it writes signature files in the minhash stage's layout (20 shards; random 128-value
signatures, 2 % exact copies and 3 % near copies, whose values differ from an earlier document's
in 10 to 40 % of positions, a third of them in the previous shard), then runs every job as its own
process and reads its peak resident memory (VmHWM) as it ends. The band jobs run once; their pairs
are cut into each join_jobs' parts as dedup_bands cuts them. The single job (datasketch's MinHashLSH
holding every kept document, as dedup was until this benchmark; reference_removals below) runs
where --baseline-max allows; its removals must equal the new jobs', and the report must be the same
whatever the join_jobs. With --before (a checkout of 12702bb), the one join job that was runs on the
same copies and pairs. Peak memory per job is projected to 100 million and 1 billion documents
from the measured points. Writes benchmarks/results/dedup_scaling.{json,md}.
"""
import argparse
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
from workflow_scripts.lib.corpus.near_duplicates import exact_copies, greedy_removals  # noqa: E402
from workflow_scripts.lib.corpus.signature_files import SignatureFiles  # noqa: E402

SHARDS, NUM_PERM, THRESHOLD = 20, 128, 0.55


def reference_removals(files, threshold):
    """[(position, kind, original position, similarity)] of these SignatureFiles: dedup as one job,
    visiting positions in order with every kept document's MinHash in datasketch's LSH (its bands
    as lib.corpus.near_duplicates.band_shape chooses them)."""
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


# Runs a module or script, then writes its process's VmHWM (peak resident KiB) to a file. wait4's
# ru_maxrss cannot serve: a child forked from this process starts its maximum at this process's
# size (a job measured 500 MB for `pass` under a 500 MB parent), which set the floor of every
# job's figure in this benchmark's earlier results.
PEAK_WRAPPER = """import atexit, os, runpy, sys
peak_file, target, sys.argv = sys.argv[1], sys.argv[2:], sys.argv[2:]
def record():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    with open(peak_file, "w") as out:
        out.write(peak)
atexit.register(record)
if target[0] == "-m":
    sys.argv = target[1:]
    runpy.run_module(target[1], run_name="__main__", alter_sys=True)
else:
    sys.path.insert(0, os.path.dirname(target[0]))
    runpy.run_path(target[0], run_name="__main__")
"""


def measured(command, log_path, cwd=REPO):
    """(wall seconds, peak resident MiB) of one job (python and its arguments) run as its own process."""
    peak_file = log_path.with_suffix(".peak")
    started = time.time()
    with open(log_path, "w") as log:
        result = subprocess.run([command[0], "-c", PEAK_WRAPPER, str(peak_file), *command[1:]], cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed: {log_path.read_text()[-2000:]}")
    return round(time.time() - started, 1), round(int(peak_file.read_text()) / 1024)


def band_jobs_run(folder, paths, band_jobs):
    """Each dedup_bands job's (name, seconds, MiB), and their pair files, all pairs in one join part."""
    jobs, pairs = [], []
    for group in range(band_jobs):
        pairs.append(folder / f"bands-{group}.npz")
        jobs.append((f"dedup_bands {group}", *measured(
            [sys.executable, "-m", "workflow_scripts.data.dedup_bands", "--signatures", *map(str, paths), "--group",
             str(group), "--band-jobs", str(band_jobs), "--threshold", str(THRESHOLD), "--out", str(pairs[-1]),
             "--stats", str(folder / f"bands-{group}.json")], folder / f"bands-{group}.log")))
    return jobs, pairs


def pairs_in_parts(folder, paths, pairs, parts):
    """[[each band job's pair file of part k] for each part]: the one-part files cut as dedup_bands
    cuts them for `parts` join parts (SignatureFiles.write_pairs_by_part), rather than rerun the
    band jobs."""
    files = SignatureFiles(paths, ["zhwiki"], NUM_PERM)
    by_part = [[folder / f"{path.stem}-{k}.npz" for path in pairs] for k in range(parts)]
    for n, path in enumerate(pairs):
        found = np.load(path)
        earlier, later = (np.searchsorted(files.ids, found[f"{side}_ids"]) for side in ("earlier", "later"))
        files.write_pairs_by_part([outs[n] for outs in by_part], earlier, later, found["similarity"])
    return by_part


def join_run(folder, paths, pairs, join_jobs):
    """Each dedup_exact job's, dedup_join part's and the dedup job's (name, seconds, MiB), the exact
    jobs' files and the report, with the exact keys and the join split among join_jobs jobs."""
    folder = folder / f"join-{join_jobs}"
    folder.mkdir()
    jobs, copies, reports = [], [], []
    for group in range(join_jobs):
        copies.append(folder / f"exact-{group}.npz")
        jobs.append((f"dedup_exact {group} of {join_jobs}", *measured(
            [sys.executable, "-m", "workflow_scripts.data.dedup_exact", "--signatures", *map(str, paths), "--group",
             str(group), "--join-jobs", str(join_jobs), "--out", str(copies[-1]),
             "--stats", str(folder / f"exact-{group}.json")], folder / f"exact-{group}.log")))
    for part, part_pairs in enumerate(pairs_in_parts(folder, paths, pairs, join_jobs)):
        reports.append(folder / f"join-{part}.parquet")
        jobs.append((f"dedup_join {part} of {join_jobs}", *measured(
            [sys.executable, "-m", "workflow_scripts.data.dedup_join", "--signatures", *map(str, paths), "--exact",
             *map(str, copies), "--pairs", *map(str, part_pairs), "--earlier", *map(str, reports[:-1]),
             "--part", str(part), "--report", str(reports[-1]), "--stats", str(folder / f"join-{part}.json")],
            folder / f"join-{part}.log")))
    report = folder / "removed.parquet"
    jobs.append((f"dedup (concatenating {join_jobs})", *measured(
        [sys.executable, "-m", "workflow_scripts.data.dedup", "--exact", *map(str, copies),
         "--parts", *map(str, reports),
         "--part-stats", *(str(folder / f"join-{part}.json") for part in range(join_jobs)), "--threshold",
         str(THRESHOLD), "--report", str(report), "--stats", str(folder / "stats.json")], folder / "dedup.log")))
    return jobs, copies, report


def join_before(folder, paths, copies, pairs, before):
    """(name, seconds, MiB) of the join as it was, one job, run from `before` (a checkout of its
    commit) on the same copies and pairs, and the ids it removed."""
    report = folder / "removed-before.parquet"
    job = ("dedup (one join job, before)", *measured(
        [sys.executable, "-m", "workflow_scripts.data.dedup", "--signatures", *map(str, paths), "--exact",
         *map(str, copies), "--pairs", *map(str, pairs), "--threshold", str(THRESHOLD), "--report", str(report),
         "--stats", str(folder / "stats-before.json")], folder / "dedup-before.log", cwd=before))
    return job, np.sort(pq.read_table(report, columns=["id"])["id"].to_numpy())


def loop_removals(count, copies, originals, earlier, later, similarity):
    """What greedy_removals decides, as dedup's join decided it before the rounds: one Python
    iteration per document with an earlier copy or pair, in visiting order. [(document, exact,
    original, similarity)]."""
    first = np.arange(count)
    first[copies] = originals
    by_later = np.lexsort((earlier, later))
    earlier, later, similarity = earlier[by_later], later[by_later], similarity[by_later]
    visited, starts = np.unique(later, return_index=True)
    pairs_of = dict(zip(visited.tolist(), zip(starts.tolist(), np.r_[starts[1:], len(later)].tolist())))
    kept = np.ones(count, dtype=bool)
    fate, removed = {}, []
    for document in np.union1d(visited, copies).tolist():
        original = int(first[document])
        if original != document:
            entry = (document, *fate.get(original, (True, original, 1.0)))
        elif document in pairs_of:
            start, end = pairs_of[document]
            candidates = kept[earlier[start:end]]
            if not candidates.any():
                continue
            scores = similarity[start:end][candidates]
            best = np.lexsort((earlier[start:end][candidates], -scores))[0]
            entry = (document, False, int(earlier[start:end][candidates][best]), float(scores[best]))
            fate[document] = entry[1:]
        else:
            continue
        kept[document] = False
        removed.append(entry)
    return removed


def greedy_seconds(folder, paths, band_jobs):
    """Seconds of the greedy pass alone on this size's copies and pairs (numbers in visiting
    order, as the join makes them): the loop it was, and the rounds it is; both must agree."""
    files = SignatureFiles(paths, ["zhwiki"], NUM_PERM)
    copies, originals = exact_copies(files.in_visiting_order("exact"))
    pairs = [np.load(folder / f"bands-{group}.npz") for group in range(band_jobs)]  # one join part
    earlier, later = (np.searchsorted(files.ids, np.concatenate([p[f"{side}_ids"] for p in pairs]))
                      for side in ("earlier", "later"))
    similarity = np.concatenate([p["similarity"] for p in pairs])
    started = time.perf_counter()
    rounds = greedy_removals(len(files), copies, originals, earlier, later, similarity)
    rounds_seconds = time.perf_counter() - started
    started = time.perf_counter()
    loop = loop_removals(len(files), copies, originals, earlier, later, similarity)
    loop_seconds = time.perf_counter() - started
    if list(zip(*(a.tolist() for a in rounds))) != loop:
        raise SystemExit("the greedy rounds and the loop disagree")
    return {"loop (before)": round(loop_seconds, 2), "rounds (after)": round(rounds_seconds, 2)}


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


def measure(documents, band_jobs, join_jobs, workdir, baseline_max, before):
    folder = workdir / f"{documents}"
    paths = write_shards(folder / "signatures", documents, seed=documents)
    jobs, pairs = band_jobs_run(folder, paths, band_jobs)
    removed_by_jobs = {}
    for count in join_jobs:
        more, copies, report = join_run(folder, paths, pairs, count)
        jobs += more
        removed_by_jobs[count] = pq.read_table(report).to_pylist()
        if before and count == 1:
            job, removed_before = join_before(folder, paths, copies, pairs, before)
            jobs.append(job)
    removed = np.sort([r["id"] for r in removed_by_jobs[join_jobs[0]]])
    row = {"documents": documents, "removed": len(removed), "jobs": [
        {"job": name, "seconds": s, "peak_mib": m} for name, s, m in jobs],
        "identical_whatever_the_join_jobs": all(r == removed_by_jobs[join_jobs[0]] for r in removed_by_jobs.values()),
        "greedy_seconds": greedy_seconds(folder, paths, band_jobs)}
    if before:
        row["identical_to_join_before"] = bool(np.array_equal(removed_before, removed))
    if documents <= baseline_max:
        seconds, mib, reference = baseline(paths, folder)
        row["single_job"] = {"seconds": seconds, "peak_mib": mib}
        row["identical_to_single_job"] = bool(np.array_equal(np.sort(reference), removed))
    print(row, flush=True)
    return row


def projection(rows, join_jobs, sizes=(100_000_000, 1_000_000_000)):
    """Per-job peak MiB projected to larger corpora by a least-squares line through the measured
    points: dedup_exact and dedup_join against documents per job, dedup and dedup_bands against
    documents."""
    def fitted(points):
        x, y = np.array(points, dtype=float).T
        slope, intercept = np.polyfit(x, y, 1)
        return lambda n: round(intercept + slope * n)
    def per_job(name):
        return fitted([(row["documents"] / int(job["job"].split()[-1]), job["peak_mib"])
                       for row in rows for job in row["jobs"] if job["job"].startswith(name)])
    exact, join = per_job("dedup_exact"), per_job("dedup_join")
    concatenating = fitted([(row["documents"], job["peak_mib"]) for row in rows for job in row["jobs"]
                            if job["job"].startswith("dedup (concatenating")])
    bands = fitted([(row["documents"], job["peak_mib"]) for row in rows for job in row["jobs"]
                    if job["job"].startswith("dedup_bands")])
    return [{"documents": n, **{f"dedup_exact of {j}": exact(n / j) for j in join_jobs},
             **{f"dedup_join of {j}": join(n / j) for j in join_jobs}, "dedup": concatenating(n),
             "dedup_bands": bands(n)} for n in sizes]


def markdown(report):
    lines = [f"# Dedup's jobs at scale ({report['machine']})", "", f"`{report['command']}`", "",
             f"Synthetic signatures ({SHARDS} shards, {NUM_PERM} permutations, threshold {THRESHOLD}); each job a "
             "process of its own, run one after another; peak resident memory: the process's VmHWM as it ends.", "",
             "| documents | job | wall s | peak MiB | MiB per 1,000 documents |", "|---:|---|---:|---:|---:|"]
    for row in report["rows"]:
        jobs = row["jobs"] + ([{"job": "single job (before)", **row["single_job"]}] if "single_job" in row else [])
        for job in jobs:
            lines.append(f"| {row['documents']:,} | {job['job']} | {job['seconds']} | {job['peak_mib']:,} | "
                         f"{job['peak_mib'] * 1000 / row['documents']:.2f} |")
    lines.append("")
    for row in report["rows"]:
        same = row.get("identical_to_single_job")
        greedy = row["greedy_seconds"]
        lines.append(f"- {row['documents']:,} documents: {row['removed']:,} removed; "
                     + ("the same documents as the single job" if same else
                        "the single job differs!" if same is False else "single job not run (see --baseline-max)")
                     + ("; the same report whatever the join jobs" if row["identical_whatever_the_join_jobs"] else
                        "; the join jobs DIFFER")
                     + {True: "; the same documents as the join before", False: "; the join before DIFFERS",
                        None: ""}[row.get("identical_to_join_before")]
                     + f". The greedy pass alone: {greedy['loop (before)']} s as a loop, "
                       f"{greedy['rounds (after)']} s in rounds.")
    names = [key for key in report["projection"][0] if key != "documents"]
    lines += ["", "Peak MiB per job projected from these points (a least-squares line: dedup_exact and dedup_join "
              "against their share of the documents, the others against the documents). Every job that reads "
              "the shards holds one shard's arrays at a time (dedup_join: its ids, sources and titles), and here "
              f"the {SHARDS} shards grow with the corpus, so the projection counts that floor as growth too; a "
              "corpus split into more shards (extract.shards) keeps it at one shard's size:", "",
              "| documents | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for row in report["projection"]:
        lines.append(f"| {row['documents']:,} | " + " | ".join(f"{row[name]:,}" for name in names) + " |")
    return "\n".join(lines) + "\n"


def main():
    if sys.argv[1:2] == ["--reference"]:
        return run_reference(Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, nargs="+", default=[1_400_000, 10_000_000])
    ap.add_argument("--band-jobs", type=int, default=4)
    ap.add_argument("--join-jobs", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--baseline-max", type=int, default=1_400_000,
                    help="largest size the single job runs at (it needs about 5 KB per document)")
    ap.add_argument("--before", type=Path, help="a checkout of the commit before the join parts (12702bb), whose "
                    "one join job runs on the same copies and pairs")
    ap.add_argument("--workdir", type=Path, required=True, help="a folder that does not exist yet")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True)
    rows = [measure(n, args.band_jobs, args.join_jobs, args.workdir, args.baseline_max, args.before)
            for n in args.documents]
    report = {**provenance(), "rows": rows, "projection": projection(rows, args.join_jobs)}
    save("dedup_scaling", report, markdown(report))


if __name__ == "__main__":
    main()

"""Extraction speed: this workflow's extract stage against the stock `wikiextractor` command line
and against the limit that reading the dump sets.

    python benchmarks/extract_speed.py --mb 200 --cores 2 --before /tmp/extract-before

Builds (once) a zhwiki-format multistream dump of --mb MB of XML from the real novels with
../shared/tools/make_bench_dump.py, then times, on the same file and in one run:
  * the limit: plain decompression of the same bz2 streams, split into N contiguous runs decompressed
            by N processes at once (libbz2, as the stage reads them; nothing parsed or written);
  * stock:  `wikiextractor --processes N --json` (its default, which first scans the whole dump
            for templates) and with `--no-templates` (no template expansion, as our stage does);
  * ours:   `python -m workflow_scripts.data.extract` over S shards, N at a time, as
            `snakemake --cores N` runs the extract jobs (one process per shard, no Python pool);
  * before: with --before, the same stage from a checkout of an earlier commit, 2 shards; every
            run of ours must write the same documents as it (`same_output_as_before`).
`share_of_bz2_limit` is the limit's time over a run's. Writes benchmarks/results/extract_speed.{json,md};
throughput is compressed dump MB per second.
"""
import argparse
import bz2
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from results_io import RESULTS, provenance, save

REPO = RESULTS.parents[1]
sys.path.insert(0, str(REPO))
from workflow_scripts.lib.corpus.multistream_index import shard_ranges, stream_offsets  # noqa: E402

MAKE_DUMP = REPO.parent / "shared" / "tools" / "make_bench_dump.py"


def build_dump(work: Path, mb):
    out = work / f"dump-{mb}mb"
    dump = next(out.glob("*-multistream.xml.bz2"), None)
    if dump is None:
        subprocess.run([sys.executable, str(MAKE_DUMP), str(out), "--mb", str(mb)], check=True)
        dump = next(out.glob("*-multistream.xml.bz2"))
    return dump, next(out.glob("*-multistream-index.txt.bz2"))


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run_stock(dump, out: Path, cores, templates):
    cmd = ["wikiextractor", "--processes", str(cores), "--json", "-q", "-o", str(out), str(dump)]
    if not templates:
        cmd.insert(1, "--no-templates")
    seconds, _ = timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
    docs = sum(1 for path in out.rglob("wiki_*") for _ in path.open(encoding="utf-8"))
    return seconds, docs


def decompress_streams(dump, ranges):
    with open(dump, "rb") as fh:
        for start, end in ranges:
            fh.seek(start)
            bz2.decompress(fh.read(end - start))


def run_bz2_limit(dump, index, out: Path, cores):
    offsets = stream_offsets(index, dump.stat().st_size)
    with concurrent.futures.ProcessPoolExecutor(cores) as pool:
        seconds, _ = timed(lambda: list(pool.map(decompress_streams, [dump] * cores,
                                                 [shard_ranges(offsets, k, cores) for k in range(cores)])))
    return seconds, None


def run_ours(dump, index, out: Path, cores, shards, code=REPO):
    def one(shard):
        subprocess.run([sys.executable, "-m", "workflow_scripts.data.extract", "--dump", str(dump),
                        "--index", str(index),
                        "--shard", str(shard), "--shards", str(shards), "--out", str(out / f"{shard:03d}.parquet"),
                        "--stats", str(out / f"{shard:03d}.json"), "--log", str(out / f"{shard:03d}.log")],
                       cwd=code, check=True)

    out.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        seconds, _ = timed(lambda: list(pool.map(one, range(shards))))
    docs = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet"))
    return seconds, docs


def documents(out: Path):
    """Every document a run of the stage wrote, in page order."""
    return sorted((row for path in out.glob("*.parquet") for row in pq.read_table(path).to_pylist()),
                  key=lambda row: row["id"])


def markdown(report):
    mb = report["dump_mb_compressed"]
    lines = [f"# Extraction speed ({report['dump_mb_xml']} MB XML, {mb:.1f} MB bz2, {report['pages']} pages, "
             f"{report['cores']} cores)", "", f"`{report['command']}` on {report['machine']}", "",
             "| run | seconds | MB/s (bz2) | share of the bz2 limit | documents | same output as before | vs stock "
             "| vs stock --no-templates |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for row in report["runs"]:
        same = {True: "yes", False: "**no**", None: ""}[row.get("same_output_as_before")]
        documents_cell = "—" if row["documents"] is None else f"{row['documents']:,}"
        lines.append(f"| {row['run']} | {row['seconds']:.1f} | {mb / row['seconds']:.2f} | "
                     f"{row['share_of_bz2_limit']:.0%} | {documents_cell} | {same} | "
                     f"{row['speedup_vs_stock']:.2f}× | {row['speedup_vs_no_templates']:.2f}× |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200, help="uncompressed XML size of the benchmark dump")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--shards", type=int, nargs="+", default=[2, 4], help="shard counts to time")
    ap.add_argument("--before", type=Path, help="a checkout of an earlier commit, whose extract stage (2 shards) "
                    "ours must equal")
    ap.add_argument("--work", type=Path, default=Path("/tmp/zhwiki-llm-bench"))
    args = ap.parse_args()
    dump, index = build_dump(args.work, args.mb)
    runs = [("plain bz2 decompression (the limit)", lambda o: run_bz2_limit(dump, index, o, args.cores)),
            ("stock wikiextractor (templates)", lambda o: run_stock(dump, o, args.cores, True)),
            ("stock wikiextractor --no-templates", lambda o: run_stock(dump, o, args.cores, False))]
    if args.before:
        runs.append(("zhwiki-llm extract before, 2 shards", lambda o: run_ours(dump, index, o, args.cores, 2,
                                                                                args.before)))
    runs += [(f"zhwiki-llm extract, {s} shards", lambda o, s=s: run_ours(dump, index, o, args.cores, s))
             for s in args.shards]
    rows, outputs = [], {}
    for n, (name, fn) in enumerate(runs):
        outputs[name] = args.work / f"run-{os.getpid()}-{n}"
        seconds, docs = fn(outputs[name])
        rows.append({"run": name, "seconds": round(seconds, 2), "documents": docs})
        print(f"{name}: {seconds:.1f} s, {docs} documents", flush=True)
    limit, stock, no_templates = rows[:3]
    before = documents(outputs[runs[3][0]]) if args.before else None
    for row in rows:
        row["share_of_bz2_limit"] = round(limit["seconds"] / row["seconds"], 3)
        row["speedup_vs_stock"] = round(stock["seconds"] / row["seconds"], 3)
        row["speedup_vs_no_templates"] = round(no_templates["seconds"] / row["seconds"], 3)
        if before is not None and row["run"].startswith("zhwiki-llm extract,"):
            row["same_output_as_before"] = documents(outputs[row["run"]]) == before
    pages = sum(1 for _ in bz2.open(index, "rt"))
    report = {"dump_mb_xml": args.mb, "dump_mb_compressed": dump.stat().st_size / 1e6, "pages": pages,
              "cores": args.cores, **provenance(), "runs": rows}
    save("extract_speed", report, markdown(report))


if __name__ == "__main__":
    main()

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
The runs take turns in --repeats rounds (the order rotating from round to round), so that a slow
spell of a shared machine falls on all of them; each run's time is the median over the rounds,
with an interval (results_io.median_interval), and `share_of_bz2_limit` and the speedups are
medians of the ratios within each round, with theirs. Writes benchmarks/results/extract_speed.{json,md};
throughput is compressed dump MB per second.
"""
import argparse
import bz2
import concurrent.futures
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from results_io import RESULTS, median_interval, module_in, paired_ratio, provenance, rotated_rounds, save

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
        subprocess.run([sys.executable, "-m", module_in(code, "data.extract"), "--dump", str(dump),
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
             f"{report['rounds']} rounds; medians, with their intervals of "
             f"{report['runs'][0]['seconds']['coverage']:.1%} coverage in brackets.", "",
             "| run | seconds | MB/s (bz2) | share of the bz2 limit | documents | same output as before | vs stock "
             "| vs stock --no-templates |", "|---|---:|---:|---:|---:|---|---:|---:|"]

    def ratio(value, percent=False):
        low, high = value["interval"]
        return (f"{value['median']:.0%} ({low:.0%}–{high:.0%})" if percent
                else f"{value['median']:.2f}× ({low:.2f}–{high:.2f})")
    for row in report["runs"]:
        same = {True: "yes", False: "**no**", None: ""}[row.get("same_output_as_before")]
        documents_cell = "—" if row["documents"] is None else f"{row['documents']:,}"
        seconds = row["seconds"]
        lines.append(f"| {row['run']} | {seconds['median']:.1f} ({seconds['interval'][0]:.1f}–"
                     f"{seconds['interval'][1]:.1f}) | {mb / seconds['median']:.2f} | "
                     f"{ratio(row['share_of_bz2_limit'], percent=True)} | {documents_cell} | {same} | "
                     f"{ratio(row['speedup_vs_stock'])} | {ratio(row['speedup_vs_no_templates'])} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200, help="uncompressed XML size of the benchmark dump")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--shards", type=int, nargs="+", default=[2, 4], help="shard counts to time")
    ap.add_argument("--before", type=Path, help="a checkout of an earlier commit, whose extract stage (2 shards) "
                    "ours must equal")
    ap.add_argument("--work", type=Path, default=Path("/tmp/zhwiki-llm-bench"))
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
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
    seconds, counts, same = {name: [] for name, _ in runs}, {}, {}
    for round_number, in_order in rotated_rounds(runs, args.repeats):
        outputs = {}
        for n, (name, fn) in enumerate(in_order):
            outputs[name] = args.work / f"run-{os.getpid()}-{n}"
            took, counts[name] = fn(outputs[name])
            seconds[name].append(took)
            print(f"round {round_number}, {name}: {took:.1f} s, {counts[name]} documents", flush=True)
        if args.before and not same:  # every run of ours writes what the stage before wrote
            before = documents(outputs[runs[3][0]])
            same = {name: documents(outputs[name]) == before for name in outputs
                    if name.startswith("zhwiki-llm extract,")}
        for folder in outputs.values():
            shutil.rmtree(folder, ignore_errors=True)
    limit, stock, no_templates = (seconds[name] for name, _ in runs[:3])
    rows = [{"run": name, "seconds": {**median_interval(seconds[name]), "every_round": seconds[name]},
             "documents": counts[name], "share_of_bz2_limit": paired_ratio(limit, seconds[name]),
             "speedup_vs_stock": paired_ratio(stock, seconds[name]),
             "speedup_vs_no_templates": paired_ratio(no_templates, seconds[name]),
             **({"same_output_as_before": same[name]} if name in same else {})} for name, _ in runs]
    pages = sum(1 for _ in bz2.open(index, "rt"))
    report = {"dump_mb_xml": args.mb, "dump_mb_compressed": dump.stat().st_size / 1e6, "pages": pages,
              "cores": args.cores, **provenance(), "rounds": args.repeats, "runs": rows}
    save("extract_speed", report, markdown(report))


if __name__ == "__main__":
    main()

"""The dedup report and its counts: the dedup_join parts' reports, concatenated in part order.

    python -m workflow_scripts.data.dedup --exact dedup/exact/*.npz --parts dedup/join/0.parquet \
        dedup/join/1.parquet --part-stats dedup/join/0.json dedup/join/1.json --threshold 0.55 \
        --num-perm 128 --report dedup/removed.parquet --stats dedup/stats.json

The report lists each removed document (in visiting order: corpus by corpus in config order, each
by id) with the one it duplicated; the split stage drops them. The counts per corpus take its
documents from the dedup_exact jobs and its removals from the parts. Memory: one part at a time.
"""
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from workflow_scripts.lib.atomic_files import atomic_path, read_json, write_json
from workflow_scripts.lib.corpus.dedup_report import REPORT_SCHEMA
from workflow_scripts.lib.corpus.documents import open_parquet
from workflow_scripts.lib.corpus.near_duplicates import band_shape
from workflow_scripts.lib.corpus.signature_files import load_npz
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli


def add_arguments(ap):
    ap.add_argument("--exact", type=Path, nargs="+", required=True, help="every dedup_exact job's .npz")
    ap.add_argument("--parts", type=Path, nargs="+", required=True, help="every dedup_join part's report, in order")
    ap.add_argument("--part-stats", type=Path, nargs="+", required=True, help="every dedup_join part's stats")
    add_settings(ap, "dedup", "threshold", "num_perm")
    ap.add_argument("--report", type=Path, required=True, help="Parquet: each removed document and its original")
    ap.add_argument("--stats", type=Path, required=True)


def documents_per_corpus(paths):
    """{corpus: documents} over the dedup_exact jobs, each holding its group's."""
    counts = Counter()
    for path in paths:
        found = load_npz(path)
        counts.update(dict(zip(found["corpora"].tolist(), found["corpus_documents"].tolist())))
    return counts


def counts_by_source(documents, parts):
    """Documents in, duplicates removed and documents out for each corpus."""
    removed = Counter()
    for stats in parts:
        for source, kinds in stats["removed_by_source"].items():
            removed[source, "exact"] += kinds["exact"]
            removed[source, "near"] += kinds["near"]
    counts = {}
    for name, total in sorted(documents.items()):
        entry = {"documents_in": total, "exact_duplicates": removed[name, "exact"],
                 "near_duplicates": removed[name, "near"]}
        counts[name] = {**entry, "documents_out": total - entry["exact_duplicates"] - entry["near_duplicates"]}
    return counts


def part_stats(path):
    try:
        return read_json(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a dedup_join stats file ({err}); rerun dedup_join") from None


def concatenated(parts, out):
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, REPORT_SCHEMA) as writer:
        for path in parts:
            table = open_parquet(path, "rerun dedup_join").read()
            if not table.schema.equals(REPORT_SCHEMA):
                raise StageError(f"{path}: not a dedup_join report (columns {table.schema.names}); rerun dedup_join")
            writer.write_table(table)


def run(args, progress_stream):
    documents = documents_per_corpus(args.exact)
    concatenated(args.parts, args.report)
    parts = [part_stats(path) for path in args.part_stats]
    by_source = counts_by_source(documents, parts)
    exact = sum(entry["exact_duplicates"] for entry in by_source.values())
    near = sum(entry["near_duplicates"] for entry in by_source.values())
    bands, band_rows = band_shape(args.threshold, args.num_perm)
    total = sum(documents.values())
    stats = {"documents_in": total, "exact_duplicates": exact, "near_duplicates": near,
             "documents_out": total - exact - near, "threshold": args.threshold, "num_perm": args.num_perm,
             "lsh_bands": bands, "lsh_rows": band_rows, "band_jobs": parts[0]["band_jobs"],
             "join_jobs": len(args.parts), "by_source": by_source}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup", __doc__, add_arguments, run)

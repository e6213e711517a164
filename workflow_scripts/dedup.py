"""Remove exact and near-duplicate documents across all shards and corpora: the join of dedup_bands' pairs.

    python -m workflow_scripts.dedup --signatures minhash/*.npz --pairs dedup/bands/*.npz \
        --threshold 0.55 --num-perm 128 --corpus-order zhwiki textbook \
        --report dedup/removed.parquet --stats dedup/stats.json

Documents are visited corpus by corpus in --corpus-order (zhwiki first, then the extra corpora as
config lists them), each in ascending id, so the outcome does not depend on the number of shards
or their order, and of two copies the one in the corpus listed first is kept: a document whose
whitespace-free text hashes like an earlier one's is an exact duplicate; otherwise one whose
estimated Jaccard similarity with an earlier kept document reaches --threshold (the pairs that
dedup_bands found in LSH buckets) is a near duplicate of the most similar such document
(lib.near_duplicates.greedy_removals). The report lists each removed document with the one it
duplicated; the split stage drops them. Memory: the exact keys, visiting positions and pairs, not
the signatures (1.5 GB at 10 million documents; benchmarks/results/dedup_scaling.md).
"""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.atomic_files import atomic_path, write_json
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.near_duplicates import band_shape, greedy_removals
from workflow_scripts.lib.signature_files import SignatureFiles, load_npz

REPORT_SCHEMA = pa.schema([("id", pa.int64()), ("title", pa.string()), ("source", pa.string()),
                           ("kind", pa.string()), ("duplicate_of", pa.int64()), ("duplicate_of_title", pa.string()),
                           ("duplicate_of_source", pa.string()), ("similarity", pa.float64())])


def counts_by_source(sources, rows):
    """Documents in, duplicates removed and documents out for each corpus."""
    names, totals = np.unique(sources, return_counts=True)
    counts = {name: {"documents_in": int(total), "exact_duplicates": 0, "near_duplicates": 0}
              for name, total in zip(names.tolist(), totals.tolist())}
    for row in rows:
        counts[row["source"]][f"{row['kind']}_duplicates"] += 1
    for entry in counts.values():
        entry["documents_out"] = entry["documents_in"] - entry["exact_duplicates"] - entry["near_duplicates"]
    return counts


def band_pairs(paths, documents):
    """(earlier, later, similarity) of every band job's pairs; a pair two jobs found is there twice,
    which greedy_removals does not mind."""
    parts = []
    for path in paths:
        pairs = load_npz(path)
        if int(pairs["documents"]) != documents:
            raise StageError(f"{path}: pairs of {int(pairs['documents'])} documents, but the signatures hold "
                             f"{documents}; rerun dedup_bands")
        parts.append((pairs["earlier"], pairs["later"], pairs["similarity"]))
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def report_rows(files, removed):
    """The report's rows: each removed document and its original, by id, title and corpus."""
    named = np.unique([p for position, _, original, _ in removed for p in (position, original)]).astype(np.int64)
    ids, titles, sources = (dict(zip(named.tolist(), files.gather(key, named).tolist()))
                            for key in ("ids", "titles", "sources"))
    return [{"id": ids[p], "title": titles[p], "source": sources[p], "kind": kind, "duplicate_of": ids[o],
             "duplicate_of_title": titles[o], "duplicate_of_source": sources[o], "similarity": round(sim, 4)}
            for p, kind, o, sim in removed]


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--pairs", type=Path, nargs="+", required=True, help="every dedup_bands job's .npz")
    add_settings(ap, "dedup", "threshold", "num_perm")
    ap.add_argument("--corpus-order", nargs="*", default=["zhwiki"], help="whose copy is kept: the first corpus's")
    ap.add_argument("--report", type=Path, required=True, help="Parquet: each removed document and its original")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    files = SignatureFiles(args.signatures, args.corpus_order, args.num_perm)
    if len(files) == 0:
        raise StageError("clean left no documents in any shard (see results/clean/*.json for what each filter "
                         "removed); loosen the clean: thresholds in config.yaml")
    exact = files.in_visiting_order("exact")
    removed = greedy_removals(exact, *band_pairs(args.pairs, len(files)))
    rows = report_rows(files, removed)
    with atomic_path(args.report) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=REPORT_SCHEMA), tmp)
    exact_count = sum(r["kind"] == "exact" for r in rows)
    bands, band_rows = band_shape(args.threshold, args.num_perm)
    stats = {"documents_in": len(files), "exact_duplicates": exact_count,
             "near_duplicates": len(rows) - exact_count, "documents_out": len(files) - len(rows),
             "threshold": args.threshold, "num_perm": args.num_perm, "lsh_bands": bands, "lsh_rows": band_rows,
             "band_jobs": len(args.pairs),
             "by_source": counts_by_source(files.in_visiting_order("sources"), rows)}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup", __doc__, add_arguments, run)

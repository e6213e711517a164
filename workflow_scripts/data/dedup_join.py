"""Decide one join part's duplicates: the documents of a run of the visiting order, from
dedup_exact's copies and dedup_bands' pairs (input to dedup, which concatenates the parts).

    python -m workflow_scripts.data.dedup_join --signatures minhash/*.npz --exact dedup/exact/*.npz \
        --pairs dedup/bands/*/1.npz --earlier dedup/join/0.parquet --part 1 \
        --corpus-order zhwiki textbook --report dedup/join/1.parquet --stats dedup/join/1.json

Documents are visited corpus by corpus in --corpus-order (zhwiki first, then the extra corpora as
config lists them), each in ascending id, so the outcome does not depend on the number of shards
or their order, and of two copies the one in the corpus listed first is kept: a document whose
whitespace-free text hashes like an earlier one's is an exact duplicate; otherwise one whose
estimated Jaccard similarity with an earlier kept document reaches the threshold (the pairs that
dedup_bands found in LSH buckets) is a near duplicate of the most similar such document
(lib.corpus.near_duplicates.greedy_removals).

Part K holds the copies and the pairs whose later document falls in its run; their earlier
documents lie in this run or before it, so the reports of parts 0 to K-1 (--earlier) settle
those: removed if listed there, kept otherwise. Part K therefore runs after them, and holds only
its share of the copies and pairs plus the rows of the earlier reports that name its documents,
and reads titles one shard at a time: at 10 million documents one part took 501 MB, each of 8 at
most 391 MB, of which about 290 MB is the interpreter, its libraries and one shard of 500,000
documents (benchmarks/results/dedup_scaling.md). The removals are those of one job
(tests/test_dedup.py).
"""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.lib.atomic_files import atomic_path, write_json
from workflow_scripts.lib.corpus.dedup_report import REPORT_SCHEMA, removed_by_source
from workflow_scripts.lib.corpus.documents import open_parquet
from workflow_scripts.lib.corpus.near_duplicates import KEPT, REMOVED, UNDECIDED, greedy_removals
from workflow_scripts.lib.corpus.signature_files import (NamedDocuments, corpus_ranks, join_parts, load_npz,
                                                         shard_documents)
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli

# Earlier reports are read this many rows at a time, keeping only the rows that name this part's
# documents: the last of 8 parts at 10 million documents read 430,000 rows.
BATCH_ROWS = 65536
EARLIER_COLUMNS = ["id", "source", "kind", "duplicate_of", "duplicate_of_title", "duplicate_of_source",
                   "similarity"]


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--exact", type=Path, nargs="+", required=True, help="every dedup_exact job's .npz")
    ap.add_argument("--pairs", type=Path, nargs="+", required=True, help="every dedup_bands job's .npz of this part")
    ap.add_argument("--earlier", type=Path, nargs="*", default=[], help="the reports of the parts before this one")
    ap.add_argument("--part", type=int, required=True, help="this job's part, from 0")
    ap.add_argument("--corpus-order", nargs="*", default=["zhwiki"], help="whose copy is kept: the first corpus's")
    ap.add_argument("--report", type=Path, required=True, help="Parquet: each removed document and its original")
    ap.add_argument("--stats", type=Path, required=True)


def checked(path, documents, rerun):
    found = load_npz(path)
    if int(found["documents"]) != documents:
        raise StageError(f"{path}: made from {int(found['documents'])} documents, but the signatures hold "
                         f"{documents}; rerun {rerun}")
    return found


def part_pairs(paths, documents):
    """(earlier ranks, earlier ids, later ranks, later ids, similarity) of this part's pairs, and
    where every part starts."""
    files = [checked(path, documents, "dedup_bands") for path in paths]
    fields = ["earlier_ranks", "earlier_ids", "later_ranks", "later_ids", "similarity"]
    return [np.concatenate([f[field] for f in files]) for field in fields], \
        (files[0]["part_start_ranks"], files[0]["part_start_ids"])


def part_copies(paths, documents, starts, part):
    """(copy ranks, copy ids, original ranks, original ids) of the copies in this part, one
    dedup_exact file at a time."""
    kept = []
    for path in paths:
        found = checked(path, documents, "dedup_exact")
        mine = join_parts(found["copy_ranks"], found["copy_ids"], *starts) == part
        kept.append([found[field][mine] for field in ("copy_ranks", "copy_ids", "original_ranks", "original_ids")])
    return [np.concatenate(arrays) for arrays in zip(*kept)]


def settled_by_earlier_parts(paths, corpus_order, named, starts, part):
    """The int8 fate of each named document (KEPT or REMOVED where an earlier part decided it,
    UNDECIDED in this part), and the earlier reports' rows of the removed ones with their numbers."""
    settled = np.where(join_parts(named.ranks, named.ids, *starts) < part, KEPT, UNDECIDED).astype(np.int8)
    rows, numbers = [], []
    for path in paths:
        for batch in open_parquet(path, "rerun dedup_join").iter_batches(BATCH_ROWS, columns=EARLIER_COLUMNS):
            found = named.index(corpus_ranks(batch["source"].to_numpy(zero_copy_only=False), corpus_order),
                                batch["id"].to_numpy())
            rows.append(pa.Table.from_batches([batch.filter(found >= 0)]))
            numbers.append(found[found >= 0])
    numbers = np.concatenate([np.empty(0, np.int64), *numbers])
    settled[numbers] = REMOVED
    return settled, numbers, rows


def titles_and_sources(paths, corpus_order, named):
    """The title and corpus of each named document, reading one shard at a time."""
    titles, sources = np.empty(len(named), dtype=object), np.empty(len(named), dtype=object)
    for shard_sources, ranks, ids, shard_titles in shard_documents(paths, corpus_order, "titles"):
        numbers = named.index(ranks, ids)
        found = numbers >= 0
        titles[numbers[found]] = shard_titles[found].tolist()
        sources[numbers[found]] = shard_sources[found].tolist()
    return titles, sources


def report_columns(named, titles, sources, removed, exact, original, similarity):
    return {"id": named.ids[removed], "title": titles[removed], "source": sources[removed],
            "kind": np.where(exact, "exact", "near").astype(object), "duplicate_of": named.ids[original],
            "duplicate_of_title": titles[original], "duplicate_of_source": sources[original],
            "similarity": np.round(similarity, 4)}


def inherit_originals(columns, original, count, settled_numbers, settled_rows):
    """A copy whose original an earlier part removed (as a near copy) is what that original is, and
    points where its row points, as in one job (lib.corpus.near_duplicates.greedy_removals); how many.
    original: each removed document's original by number, of `count` named documents."""
    if not len(settled_numbers):
        return 0
    inherited = pa.concat_tables(settled_rows)
    row_of = np.full(count, -1)
    row_of[settled_numbers] = np.arange(len(settled_numbers))
    rows = row_of[original]
    hit = rows >= 0
    for field in EARLIER_COLUMNS[2:]:
        columns[field][hit] = inherited[field].to_numpy(zero_copy_only=False)[rows[hit]]
    return int(np.count_nonzero(hit))


def run(args, progress_stream):
    documents = int(load_npz(args.exact[0])["documents"])
    if documents == 0:
        raise StageError("clean left no documents in any shard (see results/clean/*.json for what each filter "
                         "removed); loosen the clean: thresholds in config.yaml")
    (earlier_ranks, earlier_ids, later_ranks, later_ids, similarity), starts = part_pairs(args.pairs, documents)
    if not 0 <= args.part < len(starts[0]) or len(args.earlier) != args.part:
        raise StageError(f"--part {args.part} with {len(args.earlier)} earlier reports, but the pairs were cut "
                         f"into {len(starts[0])} parts: rerun dedup_bands with as many --out files as join parts")
    copy_ranks, copy_ids, original_ranks, original_ids = part_copies(args.exact, documents, starts, args.part)
    named = NamedDocuments(np.concatenate([copy_ranks, original_ranks, earlier_ranks, later_ranks]),
                           np.concatenate([copy_ids, original_ids, earlier_ids, later_ids]))
    settled, settled_numbers, settled_rows = settled_by_earlier_parts(args.earlier, args.corpus_order, named, starts,
                                                                      args.part)
    removed, exact, original, similarity = greedy_removals(
        len(named), named.index(copy_ranks, copy_ids), named.index(original_ranks, original_ids),
        named.index(earlier_ranks, earlier_ids), named.index(later_ranks, later_ids), similarity, settled)
    titles, sources = titles_and_sources(args.signatures, args.corpus_order, named)
    columns = report_columns(named, titles, sources, removed, exact, original, similarity)
    inherited = inherit_originals(columns, original, len(named), settled_numbers, settled_rows)
    with atomic_path(args.report) as tmp:
        pq.write_table(pa.table(columns, schema=REPORT_SCHEMA), tmp)
    stats = {"part": args.part, "parts": len(starts[0]), "band_jobs": len(args.pairs), "documents": documents,
             "pairs": len(later_ids), "copies": len(copy_ids),
             "settled_by_earlier_parts": int(np.count_nonzero(settled != UNDECIDED)),
             "copies_of_documents_removed_by_earlier_parts": inherited,
             "removed_by_source": removed_by_source(columns["source"], columns["kind"] == "exact")}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup_join", __doc__, add_arguments, run)

"""Remove exact and near-duplicate documents across all shards and corpora: the join of
dedup_exact's copies and dedup_bands' pairs.

    python -m workflow_scripts.dedup --signatures minhash/*.npz --exact dedup/exact/*.npz \
        --pairs dedup/bands/*.npz --threshold 0.55 --num-perm 128 --corpus-order zhwiki textbook \
        --report dedup/removed.parquet --stats dedup/stats.json

Documents are visited corpus by corpus in --corpus-order (zhwiki first, then the extra corpora as
config lists them), each in ascending id, so the outcome does not depend on the number of shards
or their order, and of two copies the one in the corpus listed first is kept: a document whose
whitespace-free text hashes like an earlier one's is an exact duplicate; otherwise one whose
estimated Jaccard similarity with an earlier kept document reaches --threshold (the pairs that
dedup_bands found in LSH buckets) is a near duplicate of the most similar such document
(lib.near_duplicates.greedy_removals). The report lists each removed document with the one it
duplicated; the split stage drops them. Memory: the copies and the pairs only, never an array over
every document (468 MB at 10 million documents with 5 % duplicates, where the join that held the
exact keys of all took 1,512 MB; benchmarks/results/dedup_scaling.md).
"""
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.atomic_files import atomic_path, write_json
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.near_duplicates import band_shape, greedy_removals
from workflow_scripts.lib.signature_files import NamedDocuments, load_npz, shard_documents

REPORT_SCHEMA = pa.schema([("id", pa.int64()), ("title", pa.string()), ("source", pa.string()),
                           ("kind", pa.string()), ("duplicate_of", pa.int64()), ("duplicate_of_title", pa.string()),
                           ("duplicate_of_source", pa.string()), ("similarity", pa.float64())])


def job_outputs(paths, fields, documents, rerun):
    """The concatenated fields of each job's .npz, every job having seen `documents` documents."""
    parts = []
    for path in paths:
        found = load_npz(path)
        if int(found["documents"]) != documents:
            raise StageError(f"{path}: made from {int(found['documents'])} documents, but the signatures hold "
                             f"{documents}; rerun {rerun}")
        parts.append([found[field] for field in fields])
    return [np.concatenate(arrays) for arrays in zip(*parts)]


def counts_by_source(corpora, corpus_documents, sources, exact):
    """Documents in, duplicates removed and documents out for each corpus, from the dedup_exact
    jobs' documents per corpus and the removed documents' corpora and kinds."""
    per_corpus, removed = Counter(), Counter(zip(sources.tolist(), exact.tolist()))
    for name, total in zip(corpora.tolist(), corpus_documents.tolist()):
        per_corpus[name] += total
    counts = {}
    for name, total in sorted(per_corpus.items()):
        entry = {"documents_in": total, "exact_duplicates": removed[name, True],
                 "near_duplicates": removed[name, False]}
        counts[name] = {**entry, "documents_out": total - entry["exact_duplicates"] - entry["near_duplicates"]}
    return counts


def titles_and_sources(paths, corpus_order, named):
    """The title and corpus of each named document, reading one shard at a time."""
    titles, sources = np.empty(len(named), dtype=object), np.empty(len(named), dtype=object)
    for shard_sources, ranks, ids, shard_titles in shard_documents(paths, corpus_order, "titles"):
        numbers = named.index(ranks, ids)
        found = numbers >= 0
        titles[numbers[found]] = shard_titles[found].tolist()
        sources[numbers[found]] = shard_sources[found].tolist()
    return titles, sources


def report_table(named, titles, sources, removed, exact, original, similarity):
    """The report: each removed document and its original, by id, title and corpus."""
    return pa.table({"id": named.ids[removed], "title": titles[removed], "source": sources[removed],
                     "kind": np.where(exact, "exact", "near"), "duplicate_of": named.ids[original],
                     "duplicate_of_title": titles[original], "duplicate_of_source": sources[original],
                     "similarity": [round(value, 4) for value in similarity.tolist()]}, schema=REPORT_SCHEMA)


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--exact", type=Path, nargs="+", required=True, help="every dedup_exact job's .npz")
    ap.add_argument("--pairs", type=Path, nargs="+", required=True, help="every dedup_bands job's .npz")
    add_settings(ap, "dedup", "threshold", "num_perm")
    ap.add_argument("--corpus-order", nargs="*", default=["zhwiki"], help="whose copy is kept: the first corpus's")
    ap.add_argument("--report", type=Path, required=True, help="Parquet: each removed document and its original")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    documents = int(load_npz(args.exact[0])["documents"])
    if documents == 0:
        raise StageError("clean left no documents in any shard (see results/clean/*.json for what each filter "
                         "removed); loosen the clean: thresholds in config.yaml")
    copy_ranks, copy_ids, original_ranks, original_ids, corpora, corpus_documents = job_outputs(
        args.exact, ["copy_ranks", "copy_ids", "original_ranks", "original_ids", "corpora", "corpus_documents"],
        documents, "dedup_exact")
    earlier_ranks, earlier_ids, later_ranks, later_ids, similarity = job_outputs(
        args.pairs, ["earlier_ranks", "earlier_ids", "later_ranks", "later_ids", "similarity"], documents,
        "dedup_bands")
    named = NamedDocuments(np.concatenate([copy_ranks, original_ranks, earlier_ranks, later_ranks]),
                           np.concatenate([copy_ids, original_ids, earlier_ids, later_ids]))
    removed, exact, original, similarity = greedy_removals(
        len(named), named.index(copy_ranks, copy_ids), named.index(original_ranks, original_ids),
        named.index(earlier_ranks, earlier_ids), named.index(later_ranks, later_ids), similarity)
    titles, sources = titles_and_sources(args.signatures, args.corpus_order, named)
    with atomic_path(args.report) as tmp:
        pq.write_table(report_table(named, titles, sources, removed, exact, original, similarity), tmp)
    bands, band_rows = band_shape(args.threshold, args.num_perm)
    stats = {"documents_in": documents, "exact_duplicates": int(np.count_nonzero(exact)),
             "near_duplicates": int(np.count_nonzero(~exact)), "documents_out": documents - len(removed),
             "threshold": args.threshold, "num_perm": args.num_perm, "lsh_bands": bands, "lsh_rows": band_rows,
             "band_jobs": len(args.pairs), "join_jobs": len(args.exact),
             "by_source": counts_by_source(corpora, corpus_documents, sources[removed], exact)}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup", __doc__, add_arguments, run)

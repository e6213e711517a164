"""Exact duplicates among one group of exact keys, across all shards and corpora (input to dedup).

    python -m workflow_scripts.data.dedup_exact --signatures minhash/*.npz --group 0 --join-jobs 4 \
        --corpus-order zhwiki textbook --out dedup/exact/0.npz --stats dedup/exact/0.json

Group K of G holds the documents whose exact key (a SHA-1 of the whitespace-free text) falls in
partition K by its first 8 bytes, so every copy of a text is in the same group. It reads each
shard in turn and keeps only its group's corpus ranks, ids and keys, then writes each document
whose key an earlier document (in visiting order) had, with that first one, and the documents of
each corpus it holds. Memory: about 100 bytes per document of the group at its peak (sorting the
keys), so G jobs each hold a G-th of what one would: 1,132 MB for one job at 10 million documents,
233 MB each for 8 (benchmarks/results/dedup_scaling.md).
"""
from collections import Counter
from pathlib import Path

import numpy as np

from workflow_scripts.lib.atomic_files import atomic_path, write_json
from workflow_scripts.lib.corpus.near_duplicates import exact_copies, key_groups
from workflow_scripts.lib.corpus.signature_files import shard_documents, visiting_order
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--group", type=int, required=True, help="this job's group of exact keys, from 0")
    add_settings(ap, "dedup", "join_jobs")
    ap.add_argument("--corpus-order", nargs="*", default=["zhwiki"])
    ap.add_argument("--out", type=Path, required=True, help=".npz of the copies and their first documents")
    ap.add_argument("--stats", type=Path, required=True)


def group_documents(paths, corpus_order, group, groups):
    """(corpus ranks, ids, exact keys) of this group's documents, its documents of each corpus, and
    how many documents all shards hold."""
    ranks, ids, keys, per_corpus, documents = [], [], [], Counter(), 0
    for sources, shard_ranks, shard_ids, shard_keys in shard_documents(paths, corpus_order, "exact"):
        mine = key_groups(shard_keys, groups) == group
        ranks.append(shard_ranks[mine])
        ids.append(shard_ids[mine])
        keys.append(shard_keys[mine])
        per_corpus.update(dict(zip(*(a.tolist() for a in np.unique(sources[mine], return_counts=True)))))
        documents += len(shard_ids)
    return np.concatenate(ranks), np.concatenate(ids), np.concatenate(keys), per_corpus, documents


def run(args, progress_stream):
    if not 0 <= args.group < args.join_jobs:
        raise StageError(f"--group {args.group} is not one of the {args.join_jobs} groups (0 to {args.join_jobs - 1})")
    ranks, ids, keys, per_corpus, documents = group_documents(args.signatures, args.corpus_order, args.group,
                                                              args.join_jobs)
    order = visiting_order(ranks, ids)
    ranks, ids = ranks[order], ids[order]
    copies, originals = exact_copies(keys[order])
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, copy_ranks=ranks[copies], copy_ids=ids[copies], original_ranks=ranks[originals],
                 original_ids=ids[originals], corpora=np.array(list(per_corpus), dtype=str),
                 corpus_documents=np.array(list(per_corpus.values()), dtype=np.int64), documents=documents)
    stats = {"documents": documents, "documents_in_group": len(ids), "exact_copies": len(copies)}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup_exact", __doc__, add_arguments, run)

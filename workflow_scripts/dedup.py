"""Find exact and near-duplicate documents across all shards, from their MinHash signatures.

    python -m workflow_scripts.dedup --signatures minhash/shard-*.npz --threshold 0.8 \
        --num-perm 128 --seed 1 --report dedup/removed.parquet --stats dedup/stats.json

Documents are visited in ascending page id, so the outcome depends neither on the number of
shards nor on their order: a document whose whitespace-free text hashes like an earlier one's is
an exact duplicate; otherwise one whose estimated Jaccard similarity with an earlier kept
document reaches --threshold (candidates from datasketch's MinHash LSH) is a near duplicate of
the most similar such document. The report lists each removed document with the one it
duplicated; the split stage drops them.
"""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import LeanMinHash, MinHashLSH

from workflow_scripts.common import StageError, atomic_path, log, stage_cli, write_json
from workflow_scripts.minhash import SCHEME

REPORT_SCHEMA = pa.schema([("id", pa.int64()), ("title", pa.string()), ("kind", pa.string()),
                           ("duplicate_of", pa.int64()), ("duplicate_of_title", pa.string()),
                           ("similarity", pa.float64())])


def load_signatures(paths):
    parts = [np.load(p) for p in paths]
    ids = np.concatenate([p["ids"] for p in parts])
    order = np.argsort(ids, kind="stable")
    return (ids[order], np.concatenate([p["titles"] for p in parts])[order],
            np.concatenate([p["exact"] for p in parts])[order],
            np.concatenate([p["signatures"] for p in parts])[order])


def find_duplicates(ids, exact, signatures, threshold, seed):
    """[(id, kind, duplicate_of, similarity)] for every document to remove, in id order."""
    first_with_key, kept, removed = {}, {}, []
    lsh = MinHashLSH(threshold=threshold, num_perm=signatures.shape[1])
    for doc_id, key, values in zip(ids.tolist(), exact, signatures):
        if key in first_with_key:
            removed.append((doc_id, "exact", first_with_key[key], 1.0))
            continue
        first_with_key[key] = doc_id
        minhash = LeanMinHash(seed=seed, hashvalues=values, scheme=SCHEME)
        scored = [(minhash.jaccard(kept[c]), -c) for c in lsh.query(minhash)]
        best = max(scored, default=(0.0, 0))
        if best[0] >= threshold:
            removed.append((doc_id, "near", -best[1], best[0]))
        else:
            lsh.insert(doc_id, minhash, check_duplication=False)
            kept[doc_id] = minhash
    return removed


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", type=Path, required=True, help="Parquet: each removed document and its original")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    ids, titles, exact, signatures = load_signatures(args.signatures)
    if len(ids) == 0:
        raise StageError("clean left no documents in any shard (see results/clean/*.json for what each filter "
                         "removed); loosen the clean: thresholds in config.yaml")
    if signatures.shape[1] != args.num_perm:
        raise StageError(f"{args.signatures[0]}: signatures have {signatures.shape[1]} permutations, not "
                         f"{args.num_perm}; rerun minhash")
    removed = find_duplicates(ids, exact, signatures, args.threshold, args.seed)
    title_of = dict(zip(ids.tolist(), titles.tolist()))
    rows = [{"id": d, "title": title_of[d], "kind": kind, "duplicate_of": orig,
             "duplicate_of_title": title_of[orig], "similarity": round(sim, 4)} for d, kind, orig, sim in removed]
    with atomic_path(args.report) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=REPORT_SCHEMA), tmp)
    exact_count = sum(r["kind"] == "exact" for r in rows)
    stats = {"documents_in": len(ids), "exact_duplicates": exact_count,
             "near_duplicates": len(rows) - exact_count, "documents_out": len(ids) - len(rows),
             "threshold": args.threshold, "num_perm": args.num_perm}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup", __doc__, add_arguments, run)

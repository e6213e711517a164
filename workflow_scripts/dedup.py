"""Find exact and near-duplicate documents across all shards and corpora, from their MinHash signatures.

    python -m workflow_scripts.dedup --signatures minhash/*.npz --threshold 0.55 --num-perm 128 \
        --seed 1 --corpus-order zhwiki textbook --report dedup/removed.parquet --stats dedup/stats.json

Documents are visited corpus by corpus in --corpus-order (zhwiki first, then the extra corpora as
config lists them), each in ascending id, so the outcome does not depend on the number of shards
or their order, and of two copies the one in the corpus listed first is kept: a document whose
whitespace-free text hashes like an earlier one's is an exact duplicate; otherwise one whose
estimated Jaccard similarity with an earlier kept document reaches --threshold (candidates from
datasketch's MinHash LSH, its bands chosen for recall) is a near duplicate of the most similar such document. The report
lists each removed document with the one it duplicated; the split stage drops them.
"""
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasketch import LeanMinHash, MinHashLSH

from workflow_scripts.lib.common import MINHASH_SCHEME, StageError, atomic_path, log, stage_cli, write_json

REPORT_SCHEMA = pa.schema([("id", pa.int64()), ("title", pa.string()), ("source", pa.string()),
                           ("kind", pa.string()), ("duplicate_of", pa.int64()), ("duplicate_of_title", pa.string()),
                           ("duplicate_of_source", pa.string()), ("similarity", pa.float64())])


def load_npz(path):
    try:
        return np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise StageError(f"{path}: not a readable signature file ({err}); rerun its minhash job") from None


def load_signatures(paths, corpus_order):
    """(ids, titles, sources, exact keys, signatures) of every document, in visiting order."""
    parts = [load_npz(p) for p in paths]
    ids = np.concatenate([p["ids"] for p in parts])
    rank = {name: k for k, name in enumerate(corpus_order)}
    ranks = np.array([rank.get(s, len(rank)) for s in np.concatenate([p["sources"] for p in parts]).tolist()])
    order = np.lexsort((ids, ranks))
    return (ids[order], *(np.concatenate([p[key] for p in parts])[order]
                          for key in ("titles", "sources", "exact", "signatures")))


def counts_by_source(sources, rows):
    """Documents in, duplicates removed and documents out for each corpus."""
    counts = {}
    for source in sources.tolist():
        counts.setdefault(source, {"documents_in": 0, "exact_duplicates": 0, "near_duplicates": 0})
        counts[source]["documents_in"] += 1
    for row in rows:
        counts[row["source"]][f"{row['kind']}_duplicates"] += 1
    for entry in counts.values():
        entry["documents_out"] = entry["documents_in"] - entry["exact_duplicates"] - entry["near_duplicates"]
    return counts


def candidate_index(threshold, num_perm):
    """MinHash LSH whose bands favour recall: every candidate's estimated Jaccard is checked against
    the threshold, so a false candidate costs one comparison while a missed one keeps a duplicate.
    datasketch's default, equal weights, puts the S-curve's midpoint at the threshold: at 0.5 with
    128 permutations a pair of Jaccard 0.63 was a candidate with probability 0.93 (25 bands of 5
    rows), with these weights 0.996 (32 of 4); benchmarks/results/dedup_quality.md."""
    return MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))


def find_duplicates(ids, exact, signatures, threshold, seed):
    """[(id, kind, duplicate_of, similarity)] for every document to remove, in visiting order; a
    removed document always points to a kept one."""
    by_key, kept, removed = {}, {}, []  # by_key: exact key -> (kept id, kind, similarity) its copies get
    lsh = candidate_index(threshold, signatures.shape[1])
    for doc_id, key, values in zip(ids.tolist(), exact, signatures):
        if key in by_key:
            original, kind, similarity = by_key[key]
            removed.append((doc_id, kind, original, similarity))
            continue
        minhash = LeanMinHash(seed=seed, hashvalues=values, scheme=MINHASH_SCHEME)
        scored = [(minhash.jaccard(kept[c]), -c) for c in lsh.query(minhash)]
        best = max(scored, default=(0.0, 0))
        if best[0] >= threshold:
            removed.append((doc_id, "near", -best[1], best[0]))
            by_key[key] = (-best[1], "near", best[0])
        else:
            lsh.insert(doc_id, minhash, check_duplication=False)
            kept[doc_id] = minhash
            by_key[key] = (doc_id, "exact", 1.0)
    return removed


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--threshold", type=float, default=0.55)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus-order", nargs="*", default=["zhwiki"], help="whose copy is kept: the first corpus's")
    ap.add_argument("--report", type=Path, required=True, help="Parquet: each removed document and its original")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    ids, titles, sources, exact, signatures = load_signatures(args.signatures, args.corpus_order)
    if len(ids) == 0:
        raise StageError("clean left no documents in any shard (see results/clean/*.json for what each filter "
                         "removed); loosen the clean: thresholds in config.yaml")
    if signatures.shape[1] != args.num_perm:
        raise StageError(f"{args.signatures[0]}: signatures have {signatures.shape[1]} permutations, not "
                         f"{args.num_perm}; rerun minhash")
    removed = find_duplicates(ids, exact, signatures, args.threshold, args.seed)
    title_of = dict(zip(ids.tolist(), titles.tolist()))
    source_of = dict(zip(ids.tolist(), sources.tolist()))
    rows = [{"id": d, "title": title_of[d], "source": source_of[d], "kind": kind, "duplicate_of": orig,
             "duplicate_of_title": title_of[orig], "duplicate_of_source": source_of[orig],
             "similarity": round(sim, 4)} for d, kind, orig, sim in removed]
    with atomic_path(args.report) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=REPORT_SCHEMA), tmp)
    exact_count = sum(r["kind"] == "exact" for r in rows)
    index = candidate_index(args.threshold, args.num_perm)
    stats = {"documents_in": len(ids), "exact_duplicates": exact_count,
             "near_duplicates": len(rows) - exact_count, "documents_out": len(ids) - len(rows),
             "threshold": args.threshold, "num_perm": args.num_perm, "lsh_bands": index.b, "lsh_rows": index.r,
             "by_source": counts_by_source(sources, rows)}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup", __doc__, add_arguments, run)

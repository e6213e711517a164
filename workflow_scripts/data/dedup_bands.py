"""Near-duplicate candidates of one group of LSH bands, across all shards and corpora (input to dedup).

    python -m workflow_scripts.data.dedup_bands --signatures minhash/*.npz --group 0 --band-jobs 4 \
        --threshold 0.55 --num-perm 128 --corpus-order zhwiki textbook \
        --out dedup/bands/0/0.npz dedup/bands/0/1.npz --stats dedup/bands/0.json

Group K of G takes bands K, K+G, K+2G, ... of the LSH (lib.corpus.near_duplicates.band_shape). It reads
each shard's signatures in turn and keeps only a 64-bit key per document and band, then reads
again the signatures of the documents that share a bucket, and writes the pairs among them whose
band values are equal and whose estimated Jaccard reaches --threshold, each pair once over all
jobs (in the first band whose values it shares; lib.corpus.near_duplicates.verified_pairs), each
document by its corpus rank and id (lib.corpus.signature_files), the earlier in visiting order first:
one file per join part (--out, in part order) with the pairs whose later document is in that
part, and in each where every part starts.
Memory: 8 bytes per document and band of the group, plus the signatures of documents in shared
buckets; never the whole corpus's signatures (benchmarks/results/dedup_scaling.md).
"""
from pathlib import Path

import numpy as np

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.near_duplicates import band_keys, band_shape, buckets, verified_pairs
from workflow_scripts.lib.corpus.signature_files import SignatureFiles
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli


def add_arguments(ap):
    ap.add_argument("--signatures", type=Path, nargs="+", required=True)
    ap.add_argument("--group", type=int, required=True, help="this job's group of bands, from 0")
    add_settings(ap, "dedup", "band_jobs", "threshold", "num_perm")
    ap.add_argument("--corpus-order", nargs="*", default=["zhwiki"])
    ap.add_argument("--out", type=Path, nargs="+", required=True,
                    help="for each join part, .npz of the earlier and later documents, similarity")
    ap.add_argument("--stats", type=Path, required=True)


def band_buckets(files, bands, rows):
    """[buckets of each band], from keys computed a shard at a time."""
    keys = np.empty((len(bands), len(files)), dtype=np.uint64)
    for positions, signatures in files.shards("signatures"):
        for k, band in enumerate(bands):
            keys[k, positions] = band_keys(signatures, band, rows)
    return [buckets(band) for band in keys]


def run(args, progress_stream):
    if not 0 <= args.group < args.band_jobs:
        raise StageError(f"--group {args.group} is not one of the {args.band_jobs} groups (0 to {args.band_jobs - 1})")
    files = SignatureFiles(args.signatures, args.corpus_order, args.num_perm)
    band_count, rows = band_shape(args.threshold, args.num_perm)
    bands = list(range(args.group, band_count, args.band_jobs))
    if not bands:
        raise StageError(f"{args.band_jobs} band jobs but the LSH has {band_count} bands at threshold {args.threshold} "
                         f"and {args.num_perm} permutations; set dedup.band_jobs to at most {band_count}")
    per_band = band_buckets(files, bands, rows)
    shared = np.unique(np.concatenate([np.empty(0, np.int64)] + [m.ravel() for b in per_band for m in b.values()]))
    signatures = files.gather("signatures", shared) if len(shared) else np.empty((0, args.num_perm), np.uint32)
    found = [verified_pairs(groups, signatures, lambda p: np.searchsorted(shared, p), band, (band_count, rows),
                            args.threshold)
             for band, groups in zip(bands, per_band)]
    earlier, later, similarity = (np.concatenate(parts) for parts in zip(*found))
    files.write_pairs_by_part(args.out, earlier, later, similarity)
    stats = {"documents": len(files), "bands": bands, "rows": rows, "documents_in_shared_buckets": len(shared),
             "pairs_at_threshold": len(earlier)}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("dedup_bands", __doc__, add_arguments, run)

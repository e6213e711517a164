"""MinHash signatures and exact-duplicate hashes for one cleaned shard (input to dedup).

    python -m workflow_scripts.data.minhash --input clean/shard-000.parquet --ngram 5 \
        --num-perm 128 --seed 1 --out minhash/shard-000.npz

How documents are hashed, and why: lib/corpus/minhash_signatures.py.
"""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import atomic_path
from workflow_scripts.lib.corpus.documents import count_docs, read_docs
from workflow_scripts.lib.corpus.minhash_signatures import exact_key, signatures
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import stage_cli

# Documents hashed per call to rensa: enough to amortise the call, few enough to keep memory small
# (a 5-gram hash is 8 bytes per character).
BATCH = 256


def add_arguments(ap):
    ap.add_argument("--input", type=Path, required=True)
    add_settings(ap, "dedup", "ngram", "num_perm", "seed")
    ap.add_argument("--out", type=Path, required=True, help=".npz with ids, titles, sources, exact keys, signatures")


def run(args, progress_stream):
    ids, titles, sources, keys, signed, batch = [], [], [], [], [], []
    for doc in tqdm(read_docs([args.input]), total=count_docs([args.input]), file=progress_stream,
                    desc="minhash", mininterval=5):
        ids.append(doc["id"])
        titles.append(doc["title"])
        sources.append(doc["source"] or "")
        keys.append(exact_key(doc["text"]))
        batch.append(doc["text"])
        if len(batch) == BATCH:
            signed.append(signatures(batch, args.ngram, args.num_perm, args.seed))
            batch = []
    signed.append(signatures(batch, args.ngram, args.num_perm, args.seed))
    with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, ids=np.array(ids, dtype=np.int64), titles=np.array(titles, dtype=str),
                 sources=np.array(sources, dtype=str),
                 exact=np.array(keys, dtype="S20"),
                 signatures=np.concatenate(signed).reshape(len(ids), args.num_perm))


if __name__ == "__main__":
    stage_cli("minhash", __doc__, add_arguments, run)

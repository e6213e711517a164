"""Drop the duplicates dedup found and split the rest into train and validation by document id.

    python -m workflow_scripts.split --inputs clean/shard-*.parquet --removed dedup/removed.parquet \
        --validation-fraction 0.05 --seed 0 --train corpus/train.parquet \
        --validation corpus/validation.parquet --stats corpus/split.json

A document goes to validation when a hash of (seed, id) falls below the fraction, so its side
never changes when other documents come or go.
"""
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from workflow_scripts.common import DocWriter, StageError, count_docs, read_docs, stage_cli, write_json


def in_validation(doc_id, fraction, seed):
    digest = hashlib.sha1(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2 ** 64


def add_arguments(ap):
    ap.add_argument("--inputs", type=Path, nargs="+", required=True)
    ap.add_argument("--removed", type=Path, required=True, help="dedup's report")
    ap.add_argument("--validation-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--validation", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    removed = set(pq.read_table(args.removed, columns=["id"]).column("id").to_pylist())
    with DocWriter(args.train) as train, DocWriter(args.validation) as validation:
        for doc in tqdm(read_docs(args.inputs), total=count_docs(args.inputs), file=progress_stream,
                        desc="split", mininterval=5):
            if doc["id"] not in removed:
                side = validation if in_validation(doc["id"], args.validation_fraction, args.seed) else train
                side.write(doc)
        if train.docs == 0 or (validation.docs == 0 and args.validation_fraction > 0):
            raise StageError(f"the split left train with {train.docs} and validation with {validation.docs} "
                             "documents; the corpus is too small for split.validation_fraction in config.yaml")
    write_json(args.stats, {"train": {"documents": train.docs, "characters": train.chars},
                            "validation": {"documents": validation.docs, "characters": validation.chars}})


if __name__ == "__main__":
    stage_cli("split", __doc__, add_arguments, run)

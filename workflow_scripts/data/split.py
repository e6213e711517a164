"""Drop the duplicates dedup found, split the rest into train and validation by document id, and
weight each corpus in the train split.

    python -m workflow_scripts.data.split --inputs clean/*.parquet --removed dedup/removed.parquet \
        --validation-fraction 0.05 --seed 0 --weights zhwiki=1 textbook=2.5 \
        --train corpus/train.parquet --validation corpus/validation.parquet --stats corpus/split.json

A document goes to validation when a hash of (seed, id) falls below the fraction, so its side
never changes when other documents come or go. In train, a document of a corpus with weight w
is written floor(w) times, plus once more when another hash of its id falls below w - floor(w):
weight 2.5 repeats every document twice and half of them a third time, weight 0.3 keeps 30%.
Validation holds every document once whatever its weight, so bits per byte covers every corpus.
"""
import hashlib
import math
from pathlib import Path

from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.documents import DocWriter, count_docs, open_parquet, read_docs
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, stage_cli


def unit_hash(*key):
    """A number in [0, 1) fixed by the key."""
    digest = hashlib.sha1(":".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def in_validation(doc_id, fraction, seed):
    return unit_hash(seed, doc_id) < fraction


def train_copies(doc_id, weight, seed):
    whole = math.floor(weight)
    return whole + (unit_hash(seed, doc_id, "copies") < weight - whole)


def parse_weights(pairs):
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise StageError(f"--weights {pair}: expected NAME=WEIGHT, e.g. zhwiki=1.0") from None
    return weights


def add_arguments(ap):
    ap.add_argument("--inputs", type=Path, nargs="+", required=True)
    ap.add_argument("--removed", type=Path, required=True, help="dedup's report")
    add_settings(ap, "split", "validation_fraction", "seed")
    ap.add_argument("--weights", nargs="*", default=[], help="SOURCE=WEIGHT for the train split (default 1)")
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--validation", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    removed = set(open_parquet(args.removed).read(columns=["id"]).column("id").to_pylist())
    weights = parse_weights(args.weights)
    by_source = {}
    with DocWriter(args.train) as train, DocWriter(args.validation) as validation:
        for doc in tqdm(read_docs(args.inputs), total=count_docs(args.inputs), file=progress_stream,
                        desc="split", mininterval=5):
            if doc["id"] in removed:
                continue
            weight = weights.get(doc["source"], 1.0)
            counts = by_source.setdefault(doc["source"], {"weight": weight, **dict.fromkeys(
                ("documents", "characters", "train_documents", "train_characters", "validation_documents",
                 "validation_characters"), 0)})
            counts["documents"] += 1
            counts["characters"] += len(doc["text"])
            if in_validation(doc["id"], args.validation_fraction, args.seed):
                validation.write(doc)
                side, copies = "validation", 1
            else:
                side, copies = "train", train_copies(doc["id"], weight, args.seed)
                for _ in range(copies):
                    train.write(doc)
            counts[f"{side}_documents"] += copies
            counts[f"{side}_characters"] += copies * len(doc["text"])
        if train.docs == 0 or (validation.docs == 0 and args.validation_fraction > 0):
            raise StageError(f"the split left train with {train.docs} and validation with {validation.docs} "
                             "documents; the corpus is too small for split.validation_fraction in config.yaml")
    kept = {"documents": sum(c["documents"] for c in by_source.values()),
            "characters": sum(c["characters"] for c in by_source.values())}
    write_json(args.stats, {"kept": kept, "train": {"documents": train.docs, "characters": train.chars},
                            "validation": {"documents": validation.docs, "characters": validation.chars},
                            "weights": weights, "by_source": by_source})


if __name__ == "__main__":
    stage_cli("split", __doc__, add_arguments, run)

"""Gather the token shards' JSON files into one index that pretraining reads.

    python -m workflow_scripts.tokenizer.tokens_index --shards tokens/train-*.json tokens/validation-*.json \
        --out tokens/index.json

The index lists every shard's file, documents and tokens by split, with the dtype, vocabulary
size, end-of-document id and the SHA-1 of the tokenizer.json that made them; shards made by
different tokenizers are refused.
"""
from pathlib import Path

from workflow_scripts.lib.atomic_files import read_json, write_json
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli

SHARED_KEYS = ("dtype", "vocab_size", "eod_id", "tokenizer_sha1")


def build_index(shard_jsons):
    shards = [{**read_json(path), "file": Path(path).with_suffix(".bin").name} for path in shard_jsons]
    for key in SHARED_KEYS:
        values = {shard[key] for shard in shards}
        if len(values) != 1:
            raise StageError(f"token shards disagree on {key} ({sorted(map(str, values))}); rerun the tokens rule")
    splits = {}
    for shard in sorted(shards, key=lambda s: (s["split"], s["shard"])):
        split = splits.setdefault(shard["split"], {"documents": 0, "tokens": 0, "shards": []})
        split["documents"] += shard["documents"]
        split["tokens"] += shard["tokens"]
        split["shards"].append({key: shard[key] for key in ("file", "documents", "tokens")})
    return {**{key: shards[0][key] for key in SHARED_KEYS}, "splits": splits}


def add_arguments(ap):
    ap.add_argument("--shards", type=Path, nargs="+", required=True, help="the shards' JSON files")
    ap.add_argument("--out", type=Path, required=True)


def run(args, progress_stream):
    index = build_index(args.shards)
    write_json(args.out, index)
    log.info("%s", {split: (v["documents"], v["tokens"]) for split, v in index["splits"].items()})


if __name__ == "__main__":
    stage_cli("tokens_index", __doc__, add_arguments, run)

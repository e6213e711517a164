"""Tokenize one shard of a split into a flat binary file of token ids, documents separated by <|endoftext|>.

    python -m workflow_scripts.tokenizer.tokens --tokenizer tokenizer/ --input corpus/train.parquet \
        --shard 0 --shards 4 --out tokens/train-000.bin --index tokens/train-000.json

Shard i of n takes the i-th contiguous run of documents, so shards are parallel jobs. Ids are
little-endian uint16 when the vocabulary has fewer than 65,536 entries, else uint32, with the
end-of-document id after every document; read them with
`numpy.memmap(path, dtype=index["dtype"], mode="r")`. Documents are encoded in batches
(the Rust tokenizer uses every core it is given) and appended to the file as they come, so
memory stays bounded whatever the corpus size.
"""
import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import atomic_path, file_digest, write_json
from workflow_scripts.lib.chatml import END_OF_TEXT
from workflow_scripts.lib.corpus.documents import open_docs
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli

BATCH_DOCS = 256


def token_dtype(vocab_size):
    return np.dtype("<u2") if vocab_size < 2 ** 16 else np.dtype("<u4")


def shard_texts(path, shard, shards):
    """The texts of documents [n*shard/shards, n*(shard+1)/shards) of a Parquet split, in order."""
    pf = open_docs(path)
    total = pf.metadata.num_rows
    first, last = total * shard // shards, total * (shard + 1) // shards
    start = 0
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if start < last and start + rows > first:
            texts = pf.read_row_group(group, columns=["text"]).column("text").to_pylist()
            yield from texts[max(0, first - start):last - start]
        start += rows


def batched(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_tokenizer(directory: Path):
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise StageError(f"{path}: no such file; train the tokenizer first (snakemake tokenizer)")
    return Tokenizer.from_file(str(path)), file_digest(path)


def add_arguments(ap):
    ap.add_argument("--tokenizer", type=Path, required=True, help="directory with tokenizer.json")
    ap.add_argument("--input", type=Path, required=True, help="a split (Parquet, DOC_SCHEMA)")
    ap.add_argument("--shard", type=int, default=0)
    add_settings(ap, "tokens", "shards")
    ap.add_argument("--out", type=Path, required=True, help="binary token file")
    ap.add_argument("--index", type=Path, required=True, help="JSON: tokens, documents, dtype, tokenizer hash")


def run(args, progress_stream):
    if not 0 <= args.shard < args.shards:
        raise StageError(f"--shard {args.shard} is outside 0..{args.shards - 1}")
    tokenizer, tokenizer_sha1 = load_tokenizer(args.tokenizer)
    eod = tokenizer.token_to_id(END_OF_TEXT)
    dtype = token_dtype(tokenizer.get_vocab_size())
    documents = tokens = 0
    with atomic_path(args.out) as tmp, open(tmp, "wb") as out, \
            tqdm(desc=f"tokens {args.input.stem}-{args.shard:03d}", unit=" docs", file=progress_stream,
                 mininterval=5) as bar:
        for batch in batched(shard_texts(args.input, args.shard, args.shards), BATCH_DOCS):
            for encoding in tokenizer.encode_batch_fast(batch, add_special_tokens=False):
                ids = np.array(encoding.ids + [eod], dtype=dtype)
                ids.tofile(out)
                tokens += len(ids)
            documents += len(batch)
            bar.update(len(batch))
        out.flush()
        os.fsync(out.fileno())
    index = {"split": args.input.stem, "shard": args.shard, "shards": args.shards, "documents": documents,
             "tokens": tokens, "dtype": dtype.name, "vocab_size": tokenizer.get_vocab_size(), "eod_id": eod,
             "tokenizer_sha1": tokenizer_sha1}
    write_json(args.index, index)
    log.info("%s", index)


if __name__ == "__main__":
    stage_cli("tokens", __doc__, add_arguments, run)

"""Bits per byte and perplexity of a causal LM on the validation split, with the model's own tokenizer.

    python -m workflow_scripts.eval.bits_per_byte --model results/base_model \
        --text results/corpus/validation.parquet --out results/eval/base_model/bpb.json

Bits per byte is the model's total cross-entropy over the text, in bits, divided by the text's
UTF-8 bytes. It does not depend on how a tokenizer cuts the text, so models with different
tokenizers compare. Each document is scored alone: the end-of-text token starts it, and every
token of it is predicted, then the end-of-text token after it (pretraining puts one after each
document). A document longer than --seq-len (default: the model's context) is scored in
consecutive windows, each predicting the next --seq-len tokens from within the window.
Perplexity, exp of the mean loss per token, does depend on the tokenizer: compare it only
between models that share one.
"""
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.documents import count_docs, read_docs
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.engines import causal_lm_loss
from workflow_scripts.lib.training.models import load_causal_lm
from workflow_scripts.lib.training.sft_data import IGNORE_INDEX


def document_ids(tokenizer, text):
    if tokenizer.eos_token_id is None:
        raise StageError(f"{tokenizer.name_or_path}: the tokenizer has no end-of-text token to delimit documents")
    return [tokenizer.eos_token_id, *tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]


def windows(ids, seq_len):
    """(inputs, targets) pairs that predict every token after the first exactly once."""
    for start in range(0, len(ids) - 1, seq_len):
        chunk = ids[start:start + seq_len + 1]
        yield chunk[:-1], chunk[1:]


def batch_nats(model, pairs, pad_id):
    """Summed cross-entropy (nats) of a batch of windows, right-padded (causal attention never
    looks at the padding after a token, so no attention mask is needed)."""
    width = max(len(inputs) for inputs, _ in pairs)
    inputs = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in pairs], device=model.device)
    targets = torch.tensor([t + [IGNORE_INDEX] * (width - len(t)) for _, t in pairs], device=model.device)
    return float(causal_lm_loss(model, inputs, targets, reduction="sum"))


@torch.no_grad()
def score(model, tokenizer, texts, seq_len, batch_size):
    """Total nats, predicted tokens and UTF-8 bytes over `texts`."""
    totals = {"nats": 0.0, "tokens": 0, "bytes": 0, "documents": 0}
    pending = []
    for text in texts:
        ids = document_ids(tokenizer, text)
        pending.extend(windows(ids, seq_len))
        totals["tokens"] += len(ids) - 1
        totals["bytes"] += len(text.encode("utf-8"))
        totals["documents"] += 1
        while len(pending) >= batch_size:
            totals["nats"] += batch_nats(model, pending[:batch_size], tokenizer.eos_token_id)
            pending = pending[batch_size:]
    if pending:
        totals["nats"] += batch_nats(model, pending, tokenizer.eos_token_id)
    return totals


def metrics(totals):
    if totals["bytes"] == 0:
        raise StageError("the validation text is empty; nothing to score")
    loss = totals["nats"] / totals["tokens"]
    return {**totals, "loss": loss, "perplexity": math.exp(loss),
            "bits_per_byte": totals["nats"] / (math.log(2) * totals["bytes"]),
            "bytes_per_token": totals["bytes"] / totals["tokens"]}


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True, help="a Hugging Face causal-LM directory")
    ap.add_argument("--text", type=Path, nargs="+", required=True, help="document Parquet files (the validation split)")
    add_settings(ap, "eval", "seq_len", "batch_size", "max_documents")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")


def run(args, progress_stream):
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(args.model)
    total = count_docs(args.text)
    limit = min(total, args.max_documents) if args.max_documents else total
    docs = (doc["text"] for _, doc in zip(range(limit), read_docs(args.text)))
    texts = tqdm(docs, total=limit, desc="bits per byte", unit="doc", file=progress_stream, mininterval=5)
    seq_len = args.seq_len or model.config.max_position_embeddings
    result = metrics(score(model, tokenizer, texts, seq_len, args.batch_size))
    write_json(args.out, {"model": str(args.model), "text": [str(p) for p in args.text], "seq_len": seq_len,
                          **result, "seconds": round(time.perf_counter() - started, 2)})
    log.info("bits per byte %.4f, perplexity %.2f over %d documents", result["bits_per_byte"],
             result["perplexity"], result["documents"])


if __name__ == "__main__":
    stage_cli("bits_per_byte", __doc__, add_arguments, run)

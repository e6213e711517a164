"""Expand an existing model's vocabulary with Chinese tokens learned on the corpus (the
Chinese-LLaMA-Alpaca recipe), ready for continued pretraining.

    python -m workflow_scripts.continued.expand_vocab --base /models/my-llama --train corpus/train.parquet \
        --validation corpus/validation.parquet --vocab-size 20000 --init subtoken_mean \
        --out expanded_base/ --report expand/report.json

1. A Chinese tokenizer is trained on the train split with the base tokenizer's own pipeline
   (transformers' train_new_from_iterator: same normaliser, pre-tokeniser and byte handling),
   so its tokens are spelled the way the base spells them.
2. Its tokens that the base lacks are appended to the base vocabulary (ids after every existing
   id, so each old token keeps its id) with the merges that build them, ranked after every base
   merge. BPE applies merges lowest rank first, so the merged tokenizer segments any text exactly
   as the base did and then joins base tokens into new ones: text that no new merge touches
   (English, code, anything outside the corpus's vocabulary) encodes to the same ids as before.
3. The embedding matrix (and an untied output layer) grows to the new size, padded to a multiple
   of 64. A new row starts as the mean of the base embeddings of the pieces the base tokenizer
   cuts that token into (subtoken_mean; the output layer likewise), or as the mean of all old
   rows (mean).
The report has tokens per character on the validation split before and after.
"""
import json
import math
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from workflow_scripts.lib.atomic_files import atomic_dir, write_json
from workflow_scripts.lib.corpus.documents import capped_texts, read_docs
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.models import require_model_dir

EMBEDDING_MULTIPLE = 64


def load_base(base: Path):
    require_model_dir(base, "set continued_pretrain.base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise StageError(f"{base}: the tokenizer has no tokenizer.json (a slow tokenizer); convert it to a fast one")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise StageError(f"{base}: the tokenizer is {spec['model']['type']}, not BPE; only BPE vocabularies merge")
    return tokenizer, spec


def merge_spec(base_spec, chinese_spec):
    """The base tokenizer.json with the Chinese tokens it lacks and the merges that build them
    appended; merges that would build a token the base already has are left out, since they
    would change how the base's own text is cut. Both specs come from `to_str()`, which writes
    merges as [left, right] lists whichever format the file on disk used."""
    base_vocab, base_merges = base_spec["model"]["vocab"], base_spec["model"]["merges"]
    vocab = dict(base_vocab)
    next_id = 1 + max([*vocab.values(), *(t["id"] for t in base_spec["added_tokens"])])
    specials = {t["content"] for t in chinese_spec["added_tokens"]}
    for token, _ in sorted(chinese_spec["model"]["vocab"].items(), key=lambda item: item[1]):
        if token not in vocab and token not in specials:
            vocab[token] = next_id
            next_id += 1
    new_merges = [pair for pair in chinese_spec["model"]["merges"] if "".join(pair) not in base_vocab]
    merged = json.loads(json.dumps(base_spec))
    merged["model"]["vocab"], merged["model"]["merges"] = vocab, base_merges + new_merges
    return merged, len(vocab) - len(base_vocab), len(new_merges)


def compare_on(docs, base_tokenizer, expanded):
    """Characters and tokens before and after on the documents, each checked to round-trip."""
    chars = before = after = 0
    for doc in docs:
        ids = expanded(doc["text"], add_special_tokens=False)["input_ids"]
        if expanded.decode(ids) != doc["text"]:
            raise StageError(f"the expanded tokenizer does not decode document id={doc['id']} back to itself")
        chars, after = chars + len(doc["text"]), after + len(ids)
        before += len(base_tokenizer(doc["text"], add_special_tokens=False)["input_ids"])
    return {"characters": chars, "tokens_before": before, "tokens_after": after,
            "tokens_per_char_before": round(before / max(1, chars), 4),
            "tokens_per_char_after": round(after / max(1, chars), 4)}


def subtoken_ids(base_tokenizer, token):
    """The base tokenizer's pieces of one (new) token, as the base BPE model cuts its spelling."""
    return [piece.id for piece in base_tokenizer.backend_tokenizer.model.tokenize(token)]


@torch.no_grad()
def grow_embeddings(model, base_tokenizer, new_tokens, init):
    """Resize to the new vocabulary (padded) and initialise the new rows; returns the new row count."""
    old_rows = len(base_tokenizer)
    size = math.ceil((max(new_tokens.values(), default=old_rows - 1) + 1) / EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE
    size = max(size, model.get_input_embeddings().weight.shape[0])
    model.resize_token_embeddings(size, mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    if not model.config.tie_word_embeddings:
        matrices.append(model.get_output_embeddings().weight)
    for weight in matrices:
        mean = weight[:old_rows].mean(dim=0)
        weight[old_rows:] = mean
        if init == "subtoken_mean":
            for token, token_id in new_tokens.items():
                weight[token_id] = weight[subtoken_ids(base_tokenizer, token)].mean(dim=0)
    return size


def add_arguments(ap):
    ap.add_argument("--base", type=Path, required=True, help="the existing Hugging Face causal-LM directory")
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--validation", type=Path, required=True)
    add_settings(ap, "continued_pretrain", "vocab_size", "max_chars", "init")
    ap.add_argument("--out", type=Path, required=True, help="the expanded model and tokenizer")
    ap.add_argument("--report", type=Path, required=True)


def run(args, progress_stream):
    base_tokenizer, base_spec = load_base(args.base)
    chinese = base_tokenizer.train_new_from_iterator(capped_texts(args.train, args.max_chars), args.vocab_size)
    merged_spec, added, merges = merge_spec(base_spec, json.loads(chinese.backend_tokenizer.to_str()))
    new_tokens = {t: i for t, i in merged_spec["model"]["vocab"].items() if t not in base_spec["model"]["vocab"]}
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    with atomic_dir(args.out) as tmp:
        base_tokenizer.save_pretrained(tmp, save_jinja_files=False)
        Tokenizer.from_str(json.dumps(merged_spec)).save(str(tmp / "tokenizer.json"))
        expanded = AutoTokenizer.from_pretrained(tmp)
        rows = grow_embeddings(model, base_tokenizer, new_tokens, args.init)
        model.save_pretrained(tmp, safe_serialization=True)
        validation = compare_on(read_docs([args.validation]), base_tokenizer, expanded)
    report = {"base": str(args.base), "base_vocab": len(base_tokenizer), "chinese_vocab": len(chinese),
              "added_tokens": added, "added_merges": merges, "expanded_vocab": len(expanded),
              "embedding_rows": rows, "init": args.init, "validation": validation}
    write_json(args.report, report)
    log.info("%s", report)


if __name__ == "__main__":
    stage_cli("expand_vocab", __doc__, add_arguments, run)

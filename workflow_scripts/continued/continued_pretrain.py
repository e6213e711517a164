"""Continue pretraining an existing model (after expand_vocab) on the token shards, fully or with
LoRA; the same loop, checkpoints and metrics as pretraining from scratch.

    accelerate launch --num_processes 1 -m workflow_scripts.continued.continued_pretrain \
        --model expanded_base --expansion expand/report.json --tokens expanded_tokens --method lora \
        --checkpoint-root checkpoints/continued_model --out continued_model \
        --metrics m.jsonl --plot loss.png --summary s.json

With --method lora, the transformer blocks get LoRA adapters and the embedding rows of the new
tokens (ids from --expansion's base_vocab on) are trained in full (peft's trainable tokens, tied
to the output layer when the model ties them): new tokens start from an average, so they must
move, while the old rows stay as the base learned them. Adapters are merged into the saved model.
"""
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workflow_scripts.lib.atomic_files import read_json
from workflow_scripts.lib.settings import typed
from workflow_scripts.lib.stage_cli import StageError, stage_cli
from workflow_scripts.lib.training.models import (Lora, add_method_arguments, merge_lora, model_fingerprint,
                                                  require_model_dir, with_lora)
from workflow_scripts.lib.training.token_training import add_token_training_arguments, train_on_tokens
from workflow_scripts.lib.training.training import set_seed


def add_arguments(ap):
    add_token_training_arguments(ap, "continued_pretrain")
    add_method_arguments(ap, "continued_pretrain")
    ap.add_argument("--model", type=Path, required=True, help="the expanded model (expand_vocab's output)")
    ap.add_argument("--expansion", type=Path, required=True, help="expand_vocab's report: which token ids are new")


def run(args, progress_stream):
    set_seed(args.seed)
    require_model_dir(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attention)
    if args.seq_len > model.config.max_position_embeddings:
        raise StageError(f"continued_pretrain.seq_len {args.seq_len} is longer than {args.model}'s context of "
                         f"{model.config.max_position_embeddings} tokens")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    expansion = read_json(args.expansion)
    summary = {"method": args.method, "base": expansion["base"], "added_tokens": expansion["added_tokens"]}
    if args.method == "lora":
        new_ids = list(range(expansion["base_vocab"], expansion["expanded_vocab"]))
        model = with_lora(model, typed(Lora, vars(args)), trainable_token_indices={"embed_tokens": new_ids})
    summary["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_on_tokens(vars(args), "continued_pretrain", model, tokenizer, summary,
                    f"continued pretraining ({args.method}, {{engine}}, processes: {{world}})", progress_stream,
                    merge_lora if args.method == "lora" else None, base=model_fingerprint(args.model))


if __name__ == "__main__":
    stage_cli("continued_pretrain", __doc__, add_arguments, run)

"""Pretrain a LLaMA-style causal LM from scratch on the token shards; resumable, measured.

    accelerate launch --num_processes 1 -m workflow_scripts.pretrain --tokens results/tokens \
        --tokenizer results/tokenizer --preset demo --out results/base_model \
        --checkpoint-root results/checkpoints/base_model --metrics m.jsonl --plot loss.png --summary s.json

With N processes: `accelerate launch --multi_gpu --num_processes N -m workflow_scripts.pretrain ...`
(on a CPU-only machine this runs DDP over gloo). `--engine deepspeed --zero-stage 2|3` trains
with DeepSpeed ZeRO instead. Rerunning the same command after a crash or kill resumes from the
latest checkpoint of the same settings and data; the output is a Hugging Face model directory
(safetensors, config, tokenizer) for `AutoModelForCausalLM.from_pretrained`.
"""
import argparse
import math
from pathlib import Path

from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from workflow_scripts.lib.common import stage_cli
from workflow_scripts.lib.token_training import add_token_training_arguments, train_on_tokens
from workflow_scripts.lib.training import set_seed

# LLaMA shapes (RMSNorm, RoPE, SwiGLU). Sizes count the transformer blocks; embeddings come on top
# (32,000 x hidden). `demo` trains in about a minute on 2 CPU cores.
PRESETS = {
    "demo": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=352),
    "26m": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1408),
    "0.1b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                 intermediate_size=2048),
    "0.5b": dict(hidden_size=1280, num_hidden_layers=24, num_attention_heads=20, num_key_value_heads=4,
                 intermediate_size=3456),
}
VOCAB_MULTIPLE = 64


def build_model(preset, tokenizer, seq_len, tie_embeddings, attention):
    config = LlamaConfig(**PRESETS[preset], vocab_size=math.ceil(len(tokenizer) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE,
                         max_position_embeddings=seq_len, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=tie_embeddings, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, attn_implementation=attention)
    return LlamaForCausalLM(config)


def add_arguments(ap):
    add_token_training_arguments(ap)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--preset", choices=PRESETS, default="demo")
    ap.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=True)


def run(args, progress_stream):
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build_model(args.preset, tokenizer, args.seq_len, args.tie_embeddings, args.attention)
    train_on_tokens(args, model, tokenizer, {"preset": args.preset},
                    f"pretraining ({args.preset}, {{engine}}, processes: {{world}})", progress_stream,
                    settings=("preset", "tie_embeddings"))


if __name__ == "__main__":
    stage_cli("pretrain", __doc__, add_arguments, run)

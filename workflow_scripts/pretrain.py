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
import json
import math
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from workflow_scripts.common import read_json, stage_cli
from workflow_scripts.training import (Job, RunShape, Sampler, TokenWindows, add_training_arguments, evaluate,
                                       model_flops_per_token, run_id, run_training, set_seed, token_byte_lengths,
                                       window_batches)

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


def data_fingerprint(tokens_index):
    return tokens_index["tokenizer_sha1"] + json.dumps(tokens_index["splits"], sort_keys=True)


def add_arguments(ap):
    add_token_training_arguments(ap)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--preset", choices=PRESETS, default="demo")
    ap.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=True)


def add_token_training_arguments(ap):
    """Options of every stage that trains on the token shards (this one and continued_pretrain)."""
    add_training_arguments(ap)
    ap.add_argument("--tokens", type=Path, required=True, help="directory with index.json and the token shards")
    ap.add_argument("--attention", choices=("sdpa", "eager", "flash_attention_2"), default="sdpa")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per process per micro-step")
    ap.add_argument("--global-batch-tokens", type=int, default=8192, help="tokens per optimizer step, all ranks")
    ap.add_argument("--eval-windows", type=int, default=64, help="validation windows per evaluation")


def pretraining_job(args, shape, rank, world, tokenizer):
    train = TokenWindows(args.tokens, "train", args.seq_len)
    validation = TokenWindows(args.tokens, "validation", args.seq_len)
    sampler = Sampler(train.count, args.seed, rank, world, shape.micro_batch)
    token_bytes = token_byte_lengths(tokenizer)
    return Job(name="pretrain", micro_batch=lambda micro_step: train.batch(sampler.indices(micro_step)),
               evaluate=lambda engine: evaluate(engine, window_batches(validation, args.eval_windows, rank, world,
                                                                       shape.micro_batch), token_bytes),
               max_steps=args.max_steps, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
               accumulation=shape.accumulation)


def train_on_tokens(args, model, tokenizer, summary, title, progress_stream, prepare=None, **fingerprints):
    """Train `model` on the token shards in args.tokens (pretraining from scratch or continued)."""
    flops_per_token = model_flops_per_token(model.config, args.seq_len)
    if args.compile:
        model = torch.compile(model)
    shape = RunShape.derive(args.global_batch_tokens, args.micro_batch, args.seq_len,
                            int(os.environ.get("WORLD_SIZE", 1)))

    def make_job(engine):
        job = pretraining_job(args, shape, engine.rank, engine.world, tokenizer)
        job.flops_per_token = flops_per_token
        return job

    # Paths are left out: the data fingerprint already names the tokenizer by its hash.
    run_dir = args.checkpoint_root / run_id(args, {"tokenizer", "model"}, **fingerprints,
                                            data=data_fingerprint(read_json(args.tokens / "index.json")))
    summary.update(parameters=model.num_parameters(), tokens_per_step=shape.tokens_per_step,
                   gradient_accumulation=shape.accumulation)
    run_training(args, model, shape, make_job, run_dir, tokenizer, summary, title, progress_stream, prepare)


def run(args, progress_stream):
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build_model(args.preset, tokenizer, args.seq_len, args.tie_embeddings, args.attention)
    train_on_tokens(args, model, tokenizer, {"preset": args.preset},
                    f"pretraining ({args.preset}, {{engine}}, processes: {{world}})", progress_stream)


if __name__ == "__main__":
    stage_cli("pretrain", __doc__, add_arguments, run)

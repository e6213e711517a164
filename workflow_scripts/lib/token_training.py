"""Training on the token shards, shared by pretraining from scratch and continued pretraining:
their options, the job that reads disjoint windows per rank, and the run around it."""
import argparse
import json
import os
from pathlib import Path

import torch

from workflow_scripts.lib.atomic_files import read_json
from workflow_scripts.lib.checkpoints import run_id, run_settings
from workflow_scripts.lib.engines import RunShape
from workflow_scripts.lib.metrics import evaluate, model_flops_per_token
from workflow_scripts.lib.token_data import Sampler, TokenWindows, token_byte_lengths, window_batches
from workflow_scripts.lib.training import Job, add_training_arguments, run_training


# What shapes a run on the token shards, beyond the shared training settings.
TOKEN_TRAINING_SETTINGS = ("attention", "compile", "seq_len", "micro_batch", "global_batch_tokens", "eval_windows")


def data_fingerprint(tokens_index):
    return tokens_index["tokenizer_sha1"] + json.dumps(tokens_index["splits"], sort_keys=True)


def add_token_training_arguments(ap):
    """Options of every stage that trains on the token shards (pretrain and continued_pretrain)."""
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


def train_on_tokens(args, model, tokenizer, summary, title, progress_stream, prepare=None, settings=(),
                    **fingerprints):
    """Train `model` on the token shards in args.tokens (pretraining from scratch or continued);
    `settings` names the stage's own options that shape the run, `fingerprints` its starting point."""
    flops_per_token = model_flops_per_token(model.config, args.seq_len)
    if args.compile:
        model = torch.compile(model)
    shape = RunShape.derive(args.global_batch_tokens, args.micro_batch, args.seq_len,
                            int(os.environ.get("WORLD_SIZE", 1)))

    def make_job(engine):
        job = pretraining_job(args, shape, engine.rank, engine.world, tokenizer)
        job.flops_per_token = flops_per_token
        return job

    run_dir = args.checkpoint_root / run_id(run_settings(args, *TOKEN_TRAINING_SETTINGS, *settings), **fingerprints,
                                            data=data_fingerprint(read_json(args.tokens / "index.json")))
    summary.update(parameters=model.num_parameters(), tokens_per_step=shape.tokens_per_step,
                   gradient_accumulation=shape.accumulation)
    run_training(args, model, shape, make_job, run_dir, tokenizer, summary, title, progress_stream, prepare)

"""Training on the token shards, shared by pretraining from scratch and continued pretraining:
their options, the job that reads disjoint windows per rank, and the run around it."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from workflow_scripts.lib.atomic_files import read_json
from workflow_scripts.lib.settings import add_settings, identity_settings, typed
from workflow_scripts.lib.training.checkpoints import run_id
from workflow_scripts.lib.training.engines import RunShape
from workflow_scripts.lib.training.metrics import evaluate, model_flops_per_token
from workflow_scripts.lib.training.model_presets import non_embedding_parameters
from workflow_scripts.lib.training.token_data import Sampler, TokenWindows, token_byte_lengths, window_batches
from workflow_scripts.lib.training.training import Job, Training, add_training_arguments, run_training


def data_fingerprint(tokens_index):
    return tokens_index["tokenizer_sha1"] + json.dumps(tokens_index["splits"], sort_keys=True)


def add_token_training_arguments(ap, section):
    """Options of every stage that trains on the token shards (pretrain and continued_pretrain)."""
    add_training_arguments(ap, section)
    ap.add_argument("--tokens", type=Path, required=True, help="directory with index.json and the token shards")
    add_settings(ap, section, "attention", "compile", "seq_len", "micro_batch", "global_batch_tokens", "eval_windows")


@dataclass(frozen=True)
class TokenRun:
    """What training on the token shards takes of a stage's options, beyond Training's."""
    tokens: Path
    checkpoint_root: Path
    seq_len: int
    micro_batch: int
    global_batch_tokens: int
    compile: bool
    max_steps: int
    eval_every: int
    eval_windows: int
    checkpoint_every: int
    seed: int


def pretraining_job(run, shape, rank, world, tokenizer):
    train = TokenWindows(run.tokens, "train", run.seq_len)
    validation = TokenWindows(run.tokens, "validation", run.seq_len)
    sampler = Sampler(train.count, run.seed, rank, world, shape.micro_batch)
    token_bytes = token_byte_lengths(tokenizer)

    def micro_batch(micro_step):
        draws = sampler.draws(micro_step)
        return train.batch([i for _, i in draws], [train.grid_shift(run.seed, epoch) for epoch, _ in draws])

    return Job(name="pretrain", micro_batch=micro_batch,
               evaluate=lambda engine: evaluate(engine, window_batches(validation, run.eval_windows, rank, world,
                                                                       shape.micro_batch), token_bytes),
               max_steps=run.max_steps, eval_every=run.eval_every, checkpoint_every=run.checkpoint_every,
               accumulation=shape.accumulation)


def train_on_tokens(options, section, model, tokenizer, summary, title, progress_stream, prepare=None,
                    **fingerprints):
    """Train `model` on the token shards (pretraining from scratch or continued), given the stage's
    options as a mapping; the run is named by the settings of its config section that change
    results and by `fingerprints`, its starting point."""
    run = typed(TokenRun, options)
    flops_per_token = model_flops_per_token(model.config, run.seq_len)
    summary.update(parameters=model.num_parameters(), non_embedding_parameters=non_embedding_parameters(model),
                   flops_per_token=flops_per_token)
    if run.compile:
        model = torch.compile(model)
    shape = RunShape.derive(run.global_batch_tokens, run.micro_batch, run.seq_len, int(os.environ.get("WORLD_SIZE", 1)))

    def make_job(engine):
        job = pretraining_job(run, shape, engine.rank, engine.world, tokenizer)
        job.flops_per_token = flops_per_token
        return job

    run_dir = run.checkpoint_root / run_id(identity_settings(options, section), **fingerprints,
                                           data=data_fingerprint(read_json(run.tokens / "index.json")))
    summary.update(tokens_per_step=shape.tokens_per_step,
                   gradient_accumulation=shape.accumulation)
    run_training(typed(Training, options), model, (shape.micro_batch, shape.accumulation), make_job, run_dir,
                 tokenizer, summary, title, progress_stream, prepare)

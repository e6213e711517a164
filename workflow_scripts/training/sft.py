"""Chat fine-tuning (SFT) of a causal LM, loss on assistant tokens only; full or LoRA; resumable.

    accelerate launch --num_processes 1 -m workflow_scripts.training.sft --model results/base_model \
        --data results/chat_data/sft.jsonl:1 --out results/sft_model \
        --checkpoint-root results/checkpoints/sft_model --metrics m.jsonl --plot loss.png --summary s.json

--data takes PATH:WEIGHT pairs; the format of each file (Alpaca, ShareGPT, messages) is detected
from its first record. A weight w takes each record floor(w) times plus a seeded share w - floor(w)
of them once more, so 0.5 keeps half a file and 2 doubles it. In the workflow, chat_data has read,
checked and mixed the configured files already, and this stage gets its one normalised file.
Samples are rendered with the model's chat template and labelled on assistant tokens only
(workflow_scripts.lib.training.sft_data), then bucketed by length into micro-batches of at most --batch-tokens
tokens (padding stays small without packing samples into one another's attention). A seeded share
of samples is held out for validation. --replay-share mixes windows of pretraining text
(--replay-tokens, every token trained) among the training samples, so that the chat model keeps
what pretraining taught (benchmarks/sft_forgetting.py). --epochs, when set, makes the number of
steps that many passes over the training batches (instead of --max-steps). Training,
checkpoints, resume and metrics are the pretraining machinery's (workflow_scripts/lib/training/training.py
and the modules it uses); LoRA adapters (peft) are merged into the saved model.
"""
import argparse
import array
import hashlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workflow_scripts.lib.atomic_files import read_json
from workflow_scripts.lib.settings import add_settings, identity_settings, typed
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.checkpoints import run_id
from workflow_scripts.lib.training.metrics import evaluate
from workflow_scripts.lib.training.models import (Lora, add_method_arguments, merge_lora, model_fingerprint,
                                                  require_model_dir, with_lora)
from workflow_scripts.lib.training.sft_data import IGNORE_INDEX
from workflow_scripts.lib.training.sft_data import ReadStats, encode, read_conversations, weighted
from workflow_scripts.lib.training.token_data import Sampler, TokenWindows
from workflow_scripts.lib.training.token_training import data_fingerprint
from workflow_scripts.lib.training.training import Job, Training, add_training_arguments, run_training, set_seed


def parse_data(spec):
    path, _, weight = spec.rpartition(":")
    if not path or not weight:
        raise argparse.ArgumentTypeError(f"{spec!r} is not PATH:WEIGHT")
    return Path(path), float(weight)


def load_samples(data, tokenizer, max_len, skip_bad, seed):
    """Encoded (input_ids, labels) samples of every file, mixed by weight, with per-file counts."""
    if not tokenizer.chat_template:
        raise StageError("the starting model's tokenizer has no chat template; give sft.base a model whose "
                         "tokenizer_config.json has one (this workflow's base_model does)")
    rng = random.Random(seed)
    samples, report = [], {}
    for path, weight in data:
        if not path.is_file():
            raise StageError(f"{path}: no such file (sft.data in config.yaml)")
        stats = ReadStats()
        encoded = [encode(tokenizer, messages, max_len) for messages in read_conversations(path, skip_bad, stats)]
        mixed = weighted(encoded, weight, rng)
        samples += mixed
        report[str(path)] = {"records": stats.records, "skipped_bad": stats.skipped,
                             "trimmed_unanswered": stats.trimmed_unanswered, "weight": weight, "samples": len(mixed)}
        for error in stats.errors[:5]:
            log.warning("%s: skipped %s", path, error)
    if not samples:
        raise StageError(f"{', '.join(str(path) for path, _ in data)} gave no samples; check their weights")
    return samples, report


def length_buckets(samples, batch_tokens, seed):
    """Micro-batches of similar-length samples, at most batch_tokens padded tokens each, in seeded order."""
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i][0]), i))
    batches, current, longest = [], [], 0
    for i in order:
        length = len(samples[i][0])
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    random.Random(seed).shuffle(batches)
    return batches


def collate(samples, indices, pad_id):
    """(inputs, targets) padded on the right; targets are the labels shifted by one, -100 on padding."""
    width = max(len(samples[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(indices):
        ids[row, :len(samples[i][0])] = torch.tensor(samples[i][0])
        labels[row, :len(samples[i][1])] = torch.tensor(samples[i][1])
    return ids[:, :-1], labels[:, 1:]


def digest(samples):
    """SHA-1 of every sample's length, token ids and labels, as 32-bit integers: json.dumps of them
    all took 1.3 s and a 100 MB string for 20,000 samples of 400 tokens, this 0.3 s and no copy."""
    sha = hashlib.sha1()
    for ids, labels in samples:
        sha.update(array.array("i", [len(ids), *ids, *labels]).tobytes())
    return sha.hexdigest()


def replay_fingerprint(replay_tokens, replay):
    """The replayed windows follow from the token shards, the seed and settings already in the run id:
    the shards' fingerprint names them without hashing every replayed token."""
    return data_fingerprint(read_json(replay_tokens / "index.json")) if replay else ""


def split_validation(samples, fraction, seed):
    held_out = set(random.Random(seed + 1).sample(range(len(samples)), math.ceil(len(samples) * fraction)))
    return ([s for i, s in enumerate(samples) if i not in held_out],
            [s for i, s in enumerate(samples) if i in held_out])


def add_arguments(ap):
    add_training_arguments(ap, "sft")
    ap.add_argument("--model", type=Path, required=True, help="starting Hugging Face causal-LM directory")
    ap.add_argument("--data", type=parse_data, nargs="+", required=True, help="PATH:WEIGHT of each chat file")
    add_settings(ap, "sft", "skip_bad_records", "max_len", "batch_tokens", "accumulation", "validation_fraction",
                 "epochs", "replay_share")
    ap.add_argument("--replay-tokens", type=Path,
                    help="token shards of the pretraining corpus (results/tokens), made by the model's tokenizer")
    add_method_arguments(ap, "sft")


@dataclass(frozen=True)
class SftRun:
    """What SFT's own steps take of its options (the loop's are lib.training.training.Training)."""
    replay_tokens: Path | None
    replay_share: float
    max_len: int
    batch_tokens: int
    accumulation: int
    validation_fraction: float
    max_steps: int
    eval_every: int
    checkpoint_every: int
    seed: int


def replay_windows(run, samples):
    """Pretraining text mixed into SFT's training samples, so that the chat model keeps what it
    learnt: windows of max_len tokens of the train split, every token trained, as many as make
    replay_share of the trained tokens, drawn with the seed."""
    if not run.replay_share:
        return []
    if run.replay_tokens is None:
        raise StageError("--replay-share needs --replay-tokens (the token shards the base model was trained on); "
                         "give them, or --replay-share 0 to fine-tune without replay")
    windows = TokenWindows(run.replay_tokens, "train", run.max_len - 1)
    chat_tokens = sum(label != IGNORE_INDEX for _, labels in samples for label in labels)
    count = math.ceil(run.replay_share / (1 - run.replay_share) * chat_tokens / windows.window)
    rng = random.Random(run.seed + 2)
    replay = []
    for _ in range(count):
        ids = windows.read(rng.randrange(windows.count)).tolist()
        replay.append((ids, ids))
    return replay


def training_split(run, samples, replay):
    """(training samples with the replayed text, held-out chats)."""
    train_samples, validation = split_validation(samples, run.validation_fraction, run.seed)
    return train_samples + replay, validation


def steps_for_epochs(run, epochs, train_samples, world):
    """Optimizer steps for `epochs` passes: each step takes accumulation micro-batches per process."""
    batches = len(length_buckets(train_samples, run.batch_tokens, run.seed))
    return max(1, math.ceil(epochs * batches / (run.accumulation * world)))


def sft_job(run, train_samples, validation, pad_id, rank, world):
    train_batches = length_buckets(train_samples, run.batch_tokens, run.seed)
    sampler = Sampler(len(train_batches), run.seed, rank, world, 1)
    mine = length_buckets(validation, run.batch_tokens, run.seed)[rank::world]
    return Job(name="sft",
               micro_batch=lambda step: collate(train_samples, train_batches[sampler.indices(step)[0]], pad_id),
               evaluate=lambda engine: evaluate(engine, (collate(validation, b, pad_id) for b in mine)),
               max_steps=run.max_steps, eval_every=run.eval_every, checkpoint_every=run.checkpoint_every,
               accumulation=run.accumulation)


def run(args, progress_stream):
    set_seed(args.seed)
    require_model_dir(args.model, "set sft.base")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    samples, data_report = load_samples(args.data, tokenizer, args.max_len, args.skip_bad_records, args.seed)
    sft = typed(SftRun, vars(args))
    replay = replay_windows(sft, samples)
    train_samples, validation = training_split(sft, samples, replay)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if args.epochs:  # the steps the epochs take are the run's max_steps, its identity's and the loop's
        args.max_steps = steps_for_epochs(sft, args.epochs, train_samples, world)
        sft = typed(SftRun, vars(args))
        log.info("%s epochs: %d steps", args.epochs, args.max_steps)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    # A chat model's turn ends at <|im_end|>: generation stops there (or at the end of text).
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    if args.method == "lora":
        model = with_lora(model, typed(Lora, vars(args)))
    summary = {"method": args.method, "trainable_parameters": sum(p.numel() for p in model.parameters()
                                                                  if p.requires_grad),
               "samples": len(samples), "replay_windows": len(replay), "data": data_report}
    run_dir = args.checkpoint_root / run_id(identity_settings(vars(args), "sft"), model=model_fingerprint(args.model),
                                            samples=digest(samples),
                                            replay=replay_fingerprint(args.replay_tokens, replay))
    # A micro-batch is one padded batch of up to batch_tokens tokens (rows vary with length).
    run_training(typed(Training, vars(args)), model, (1, args.accumulation),
                 lambda engine: sft_job(sft, train_samples, validation, tokenizer.pad_token_id, engine.rank,
                                        engine.world),
                 run_dir, tokenizer, summary, f"SFT ({args.method}, {{engine}}, processes: {{world}})",
                 progress_stream, merge_lora if args.method == "lora" else None)


if __name__ == "__main__":
    stage_cli("sft", __doc__, add_arguments, run)

"""The training loop pretraining, continued pretraining and SFT share, with its settings and seeding.

A stage builds its model and a Job (its batches and evaluation); run_training wires the optimizer,
engine (engines.py), checkpoints (checkpoints.py) and metrics (metrics.py) around the loop.
"""
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json, write_text
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import log
from workflow_scripts.lib.training.checkpoints import Checkpoints, resume, save_model
from workflow_scripts.lib.training.engines import lr_lambda, make_engine, make_optimizer
from workflow_scripts.lib.training.metrics import Metrics, Tracking, peak_flops, plot_curves
from workflow_scripts.lib.training.sft_data import IGNORE_INDEX
from workflow_scripts.lib.training.stop_signals import StopRequests, TrainingStopped


def set_seed(seed):
    """Seed every generator; on CPU also ask for deterministic kernels, so runs are bitwise
    reproducible (the resume tests compare losses exactly)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class Job:
    """What a stage gives the shared training loop."""
    name: str
    micro_batch: object  # micro_step -> (inputs, targets) for this rank
    evaluate: object  # engine -> {"val_loss": ..., ...}
    max_steps: int
    eval_every: int
    checkpoint_every: int
    accumulation: int
    flops_per_token: float = 0.0


def train(engine, job: Job, state, checkpoints, metrics, progress_stream, stop):
    """Steps state["step"]..job.max_steps: metrics every step, evaluation and checkpoints on schedule,
    and a checkpoint and TrainingStopped after the step in flight when a stop signal came."""
    peak = peak_flops(engine.world)
    bar = tqdm(total=job.max_steps, initial=state["step"], desc=job.name, unit="step", file=progress_stream,
               mininterval=5, disable=engine.rank != 0)
    for step in range(state["step"], job.max_steps):
        # Timed from the batch reads to the synchronising all-reduce: evaluations and checkpoint
        # saves between steps are not training throughput.
        started = time.perf_counter()
        batches = [job.micro_batch(step * job.accumulation + a) for a in range(job.accumulation)]
        trained = torch.tensor(float(sum(int((t != IGNORE_INDEX).sum()) for _, t in batches)))
        lr = engine.scheduler.get_last_lr()[0]
        loss, grad_norm = engine.train_step(batches)
        step_tokens = int(engine.all_reduce_sum(trained).item())
        tokens_per_s = step_tokens / (time.perf_counter() - started)
        state = {"step": step + 1, "tokens": state["tokens"] + step_tokens}
        record = {**state, "loss": engine.all_reduce_sum(loss.double()).item() / engine.world, "lr": lr,
                  "grad_norm": grad_norm, "tokens_per_s": round(tokens_per_s), "time": round(time.time(), 3)}
        if peak and job.flops_per_token:
            record["mfu"] = round(job.flops_per_token * tokens_per_s / peak, 4)
        if state["step"] % job.eval_every == 0 or state["step"] == job.max_steps:
            record.update(job.evaluate(engine))
        metrics.write(record)
        bar.set_postfix({"loss": f"{record['loss']:.3f}", "tokens/s": f"{record['tokens_per_s']:,}"}, refresh=False)
        bar.update()
        scheduled = state["step"] % job.checkpoint_every == 0 and state["step"] < job.max_steps
        signum = stop.requested(engine.all_reduce_sum) if state["step"] < job.max_steps else None
        if scheduled or signum:
            saved = checkpoints.save(engine, state["step"], state)
        if signum:
            bar.close()
            raise TrainingStopped(signum, state["step"], job.max_steps, saved)
    bar.close()


def finish(engine, metrics, outputs, summary, title):
    """metrics.jsonl, the loss-curve PNG and summary.json (`outputs`' paths) for the rule (rank 0)."""
    if engine.rank != 0:
        return
    records = metrics.records()
    evals = [r for r in records if "val_loss" in r]
    late = records[len(records) // 2:]
    summary.update(engine=engine.name, processes=engine.world, steps=records[-1]["step"],
                   tokens=records[-1]["tokens"], first_loss=records[0]["loss"], final_loss=records[-1]["loss"],
                   **{k: v for k, v in evals[-1].items() if k.startswith("val_")},
                   tokens_per_s=round(sum(r["tokens_per_s"] for r in late) / len(late)))
    if "mfu" in records[-1]:
        summary["mfu"] = sum(r["mfu"] for r in late) / len(late)
        summary["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    write_text(outputs.metrics, "".join(json.dumps(r) + "\n" for r in records))
    plot_curves(records, outputs.plot, title)
    write_json(outputs.summary, summary)
    log.info("%s", summary)


def add_training_arguments(ap, section):
    """The options every training stage of ours shares, defined by its config section."""
    add_settings(ap, section, "engine", "zero_stage", "eval_every")
    add_optimisation_arguments(ap, section)


def add_optimisation_arguments(ap, section):
    """Steps, schedule, regularisation, checkpoints, seed and outputs: what DPO, whose trainer (trl's)
    brings its own engine and has no held-out data, shares with the other training stages."""
    add_settings(ap, section, "max_steps", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "clip",
                 "checkpoint_every", "keep_checkpoints", "seed")
    add_settings(ap, "tracking", "backends")
    ap.add_argument("--checkpoint-root", type=Path, required=True, help="checkpoints go to a run directory here")
    ap.add_argument("--out", type=Path, required=True, help="Hugging Face model directory")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSONL")
    ap.add_argument("--plot", type=Path, required=True, help="loss-curve PNG")
    ap.add_argument("--summary", type=Path, required=True, help="summary JSON")


@dataclass(frozen=True)
class Training:
    """What run_training takes of a training stage's options: the optimizer and its schedule, the
    engine, the checkpoints kept, and the rule's outputs."""
    engine: str
    zero_stage: int
    max_steps: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    clip: float
    keep_checkpoints: int
    backends: list
    out: Path
    metrics: Path
    plot: Path
    summary: Path


def hyperparameters(training, summary, run_dir):
    """What the trackers show of a run's settings: the optimisation's, the model's size and batch as
    the stage's summary states them, and the run identity."""
    settings = {key: value for key, value in asdict(training).items() if not isinstance(value, Path)}
    return {**settings, **{key: value for key, value in summary.items() if isinstance(value, (int, float, str))},
            "run": run_dir.name}


def run_training(training, model, batching, make_job, run_dir, tokenizer, summary, title, progress_stream,
                 prepare=None):
    """Optimizer, engine, resume, the loop, the saved model and the rule's metrics/plot/summary.
    `batching` is (rows per micro-batch, micro-batches per step); `make_job(engine)` gives the
    stage's Job; `title` is formatted with the engine's name and process count."""
    stop = StopRequests()
    optimizer = make_optimizer(model, training.lr, training.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(training.warmup_steps, training.max_steps,
                                                                       training.min_lr_ratio))
    engine = make_engine(training.engine, training.zero_stage, model, optimizer, scheduler, training.clip, *batching)
    job = make_job(engine)
    checkpoints = Checkpoints(run_dir, training.keep_checkpoints)
    state = resume(engine, checkpoints)
    tracking = Tracking(training.backends, run_dir, hyperparameters(training, summary, run_dir),
                        state["step"]) if engine.rank == 0 else None
    metrics = Metrics(checkpoints.root / "metrics.jsonl", engine.rank, state["step"], tracking)
    engine.barrier()
    train(engine, job, state, checkpoints, metrics, progress_stream, stop)
    if tracking:
        tracking.finish()
    save_model(engine, tokenizer, training.out, prepare)
    finish(engine, metrics, training, summary, title.format(engine=engine.name, world=engine.world))

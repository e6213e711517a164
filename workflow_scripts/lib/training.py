"""The training loop pretraining, continued pretraining and SFT share, with its settings and seeding.

A stage builds its model and a Job (its batches and evaluation); run_training wires the optimizer,
engine (engines.py), checkpoints (checkpoints.py) and metrics (metrics.py) around the loop.
"""
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from workflow_scripts.lib.checkpoints import Checkpoints, resume, save_model
from workflow_scripts.lib.atomic_files import write_json, write_text
from workflow_scripts.lib.loss_labels import IGNORE_INDEX
from workflow_scripts.lib.stage_cli import log
from workflow_scripts.lib.engines import lr_lambda, make_engine, make_optimizer
from workflow_scripts.lib.metrics import Metrics, peak_flops, plot_curves


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


def train(engine, job: Job, state, checkpoints, metrics, progress_stream):
    """Steps state["step"]..job.max_steps: metrics every step, evaluation and checkpoints on schedule."""
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
        bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        bar.update()
        if state["step"] % job.checkpoint_every == 0 and state["step"] < job.max_steps:
            checkpoints.save(engine, state["step"], state)
    bar.close()


def finish(engine, metrics, outputs, summary, title):
    """metrics.jsonl, the loss-curve PNG and summary.json for the rule's outputs (rank 0)."""
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
    write_text(outputs["metrics"], "".join(json.dumps(r) + "\n" for r in records))
    plot_curves(records, outputs["plot"], title)
    write_json(outputs["summary"], summary)
    log.info("%s", summary)


def add_training_arguments(ap, **defaults):
    """The options every training stage of ours shares; `defaults` overrides the stage's own defaults."""
    ap.add_argument("--engine", choices=("ddp", "deepspeed"), default="ddp")
    ap.add_argument("--zero-stage", type=int, choices=(2, 3), default=2)
    ap.add_argument("--eval-every", type=int, default=25)
    add_optimisation_arguments(ap, **defaults)


def add_optimisation_arguments(ap, **defaults):
    """Steps, schedule, regularisation, checkpoints, seed and outputs: what DPO, whose trainer (trl's)
    brings its own engine and has no held-out data, shares with the other training stages."""
    settings = {"max_steps": 100, "lr": 3e-3, "warmup_steps": 10, "weight_decay": 0.1, "min_lr_ratio": 0.1,
                "checkpoint_every": 25, **defaults}
    ap.add_argument("--max-steps", type=int, default=settings["max_steps"])
    ap.add_argument("--lr", type=float, default=settings["lr"])
    ap.add_argument("--min-lr-ratio", type=float, default=settings["min_lr_ratio"])
    ap.add_argument("--warmup-steps", type=int, default=settings["warmup_steps"])
    ap.add_argument("--weight-decay", type=float, default=settings["weight_decay"])
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--checkpoint-every", type=int, default=settings["checkpoint_every"])
    ap.add_argument("--keep-checkpoints", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-root", type=Path, required=True, help="checkpoints go to a run directory here")
    ap.add_argument("--out", type=Path, required=True, help="Hugging Face model directory")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSONL")
    ap.add_argument("--plot", type=Path, required=True, help="loss-curve PNG")
    ap.add_argument("--summary", type=Path, required=True, help="summary JSON")


def run_training(args, model, shape, make_job, run_dir, tokenizer, summary, title, progress_stream, prepare=None):
    """Optimizer, engine, resume, the loop, the saved model and the rule's metrics/plot/summary.

    `args` carries the shared settings (lr, weight_decay, warmup_steps, max_steps, min_lr_ratio,
    clip, engine, zero_stage, keep_checkpoints, out, metrics, plot, summary); `make_job(engine)`
    gives the stage's Job; `title` is formatted with the engine's name and process count."""
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup_steps, args.max_steps,
                                                                       args.min_lr_ratio))
    engine = make_engine(args.engine, args.zero_stage, model, optimizer, scheduler, args.clip, shape)
    job = make_job(engine)
    checkpoints = Checkpoints(run_dir, args.keep_checkpoints)
    state = resume(engine, checkpoints)
    metrics = Metrics(checkpoints.root / "metrics.jsonl", engine.rank, state["step"])
    engine.barrier()
    train(engine, job, state, checkpoints, metrics, progress_stream)
    save_model(engine, tokenizer, args.out, prepare)
    finish(engine, metrics, vars(args), summary, title.format(engine=engine.name, world=engine.world))

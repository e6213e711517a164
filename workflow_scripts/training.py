"""The training machinery pretraining and SFT share: data, schedule, engines, checkpoints, metrics.

Engines: `ddp` runs under accelerate (plain DDP, over NCCL on GPUs and gloo on CPUs); `deepspeed`
calls deepspeed.initialize itself with a ZeRO config from configs/deepspeed/, because
accelerate's DeepSpeed integration does not start a distributed run without GPUs (each process
then trains alone), and both must be testable on a CPU. Either way the launcher is
`accelerate launch` (which also sets RANK/WORLD_SIZE for DeepSpeed).

Checkpoints go to a run directory named by a hash of every setting that shapes the run, outside
the rule's outputs, so Snakemake never deletes them: each is written to `step-N.tmp` and renamed
only once complete, so a kill mid-write leaves the previous one the latest good checkpoint.
"""
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tqdm import tqdm

from workflow_scripts.common import (IGNORE_INDEX, StageError, atomic_dir, file_digest, log, read_json, write_json,
                                     write_text)
from workflow_scripts.plots import plt, save_png

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"
# Dense bf16 peak of the accelerators MFU is reported for (tensor cores, no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def set_seed(seed):
    """Seed every generator; on CPU also ask for deterministic kernels, so runs are bitwise
    reproducible (the resume tests compare losses exactly)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def require_model_dir(model_dir: Path, remedy="build it with snakemake first"):
    """A one-line error, ending with `remedy`, unless model_dir is a Hugging Face model directory."""
    if not (Path(model_dir) / "config.json").is_file():
        raise StageError(f"{model_dir}: not a model directory (no config.json); {remedy}")


def load_causal_lm(model_dir: Path):
    """(model in eval mode, on the GPU when there is one; tokenizer) of a Hugging Face directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    require_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    return model, tokenizer


class TokenWindows:
    """Fixed-length windows over the concatenated token shards of one split, memory-mapped."""

    def __init__(self, tokens_dir: Path, split, seq_len):
        index = read_json(tokens_dir / "index.json")
        if split not in index["splits"]:
            raise StageError(f"{tokens_dir / 'index.json'}: no {split!r} split; rerun the tokens rule")
        self.shards = [np.memmap(tokens_dir / s["file"], dtype=index["dtype"], mode="r")
                       for s in index["splits"][split]["shards"] if s["tokens"]]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])
        self.window = seq_len + 1
        self.count = int(self.starts[-1]) // self.window
        if self.count == 0:
            raise StageError(f"the {split} split has {self.starts[-1]} tokens, fewer than one window of "
                             f"{self.window}; lower pretrain.seq_len or use more data")

    def read(self, i):
        """Window i as int64 tokens (it may span two shards)."""
        start, end = i * self.window, (i + 1) * self.window
        parts = []
        while start < end:
            shard = int(np.searchsorted(self.starts, start, side="right")) - 1
            stop = min(end, int(self.starts[shard + 1]))
            parts.append(self.shards[shard][start - self.starts[shard]:stop - self.starts[shard]])
            start = stop
        return torch.from_numpy(np.concatenate(parts).astype(np.int64))

    def batch(self, indices):
        windows = torch.stack([self.read(i) for i in indices])
        return windows[:, :-1], windows[:, 1:]


class Sampler:
    """Which windows each rank reads at each micro-step: a seeded permutation per epoch, cut so
    that ranks never share a window within an epoch. Its whole state is the micro-step."""

    def __init__(self, count, seed, rank, world, micro_batch):
        self.count, self.seed, self.rank, self.world, self.micro_batch = count, seed, rank, world, micro_batch
        self._perms = {}

    def _perm(self, epoch):
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.count)}
        return self._perms[epoch]

    def indices(self, micro_step):
        first = (micro_step * self.world + self.rank) * self.micro_batch
        return [int(self._perm(k // self.count)[k % self.count]) for k in range(first, first + self.micro_batch)]


def lr_lambda(warmup_steps, total_steps, min_lr_ratio):
    """Linear warmup, then cosine decay to min_lr_ratio of the peak."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def token_byte_lengths(tokenizer):
    """UTF-8 bytes each token stands for (0 for special tokens), for bits per byte."""
    # A ByteLevel vocabulary spells each byte as one character, so a token's length is its byte count.
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    for token, token_id in tokenizer.get_vocab().items():
        lengths[token_id] = 0 if token_id in special else len(token)
    return torch.from_numpy(lengths)


def causal_lm_loss(model, inputs, targets, reduction="mean"):
    """Cross-entropy of next-token targets (already shifted); targets of -100 are not trained on."""
    logits = model(input_ids=inputs).logits.float()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)


@dataclass
class RunShape:
    """Batch geometry derived from the settings; a bad combination is a one-line error."""
    micro_batch: int
    seq_len: int
    world: int
    accumulation: int

    @classmethod
    def derive(cls, global_batch_tokens, micro_batch, seq_len, world):
        per_micro_step = micro_batch * seq_len * world
        if global_batch_tokens % per_micro_step:
            raise StageError(f"pretrain.global_batch_tokens {global_batch_tokens} is not a multiple of "
                             f"micro_batch x seq_len x processes = {per_micro_step}")
        return cls(micro_batch, seq_len, world, global_batch_tokens // per_micro_step)

    @property
    def tokens_per_step(self):
        return self.micro_batch * self.seq_len * self.world * self.accumulation


class AccelerateEngine:
    """DDP through accelerate; manual gradient accumulation with no_sync on all but the last micro-step."""
    name = "ddp"

    def __init__(self, model, optimizer, scheduler, clip, mixed_precision):
        from accelerate import Accelerator
        self.acc = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.scheduler, self.clip = scheduler, clip
        self.rank, self.world, self.device = self.acc.process_index, self.acc.num_processes, self.acc.device

    def train_step(self, batches):
        losses = []
        for n, (inputs, targets) in enumerate(batches):
            sync = n == len(batches) - 1
            with contextlib.nullcontext() if sync else self.acc.no_sync(self.model):
                loss = causal_lm_loss(self.model, inputs.to(self.device), targets.to(self.device))
                self.acc.backward(loss / len(batches))
            losses.append(loss.detach())
        grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack(losses).mean(), float(grad_norm)

    def all_reduce_sum(self, tensor):
        return self.acc.reduce(tensor.to(self.device), "sum")

    def barrier(self):
        self.acc.wait_for_everyone()

    def save(self, directory):
        self.acc.save_state(str(directory))
        if self.rank == 0:
            torch.save(self.scheduler.state_dict(), directory / "scheduler.pt")

    def load(self, directory):
        self.acc.load_state(str(directory))
        self.scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))

    def unwrapped_state(self):
        """(model, state_dict) to save on rank 0."""
        model = self.acc.unwrap_model(self.model)
        return model, model.state_dict()

    @property
    def module(self):
        return self.acc.unwrap_model(self.model)


class DeepSpeedEngine:
    """deepspeed.initialize with configs/deepspeed/zero{2,3}.json; the engine accumulates and clips."""
    name = "deepspeed"

    def __init__(self, model, optimizer, scheduler, clip, mixed_precision, zero_stage, shape):
        import deepspeed
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        config = json.loads((DEEPSPEED_CONFIGS / f"zero{zero_stage}.json").read_text())
        config.update(train_micro_batch_size_per_gpu=shape.micro_batch,
                      gradient_accumulation_steps=shape.accumulation, gradient_clipping=clip,
                      bf16={"enabled": mixed_precision == "bf16"})
        config.pop("train_batch_size", None)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.device = self.model.device
        self.zero_stage = zero_stage

    def train_step(self, batches):
        losses = []
        for inputs, targets in batches:
            loss = causal_lm_loss(self.model, inputs.to(self.device), targets.to(self.device))
            self.model.backward(loss)
            self.model.step()
            losses.append(loss.detach())
        return torch.stack(losses).mean(), float(self.model.get_global_grad_norm() or 0.0)

    def all_reduce_sum(self, tensor):
        tensor = tensor.to(self.device)
        torch.distributed.all_reduce(tensor)
        return tensor

    def barrier(self):
        torch.distributed.barrier()

    def save(self, directory):
        self.model.save_checkpoint(str(directory), tag="engine")

    def load(self, directory):
        path, _ = self.model.load_checkpoint(str(directory), tag="engine")
        if path is None:
            raise StageError(f"{directory}: DeepSpeed could not load this checkpoint; delete it to start over")

    def unwrapped_state(self):
        state = self.model._zero3_consolidated_16bit_state_dict() if self.zero_stage == 3 else \
            self.model.module.state_dict()
        return self.model.module, state

    @property
    def module(self):
        return self.model.module


class Checkpoints:
    """step-N directories in a run directory: written as step-N.tmp, renamed when complete, last K kept."""

    def __init__(self, root: Path, keep):
        self.root, self.keep = root, keep

    def complete(self):
        steps = [p for p in self.root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")]
        return sorted(steps, key=lambda p: int(p.name.split("-")[1]))

    def latest(self):
        done = self.complete()
        return done[-1] if done else None

    def save(self, engine, step, state):
        final = self.root / f"step-{step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        if engine.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        engine.barrier()
        engine.save(tmp)
        engine.barrier()
        if engine.rank == 0:
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            os.replace(tmp, final)
            for old in self.complete()[:-self.keep]:
                shutil.rmtree(old)
        engine.barrier()
        return final


class Metrics:
    """metrics.jsonl in the run directory, cut back to the resumed step so the curve has no repeats."""

    def __init__(self, path: Path, rank, resume_step):
        self.path, self.rank = path, rank
        path.parent.mkdir(parents=True, exist_ok=True)
        if rank == 0 and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record):
        if self.rank == 0:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def records(self):
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []


def evaluate(engine, batches, token_bytes=None):
    """Mean loss per trained token over this rank's (inputs, targets) batches, summed over ranks,
    and bits per byte when token_bytes (UTF-8 bytes per token id) is given."""
    engine.model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for inputs, targets in batches:
            nats = causal_lm_loss(engine.model, inputs.to(engine.device), targets.to(engine.device),
                                  reduction="none").cpu().double()
            trained = targets.flatten() != IGNORE_INDEX
            nbytes = token_bytes[targets.flatten()[trained]].sum().double() if token_bytes is not None else 0.0
            totals += torch.stack([nats.sum(), trained.sum().double(), torch.as_tensor(nbytes, dtype=torch.float64)])
    engine.model.train()
    nats, tokens, nbytes = engine.all_reduce_sum(totals).tolist()
    result = {"val_loss": nats / max(1.0, tokens)}
    if token_bytes is not None:
        result["val_bpb"] = nats / (math.log(2) * max(1.0, nbytes))
    return result


def window_batches(data: TokenWindows, windows, rank, world, micro_batch):
    """The first `windows` windows of a split, this rank's share, in micro-batches."""
    mine = list(range(rank, min(windows, data.count), world))
    return (data.batch(mine[start:start + micro_batch]) for start in range(0, len(mine), micro_batch))


def model_flops_per_token(config, seq_len):
    """6N for the matmuls plus the attention scores (nanochat's estimate); N excludes embeddings."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter
    return 6 * (layers * per_layer + h * config.vocab_size) + 12 * layers * h * seq_len


def peak_flops(world):
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops * world for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def plot_curves(records, path: Path, title):
    """Training and validation loss against tokens seen, and the learning rate, as a PNG."""
    tokens = [r["tokens"] for r in records]
    evals = [r for r in records if "val_loss" in r]
    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[3, 1])
    loss_ax.plot(tokens, [r["loss"] for r in records], label="train loss", linewidth=1)
    loss_ax.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation loss")
    loss_ax.set_ylabel("cross-entropy (nats/token)")
    loss_ax.set_title(title)
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    lr_ax.plot(tokens, [r["lr"] for r in records], color="tab:gray")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("tokens seen")
    lr_ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


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


def make_engine(engine_name, zero_stage, model, optimizer, scheduler, clip, shape):
    mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if engine_name == "deepspeed":
        return DeepSpeedEngine(model, optimizer, scheduler, clip, mixed, zero_stage, shape)
    return AccelerateEngine(model, optimizer, scheduler, clip, mixed)


def make_optimizer(model, lr, weight_decay):
    """AdamW, decay on matrices only; fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=torch.cuda.is_available())


def resume(engine, checkpoints):
    """Load the latest checkpoint of this run, if any; the trainer state it was saved with."""
    latest = checkpoints.latest()
    if latest is None:
        return {"step": 0, "tokens": 0}
    engine.load(latest)
    log.info("resuming from %s", latest)
    return json.loads((latest / "trainer_state.json").read_text())


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


def save_model(engine, tokenizer, out, prepare=None):
    """The trained model (after `prepare`, e.g. merging LoRA) and its tokenizer as a Hugging Face directory."""
    model, state = engine.unwrapped_state()
    if engine.rank == 0:
        if prepare is not None:
            model, state = prepare(model, state)
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp, save_jinja_files=False)
    engine.barrier()


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


# Arguments that do not change what is trained; the rest name a run's checkpoint directory.
NOT_IN_RUN_ID = {"out", "checkpoint_root", "metrics", "plot", "summary", "log", "eval_every", "checkpoint_every",
                 "keep_checkpoints"}


def run_id(args, exclude=(), **fingerprints):
    """A hash of the settings that shape the run, the stage's data/model fingerprints and the world size."""
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in NOT_IN_RUN_ID | set(exclude)}
    settings.update(fingerprints, world=os.environ.get("WORLD_SIZE", "1"))
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def add_training_arguments(ap, **defaults):
    """The options every training stage shares; `defaults` overrides the stage's own defaults."""
    settings = {"max_steps": 100, "lr": 3e-3, "warmup_steps": 10, "weight_decay": 0.1, **defaults}
    ap.add_argument("--engine", choices=("ddp", "deepspeed"), default="ddp")
    ap.add_argument("--zero-stage", type=int, choices=(2, 3), default=2)
    ap.add_argument("--max-steps", type=int, default=settings["max_steps"])
    ap.add_argument("--lr", type=float, default=settings["lr"])
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=settings["warmup_steps"])
    ap.add_argument("--weight-decay", type=float, default=settings["weight_decay"])
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--checkpoint-every", type=int, default=25)
    ap.add_argument("--keep-checkpoints", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-root", type=Path, required=True, help="checkpoints go to a run directory here")
    ap.add_argument("--out", type=Path, required=True, help="Hugging Face model directory")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSONL")
    ap.add_argument("--plot", type=Path, required=True, help="loss-curve PNG")
    ap.add_argument("--summary", type=Path, required=True, help="summary JSON")


def model_fingerprint(model_dir: Path):
    """What names a starting model in a run id: its weights' hash."""
    weights = model_dir / "model.safetensors"
    return file_digest(weights) if weights.exists() else str(model_dir.resolve())


def add_method_arguments(ap):
    """Full fine-tuning or LoRA (peft), for the stages that start from an existing model."""
    ap.add_argument("--method", choices=("full", "lora"), default="full")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"])


def with_lora(model, args, **config):
    """The model with LoRA adapters on --lora-targets; `config` goes to peft's LoraConfig as well."""
    from peft import LoraConfig, get_peft_model
    lora = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.lora_targets, task_type="CAUSAL_LM", **config)
    return get_peft_model(model, lora)


def merge_lora(model, _state):
    """save_model's `prepare` for LoRA: the adapters folded into the weights, saved as a plain model."""
    merged = model.merge_and_unload()
    return merged, merged.state_dict()


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

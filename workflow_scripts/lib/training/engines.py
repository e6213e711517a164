"""The two training engines, their optimizer and schedule, and the batch geometry.

`ddp` runs under accelerate (plain DDP, over NCCL on GPUs and gloo on CPUs); `deepspeed` calls
deepspeed.initialize itself with a ZeRO config from config/deepspeed/, because accelerate's
DeepSpeed integration does not start a distributed run without GPUs (each process then trains
alone), and both must be testable on a CPU. Either way the launcher is `accelerate launch` (which
also sets RANK/WORLD_SIZE for DeepSpeed).
"""
import contextlib
import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from workflow_scripts.lib.stage_cli import StageError

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[3] / "config" / "deepspeed"


def lr_lambda(warmup_steps, total_steps, min_lr_ratio):
    """Linear warmup, then cosine decay to min_lr_ratio of the peak."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def causal_lm_loss(model, inputs, targets, reduction="mean"):
    """Cross-entropy of next-token targets (already shifted); targets of -100 are not trained on.

    The training mean comes from the model's own forward (shift_labels: ours are shifted already),
    so that a compiled model fuses the float upcast and softmax of its bf16 logits into its graph,
    as the transformers Trainer's does; evaluation's per-token losses are computed here."""
    if reduction == "mean":
        return model(input_ids=inputs, labels=targets, shift_labels=targets.contiguous()).loss
    logits = model(input_ids=inputs).logits.float()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)


def to_device(tensor, device):
    """Pinned and asynchronous on CUDA: a copy from pageable memory can wait for the GPU's queue to
    drain, which leaves the GPU idle while the next micro-step's kernels are launched."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
                loss = causal_lm_loss(self.model, to_device(inputs, self.device), to_device(targets, self.device))
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


def lone_process_world():
    """Makes a process started with no rendezvous (accelerate launch runs one process as a plain
    one) a world of one: without RANK and the rest, deepspeed.init_distributed looks for MPI and
    fails where mpi4py is missing (one GPU, or one CPU process, with pretrain.engine: deepspeed)."""
    if "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


# ZeRO's communication buckets, in elements. One larger than the model holds nothing more and only
# costs memory: DeepSpeed allocates the reduce bucket twice each micro-step, and with the configs'
# 2e8 (800 MB each) the demo model took 5.5 s a step on 2 CPU cores, 0.1 s with buckets of its size.
BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size")


def capped_buckets(zero, parameters):
    """The zero_optimization section with each bucket it sizes at most `parameters` elements."""
    return {**zero, **{key: min(zero[key], parameters) for key in BUCKET_KEYS if key in zero}}


class DeepSpeedEngine:
    """deepspeed.initialize with config/deepspeed/zero{2,3}.json; the engine accumulates and clips."""
    name = "deepspeed"

    def __init__(self, model, optimizer, scheduler, clip, mixed_precision, zero_stage, micro_batch, accumulation):
        import deepspeed
        lone_process_world()
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        config = json.loads((DEEPSPEED_CONFIGS / f"zero{zero_stage}.json").read_text())
        config["zero_optimization"] = capped_buckets(config["zero_optimization"],
                                                     sum(p.numel() for p in model.parameters()))
        config.update(train_micro_batch_size_per_gpu=micro_batch,
                      gradient_accumulation_steps=accumulation, gradient_clipping=clip,
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
            loss = causal_lm_loss(self.model, to_device(inputs, self.device), to_device(targets, self.device))
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


def make_engine(engine_name, zero_stage, model, optimizer, scheduler, clip, micro_batch, accumulation):
    """DeepSpeed counts micro_batch (a micro-batch's rows per process) and accumulation (micro-batches
    per step); accelerate's engine takes each micro-batch as it comes."""
    mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if engine_name == "deepspeed":
        return DeepSpeedEngine(model, optimizer, scheduler, clip, mixed, zero_stage, micro_batch, accumulation)
    return AccelerateEngine(model, optimizer, scheduler, clip, mixed)


def make_optimizer(model, lr, weight_decay):
    """AdamW, decay on matrices only; fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=torch.cuda.is_available())

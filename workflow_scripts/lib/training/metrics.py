"""What a training run reports: the metrics file, validation loss and bits per byte, MFU, loss curves."""
import json
import math
from pathlib import Path

import torch

from workflow_scripts.lib.plots import training_curves
from workflow_scripts.lib.training.engines import causal_lm_loss
from workflow_scripts.lib.model_shapes import flops_per_token
from workflow_scripts.lib.training.sft_data import IGNORE_INDEX

# Dense bf16 peak of the accelerators MFU is reported for (tensor cores, no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


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


def model_flops_per_token(config, seq_len):
    """Training FLOPs per token of a model's config (model_shapes.flops_per_token)."""
    sizes = {key: getattr(config, key) for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                   "num_key_value_heads", "intermediate_size")}
    return flops_per_token(config.vocab_size, seq_len, **sizes)


def peak_flops(world):
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops * world for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def plot_curves(records, path: Path, title):
    """Training and validation loss against tokens seen, and the learning rate, as a PNG."""
    tokens = [r["tokens"] for r in records]
    evals = [r for r in records if "val_loss" in r]
    losses = [(tokens, [r["loss"] for r in records], {"label": "train loss", "linewidth": 1}),
              ([r["tokens"] for r in evals], [r["val_loss"] for r in evals],
               {"label": "validation loss", "marker": "o"})]
    training_curves(path, title, "tokens seen", [("cross-entropy (nats/token)", losses),
                                                 ("learning rate", [(tokens, [r["lr"] for r in records],
                                                                     {"color": "tab:gray"})])], height_ratios=[3, 1])

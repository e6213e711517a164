"""What a training run reports: the metrics file, validation loss and bits per byte, MFU, loss curves,
and the experiment trackers.

Experiment tracking (config `tracking`): every training run's metrics, as its metrics.jsonl holds
them, also go to the trackers named in `tracking.backends`, through accelerate's tracker classes.

TensorBoard (the default; local files, no account) writes into the run directory's `tensorboard/`,
so `tensorboard --logdir results/` lists every run under its stage and run identity, and a resumed
run goes on writing the same run: the events the stopped run wrote after its last checkpoint are
purged (SummaryWriter's purge_step), so the curve holds each step once, as metrics.jsonl does. The
run's settings are its hyperparameters, stored when it starts, not again on resume.
"""
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
    """metrics.jsonl in the run directory, cut back to the resumed step so the curve has no repeats,
    each record also sent to the run's trackers (`tracking`, rank 0's: tracking.py)."""

    def __init__(self, path: Path, rank, resume_step, tracking=None):
        self.path, self.rank, self.tracking = path, rank, tracking
        path.parent.mkdir(parents=True, exist_ok=True)
        if rank == 0 and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record):
        if self.rank == 0:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.tracking:
            self.tracking.log(record, record["step"])

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


def tenth_mean(records, key, last=True):
    """The mean of `key` over the last (or first) tenth of a run's records: one step of trl's DPO or
    GRPO is a few pairs or questions, too noisy to quote alone."""
    window = max(1, len(records) // 10)
    rows = records[-window:] if last else records[:window]
    return sum(r[key] for r in rows) / len(rows)


NOT_LOGGED = {"step", "time", "epoch"}  # the x axis, and wall-clock stamps that are no curve


class Tracking:
    """The trackers of one training run, on the process that logs (rank 0)."""

    def __init__(self, backends, run_dir: Path, settings: dict, resume_step: int):
        from accelerate.tracking import TensorBoardTracker
        self.trackers = []
        if "tensorboard" in backends:
            tracker = TensorBoardTracker("tensorboard", run_dir, purge_step=resume_step + 1)
            tracker.start()
            self.trackers.append(tracker)
        if resume_step == 0:
            hyperparameters = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                               for key, value in settings.items()}
            for tracker in self.trackers:
                store_hyperparameters(tracker, hyperparameters)

    def log(self, record, step):
        values = {key: value for key, value in record.items()
                  if key not in NOT_LOGGED and isinstance(value, (int, float)) and not isinstance(value, bool)}
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self):
        for tracker in self.trackers:
            tracker.finish()


def store_hyperparameters(tracker, values):
    """The run's settings as its hyperparameters. For TensorBoard they are written into the run itself:
    accelerate's store_init_configuration (SummaryWriter.add_hparams) makes a second run, named by
    the time, beside each one."""
    if tracker.name != "tensorboard":
        tracker.store_init_configuration(values)
        return
    from torch.utils.tensorboard.summary import hparams
    for summary in hparams(values, metric_dict={}):
        tracker.writer.file_writer.add_summary(summary)
    tracker.writer.flush()


def trainer_tracking(backends, run_dir, settings):
    """A transformers TrainerCallback for trl's trainers (DPO, GRPO): what the trainer logs each step
    goes to the trackers, from the step it resumes at."""
    from transformers import TrainerCallback

    class TrackingCallback(TrainerCallback):
        tracking = None

        def on_train_begin(self, training_args, state, control, **kwargs):  # called positionally
            if state.is_world_process_zero:
                self.tracking = Tracking(backends, run_dir, settings, state.global_step)

        def on_log(self, training_args, state, control, logs=None, **kwargs):
            if self.tracking:
                self.tracking.log(logs or {}, state.global_step)

        def on_train_end(self, training_args, state, control, **kwargs):
            if self.tracking:
                self.tracking.finish()

    return TrackingCallback()

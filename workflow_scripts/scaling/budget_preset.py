"""A budget turned into pretraining settings by the fitted laws: the compute it buys, the depth
the loss law finds best at that compute, the tokens that compute trains it for, and the learning
rate and batch of the near-optimal laws, written as a preset that `--configfile` takes, with the
loss the law predicts for it (and the bootstrap's interval) in its header.

    python -m workflow_scripts.scaling.budget_preset --fit results/scaling/fit.json \
        --budget-hours 1 --budget-device H100 --budget-mfu 0.4 --out results/scaling/budget.yaml

Then: snakemake --cores all base_model --configfile config.yaml results/scaling/budget.yaml
"""
import math
from pathlib import Path


from workflow_scripts.lib.atomic_files import read_json, write_text
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import log, stage_cli
from workflow_scripts.lib.training.metrics import PEAK_BF16_FLOPS
from workflow_scripts.lib.model_shapes import flops_per_token, non_embedding_size, shape
from workflow_scripts.lib.training.scaling_laws import LossLaw, compute_optimal, interval


def budget_flops(fit, hours, device, mfu):
    """The training FLOPs a budget buys, and how the header says so."""
    if device == "cpu":
        rate = fit["cpu_flops_per_second"]
        return hours * 3600 * rate, f"{hours:g} hours of the sweep machine's cores ({rate:.3g} FLOP/s measured)"
    return hours * 3600 * PEAK_BF16_FLOPS[device] * mfu, f"{hours:g} {device}-hours at {mfu:.0%} MFU"


def near_optimal_value(fit, key, compute):
    """The law's value at `compute`, or (no law) the near-optimal value of the sweep's largest budget."""
    found = fit[key]
    if found["law"]:
        return found["law"]["coefficient"] * compute ** found["law"]["exponent"], "its near-optimal law"
    return found["near_optimal"][-1][1], "the sweep's largest budget (no law: " + found["why_none"] + ")"


def choose(fit, compute):
    """Depth, tokens, lr, batch and steps for `compute`, and the predicted loss with its interval."""
    law = LossLaw(**fit["law"])
    vocab, seq_len = fit["vocab_size"], fit["seq_len"]
    depth = max(1, round(compute_optimal(law, compute, vocab, seq_len)["depth"]))
    sizes = shape(f"d{depth}")
    per_token = flops_per_token(**sizes, vocab_size=vocab, seq_len=seq_len)
    lr, lr_source = near_optimal_value(fit, "lr", compute)
    batch, batch_source = near_optimal_value(fit, "batch_tokens", compute)
    batch = max(seq_len, 2 ** round(math.log2(batch)))  # a power of two divides by micro-batches and GPUs
    steps = max(1, round(compute / per_token / batch))
    n = non_embedding_size(**sizes)
    tokens = steps * batch
    laws = [LossLaw(**b) for b in fit.get("bootstrap_laws", [])]
    return {"depth": depth, "non_embedding_parameters": n, "tokens": tokens, "lr": float(lr),
            "batch_tokens": int(batch), "steps": steps, "loss": float(law.loss(n, tokens)),
            "interval": interval([b.loss(n, tokens) for b in laws]) if laws else None,
            "sources": {"lr": lr_source, "batch_tokens": batch_source}}


def preset_text(choice, compute, described, fit, largest):
    spread = choice["interval"]
    predicted = f"{choice['loss']:.3f}" + (f" (90 % interval {spread[0]:.3f}–{spread[1]:.3f})" if spread else "")
    lines = [f"# Budget: {described} = {compute:.3g} training FLOPs (results/scaling/budget_preset).",
             f"# The fit of {fit['points']} sweep points, the largest {largest:.3g} FLOPs: this budget is "
             f"{compute / largest:.3g} times that.",
             f"# Predicted validation loss {predicted} nats/token, on the sweep's data and tokenizer "
             f"({fit['vocab_size']:,} tokens).",
             f"# Depth d{choice['depth']} ({choice['non_embedding_parameters']:,} non-embedding parameters), "
             f"{choice['tokens']:,} tokens; lr from {choice['sources']['lr']}; batch from "
             f"{choice['sources']['batch_tokens']}.",
             "pretrain:", f"  preset: d{choice['depth']}", f"  lr: {choice['lr']:.3g}",
             f"  global_batch_tokens: {choice['batch_tokens']}", f"  max_steps: {choice['steps']}"]
    return "\n".join(lines) + "\n"


def add_arguments(ap):
    ap.add_argument("--fit", type=Path, required=True, help="the scaling stage's fit (results/scaling/fit.json)")
    add_settings(ap, "scaling", "budget_hours", "budget_device", "budget_mfu")
    ap.add_argument("--out", type=Path, required=True, help="the preset (YAML) to write")


def run(args, progress_stream):
    fit = read_json(args.fit)
    compute, described = budget_flops(fit, args.budget_hours, args.budget_device, args.budget_mfu)
    choice = choose(fit, compute)
    write_text(args.out, preset_text(choice, compute, described, fit, fit["largest_compute"]))
    log.info("%s: %.3g FLOPs -> d%d, %s tokens, lr %.3g, batch %d, %d steps, predicted loss %.3f", args.out, compute,
             choice["depth"], f"{choice['tokens']:,}", choice["lr"], choice["batch_tokens"], choice["steps"],
             choice["loss"])


if __name__ == "__main__":
    stage_cli("budget_preset", __doc__, add_arguments, run)

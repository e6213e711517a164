"""Scaling laws fitted to the sweep's points: L(N, D) = E + A/N^alpha + B/D^beta as Chinchilla's
approach 3 (Huber loss in log space, L-BFGS from a grid of starts) with bootstrap intervals; the
compute-optimal depth, N and D it implies for this workflow's depth family; and DeepSeek LLM's
power laws of the near-optimal learning rate and batch size in compute. With --held-out K, the K
largest budgets are left out of the fit and their points' losses predicted. --extra-points adds
points measured elsewhere (benchmarks/gpu_check.sh's sweep step on a GPU) on the same token shards.

    python -m workflow_scripts.scaling.scaling_fit --points results/sweep/points.jsonl --near-optimal 0.01 \
        --bootstrap 200 --held-out 0 --out results/scaling/fit.json --markdown results/scaling/scaling.md \
        --plots results/scaling/plots
"""
import json
import statistics
from pathlib import Path

import numpy as np

from workflow_scripts.lib.atomic_files import atomic_dir, write_json, write_text
from workflow_scripts.lib.plots import plt, save_png
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.summary_tables import markdown_table
from workflow_scripts.lib.training.scaling_laws import (bootstrap_laws, compute_optimal, fit_loss_law, interval,
                                                        near_optimal, power_law)

# What the papers fitted, for the report to set beside ours (Chinchilla: Hoffmann et al. 2022, eq. 10;
# DeepSeek LLM 2024, eq. 1, C in FLOPs).
CHINCHILLA = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
DEEPSEEK = {"lr": (0.3118, -0.125), "batch_tokens": (0.2920, 0.3271)}
CONSTANTS = ("E", "A", "alpha", "B", "beta")


def best_per_shape(points):
    """Per depth and budget, the loss of its best learning rate and batch (mean over seeds): the
    law is of models trained well, not of every setting tried."""
    runs = {}
    for p in points:
        runs.setdefault((p["depth"], p["budget_flops"], p["lr"], p["batch_tokens"]), []).append(p)
    best = {}
    for (depth, budget, *_), group in runs.items():
        mean = {**group[0], "val_loss": statistics.mean(p["val_loss"] for p in group)}
        if (depth, budget) not in best or mean["val_loss"] < best[depth, budget]["val_loss"]:
            best[depth, budget] = mean
    return list(best.values())


def arrays(points):
    return (np.array([p["non_embedding_parameters"] for p in points], float),
            np.array([p["tokens"] for p in points], float), np.array([p["val_loss"] for p in points]))


def fitted_law(points, rounds):
    n, d, loss = arrays(points)
    if len(points) < 5 or len(set(n)) < 2 or len(set(d)) < 2:
        raise StageError(f"{len(points)} shapes with {len(set(n))} sizes and {len(set(d))} token counts: the law's 5 "
                         "constants need 5 points or more, of 2 sizes and 2 budgets at least; add depths or budgets "
                         "(scaling.depths, scaling.flops)")
    law = fit_loss_law(n, d, loss)
    laws = bootstrap_laws(n, d, loss, law, rounds) if rounds else []
    return law, laws


def predictions(law, laws, points):
    """Each point's loss as the law predicts it, with the bootstrap's 90 % interval and the error."""
    found = []
    for p in points:
        predicted = float(law.loss(p["non_embedding_parameters"], p["tokens"]))
        spread = interval([b.loss(p["non_embedding_parameters"], p["tokens"]) for b in laws]) if laws else None
        found.append({"point": p["point"], "compute": p["compute"], "val_loss": p["val_loss"], "predicted": predicted,
                      "interval": spread, "relative_error": (predicted - p["val_loss"]) / p["val_loss"]})
    return found


def hyperparameter_law(points, key, tolerance):
    """y = k C^p of the near-optimal `key` over the budgets, or why there is none."""
    found = near_optimal(points, key, tolerance)
    values = {value for _, value in found}
    if len(found) < 2 or len({p[key] for p in points}) < 2:
        return {"near_optimal": found, "law": None,
                "why_none": f"the grid has {len(found)} budget(s) and one {key} value: sweep several of each"}
    compute = [statistics.median(p["compute"] for p in points if p["budget_flops"] == budget) for budget, _ in found]
    k, exponent = power_law(compute, [value for _, value in found])
    return {"near_optimal": found, "law": {"coefficient": k, "exponent": exponent},
            "constant_over_the_grid": len(values) == 1}


def frontier(law, points):
    vocab, seq_len = points[0]["vocab_size"], points[0]["seq_len"]
    low, high = min(p["compute"] for p in points), max(p["compute"] for p in points)
    optimal = [compute_optimal(law, c, vocab, seq_len) for c in np.geomspace(low, high * 100, 12)]
    n_law = power_law([o["compute"] for o in optimal], [o["non_embedding_parameters"] for o in optimal])
    d_law = power_law([o["compute"] for o in optimal], [o["tokens"] for o in optimal])
    return {"points": optimal, "non_embedding_parameters": {"coefficient": n_law[0], "exponent": n_law[1]},
            "tokens": {"coefficient": d_law[0], "exponent": d_law[1]}}


def plot_loss_against_compute(points, optimal, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for depth in sorted({p["depth"] for p in points}):
        mine = [p for p in points if p["depth"] == depth]
        ax.scatter([p["compute"] for p in mine], [p["val_loss"] for p in mine], label=f"d{depth}", s=18)
    ax.plot([o["compute"] for o in optimal], [o["loss"] for o in optimal], "k--", label="fitted frontier")
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="validation loss (nats/token)",
           title="Loss against compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def plot_isoflop(law, points, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for budget in sorted({p["budget_flops"] for p in points}):
        mine = sorted((p for p in points if p["budget_flops"] == budget), key=lambda p: p["non_embedding_parameters"])
        line = ax.plot([p["non_embedding_parameters"] for p in mine], [p["val_loss"] for p in mine], "o",
                       label=f"{budget:.2g} FLOPs")
        n = np.geomspace(mine[0]["non_embedding_parameters"], mine[-1]["non_embedding_parameters"], 40)
        per_token = np.interp(np.log(n), np.log([p["non_embedding_parameters"] for p in mine]),
                              [p["flops_per_token"] for p in mine])
        ax.plot(n, law.loss(n, budget / per_token), "-", color=line[0].get_color(), alpha=0.6)
    ax.set(xscale="log", xlabel="non-embedding parameters", ylabel="validation loss (nats/token)",
           title="Iso-FLOP profiles (lines: the fitted law)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def plot_loss_against_lr(points, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for budget in sorted({p["budget_flops"] for p in points}):
        mine = sorted((p for p in points if p["budget_flops"] == budget), key=lambda p: p["lr"])
        ax.plot([p["lr"] for p in mine], [p["val_loss"] for p in mine], "o-", label=f"{budget:.2g} FLOPs")
    ax.set(xscale="log", xlabel="peak learning rate", ylabel="validation loss (nats/token)",
           title="Loss against learning rate, per budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def markdown(fit):
    law, spans = fit["law"], fit["intervals"]
    rows = [(name, f"{law[name]:.4g}", f"{spans[name][0]:.4g}–{spans[name][1]:.4g}" if spans else "—",
             CHINCHILLA[name]) for name in CONSTANTS]
    lines = [f"# Scaling laws from {fit['points']} sweep points", "",
             f"L(N, D) = E + A / N^alpha + B / D^beta over {fit['fitted_shapes']} shapes (the best learning rate and "
             "batch of each depth and budget), Chinchilla's approach 3; N: non-embedding parameters, D: tokens.", "",
             markdown_table(["constant", "fitted", "90 % interval (bootstrap)", "Chinchilla"], rows),
             f"Mean absolute error on the fitted points: {fit['fit_error']:.2%}.", ""]
    if fit["held_out"]:
        rows = [(p["point"], f"{p['val_loss']:.4f}", f"{p['predicted']:.4f}", f"{p['relative_error']:+.2%}")
                for p in fit["held_out"]]
        lines += ["## Held-out budgets, predicted", "", markdown_table(["point", "loss", "predicted", "error"], rows),
                  f"Largest absolute error: {fit['held_out_error']:.2%}.", ""]
    front = fit["frontier"]
    lines += ["## Compute-optimal", "",
              f"N*(C) ∝ C^{front['non_embedding_parameters']['exponent']:.3f} and D*(C) ∝ "
              f"C^{front['tokens']['exponent']:.3f} over this depth family (Chinchilla: about 0.5 each).", "",
              markdown_table(["FLOPs", "depth", "non-embedding parameters", "tokens", "predicted loss"],
                             [(f"{o['compute']:.3g}", f"{o['depth']:.2f}", f"{o['non_embedding_parameters']:.3g}",
                               f"{o['tokens']:.3g}", f"{o['loss']:.4f}") for o in front["points"]])]
    for key in ("lr", "batch_tokens"):
        found = fit[key]
        paper = "η = 0.3118 C^-0.125" if key == "lr" else "B = 0.2920 C^0.3271"
        if found["law"]:
            lines.append(f"Near-optimal {key}: {found['law']['coefficient']:.4g} C^{found['law']['exponent']:.3f} "
                         f"(DeepSeek LLM: {paper}).")
        else:
            lines.append(f"Near-optimal {key}: no law ({found['why_none']}).")
    return "\n".join(lines) + "\n"


def read_points(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def joined(own, extra_files):
    """The sweep's own points and those of each extra file, which must be of other points measured
    on the same token shards."""
    names, data = {p["point"] for p in own}, own[0]["data"]
    points = list(own)
    for path in extra_files:
        for p in read_points(path):
            if p.get("data") != data:
                raise StageError(f"{path}: point {p['point']} was measured on other token shards (data "
                                 f"{p.get('data')}, this sweep's {data}); measure it on this run's results/tokenizer "
                                 "and results/tokens, or take the file out of scaling.extra_points")
            if p["point"] in names:
                raise StageError(f"{path}: point {p['point']} is already in the sweep; take it out of one of them")
            names.add(p["point"])
            points.append(p)
    return points


def add_arguments(ap):
    ap.add_argument("--points", type=Path, required=True, help="the sweep's points (results/sweep/points.jsonl)")
    ap.add_argument("--extra-points", type=Path, nargs="*", default=[],
                    help="points of the same data measured elsewhere (config scaling.extra_points)")
    add_settings(ap, "scaling", "near_optimal", "bootstrap", "held_out")
    ap.add_argument("--out", type=Path, required=True, help="every fitted constant, as JSON")
    ap.add_argument("--markdown", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True, help="folder of the report's PNGs")


def run(args, progress_stream):
    own = read_points(args.points)
    points = joined(own, args.extra_points)
    budgets = sorted({p["budget_flops"] for p in points})
    if args.held_out >= len(budgets):
        raise StageError(f"scaling.held_out: {args.held_out} of {len(budgets)} budgets leaves none to fit")
    held = set(budgets[len(budgets) - args.held_out:]) if args.held_out else set()
    fitting = [p for p in points if p["budget_flops"] not in held]
    shapes = best_per_shape(fitting)
    law, laws = fitted_law(shapes, args.bootstrap)
    held_out = predictions(law, laws, best_per_shape([p for p in points if p["budget_flops"] in held]))
    front = frontier(law, shapes)
    fit = {"points": len(points), "fitted_shapes": len(shapes), "law": law.as_dict(),
           "intervals": {name: interval([getattr(b, name) for b in laws]) for name in CONSTANTS} if laws else None,
           "bootstrap_laws": [b.as_dict() for b in laws],
           "fit_error": float(np.mean([abs(p["relative_error"]) for p in predictions(law, [], shapes)])),
           "held_out": held_out, "held_out_error": max((abs(p["relative_error"]) for p in held_out), default=None),
           "frontier": front, "lr": hyperparameter_law(fitting, "lr", args.near_optimal),
           "batch_tokens": hyperparameter_law(fitting, "batch_tokens", args.near_optimal),
           "vocab_size": points[0]["vocab_size"], "seq_len": points[0]["seq_len"],
           "cpu_flops_per_second": statistics.median(p["flops_per_token"] * p["tokens_per_s"] for p in own),
           "extra_points": len(points) - len(own), "largest_compute": max(p["compute"] for p in points),
           "chinchilla": CHINCHILLA, "deepseek": DEEPSEEK}
    with atomic_dir(args.plots) as plots:
        plot_loss_against_compute(points, front["points"], plots / "loss_against_compute.png")
        plot_isoflop(law, points, plots / "isoflop.png")
        plot_loss_against_lr(points, plots / "loss_against_lr.png")
    write_json(args.out, fit)
    write_text(args.markdown, markdown(fit))
    log.info("L(N, D) = %.3f + %.3g/N^%.3f + %.3g/D^%.3f; fit error %.2f %%", law.E, law.A, law.alpha, law.B,
             law.beta, 100 * fit["fit_error"])


if __name__ == "__main__":
    stage_cli("scaling_fit", __doc__, add_arguments, run)

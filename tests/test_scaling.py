"""Scaling laws: the fit recovers a known law and predicts budgets it never saw, the near-optimal
laws recover a known power law, the budget chooser writes a preset the workflow takes, and the
sweep is a grid of ordinary pretraining jobs that Snakemake plans, reruns and submits point by point."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from workflow_scripts.lib.atomic_files import file_digest
from workflow_scripts.lib.model_shapes import flops_per_token, non_embedding_size, shape
from workflow_scripts.lib.training.scaling_laws import (STARTS, LossLaw, bootstrap_laws, fit_loss_law, interval,
                                                        near_optimal)
from workflow_scripts.lib.workflow.workflow_config import sweep_points

KNOWN = LossLaw(E=1.8, A=60.0, alpha=0.4, B=300.0, beta=0.35)
VOCAB, SEQ_LEN = 2048, 256
# Seconds per point on the built demo: two depths at one budget, 25 and 10 steps.
TINY = {"scaling": {"depths": [2, 3], "flops": [2.5e11]}}


def known_points(budgets, depths=(1, 2, 3, 4, 6, 8), noise=0.0, seed=0):
    """Points of the depth family whose losses follow KNOWN (times 1 + noise), as sweep_points writes them."""
    rng = np.random.default_rng(seed)
    points = []
    for budget in budgets:
        for depth in depths:
            sizes = shape(f"d{depth}")
            per_token = flops_per_token(**sizes, vocab_size=VOCAB, seq_len=SEQ_LEN)
            n, tokens = non_embedding_size(**sizes), budget / per_token
            loss = float(KNOWN.loss(n, tokens)) * (1 + noise * rng.standard_normal())
            points.append({"point": f"d{depth}-c{budget:g}", "depth": depth, "budget_flops": budget, "lr": 0.003,
                           "batch_tokens": 2048, "seed": 0, "non_embedding_parameters": n, "tokens": tokens,
                           "flops_per_token": per_token, "compute": budget, "val_loss": loss, "tokens_per_s": 1e4,
                           "vocab_size": VOCAB, "seq_len": SEQ_LEN, "parameters": n, "seconds": 1.0,
                           "data": "known"})
    return points


def test_the_fit_recovers_a_known_law_with_intervals_that_cover_it():
    points = known_points([1e13, 3e13, 1e14, 3e14], noise=0.003)
    n, d, loss = (np.array([p[key] for p in points]) for key in ("non_embedding_parameters", "tokens", "val_loss"))
    law = fit_loss_law(n, d, loss, STARTS[::3])  # a third of the grid: the fit's seconds, not the stage's
    assert law.alpha == pytest.approx(KNOWN.alpha, rel=0.25) and law.beta == pytest.approx(KNOWN.beta, rel=0.25)
    assert law.E == pytest.approx(KNOWN.E, rel=0.1)
    laws = bootstrap_laws(n, d, loss, law, rounds=20)
    for name in ("E", "alpha", "beta"):
        low, high = interval([getattr(b, name) for b in laws])
        assert low <= getattr(law, name) <= high and high - low < 0.5 * getattr(KNOWN, name)


def test_a_fit_on_small_budgets_predicts_a_larger_one_within_three_percent():
    fitted = known_points([1e13, 3e13, 1e14], noise=0.003)
    law = fit_loss_law(*(np.array([p[key] for p in fitted]) for key in ("non_embedding_parameters", "tokens",
                                                                           "val_loss")), STARTS[::3])
    for point in known_points([1e15]):
        predicted = float(law.loss(point["non_embedding_parameters"], point["tokens"]))
        assert abs(predicted - point["val_loss"]) / point["val_loss"] < 0.03


def test_near_optimal_takes_the_points_within_the_margin_of_each_budgets_best():
    points = [{"budget_flops": budget, "lr": lr, "val_loss": 3.0 + (np.log(lr) - np.log(0.5 * budget ** -0.2)) ** 2}
              for budget in (1e12, 1e14, 1e16) for lr in np.geomspace(1e-4, 1e-1, 31)]
    found = near_optimal(points, "lr", 0.001)
    assert [budget for budget, _ in found] == [1e12, 1e14, 1e16]
    for budget, lr in found:
        assert lr == pytest.approx(0.5 * budget ** -0.2, rel=0.15)


def write_points(path, points):
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return path


def fit_command(tmp_path, points, *extra):
    return [sys.executable, "-m", "workflow_scripts.scaling.scaling_fit", "--points", points, "--extra-points", *extra,
            "--bootstrap", "20", "--held-out", "1", "--out", tmp_path / "fit.json", "--markdown", tmp_path / "fit.md",
            "--plots", tmp_path / "plots"]


def test_scaling_fit_and_budget_preset_on_known_points(tmp_path):
    """The stages on points drawn from a known law, the deepest measured elsewhere (as a GPU's
    gpu_check.sh measures them) and given as extra points: the report's fit, the held-out error,
    and a preset for one H100-hour whose depth is the law's best at that compute."""
    points = known_points([1e13, 3e13, 1e14, 3e14], noise=0.002)
    for point, lr in zip(points, [0.003, 0.002] * len(points)):
        point["lr"] = lr
    own = write_points(tmp_path / "points.jsonl", [p for p in points if p["depth"] < 8])
    gpu = write_points(tmp_path / "gpu.jsonl", [p for p in points if p["depth"] == 8])
    subprocess.run(fit_command(tmp_path, own, gpu), check=True, capture_output=True)
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["held_out_error"] < 0.03 and len(fit["held_out"]) == 6 and fit["fitted_shapes"] == 18
    assert fit["extra_points"] == 4 and fit["largest_compute"] == 3e14
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["isoflop.png", "loss_against_compute.png",
                                                                       "loss_against_lr.png"]
    assert 0.3 < fit["frontier"]["non_embedding_parameters"]["exponent"] < 0.8
    subprocess.run([sys.executable, "-m", "workflow_scripts.scaling.budget_preset", "--fit", tmp_path / "fit.json",
                    "--budget-hours", "1", "--budget-device", "H100",
                    "--out", tmp_path / "budget.yaml"], check=True, capture_output=True)
    text = (tmp_path / "budget.yaml").read_text()
    preset = yaml.safe_load(text)["pretrain"]
    compute = 3600 * 989e12 * 0.4
    assert f"= {compute:.3g} training FLOPs" in text and "Predicted validation loss" in text
    depths = range(1, 64)
    best = min(depths, key=lambda k: KNOWN.loss(non_embedding_size(**shape(f"d{k}")),
                                                compute / flops_per_token(**shape(f"d{k}"), vocab_size=VOCAB,
                                                                          seq_len=SEQ_LEN)))
    assert abs(int(preset["preset"][1:]) - best) <= 1
    assert preset["global_batch_tokens"] & (preset["global_batch_tokens"] - 1) == 0  # a power of two


def test_extra_points_of_other_token_shards_are_refused_in_one_line(tmp_path):
    points = known_points([1e13, 3e13, 1e14])
    own = write_points(tmp_path / "points.jsonl", [p for p in points if p["depth"] < 8])
    other = write_points(tmp_path / "other.jsonl", [{**p, "data": "0123abcd"} for p in points if p["depth"] == 8])
    result = subprocess.run(fit_command(tmp_path, own, other), capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (f"{other}: point d8-c1e+13 was measured on other token shards (data 0123abcd, this sweep's known)"
            in result.stderr)
    result = subprocess.run(fit_command(tmp_path, own, own), capture_output=True, text=True)
    assert f"{own}: point d1-c1e+13 is already in the sweep" in result.stderr


def snakemake(workdir, *args):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *map(str, args)], cwd=workdir,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def planned(workdir, *args):
    plan = snakemake(workdir, "-n", *args)
    outputs = [line.strip() for line in plan.splitlines() if line.strip().startswith("output: results/sweep/d")]
    return sorted(line.split("/")[2] for line in outputs)


@pytest.mark.slow
def test_the_sweep_runs_its_grid_once_and_a_new_depth_only_adds_its_points(built, tmp_path):
    """The fit and the chooser are the stages above on known points: here, the grid as Snakemake runs it."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    config = ["--configfile", "config.yaml", tmp_path / "tiny.yaml"]
    snakemake(built, "sweep", *config)
    points = [json.loads(line) for line in (built / "results/sweep/points.jsonl").read_text().splitlines()]
    assert [p["point"] for p in points] == sweep_points({**yaml.safe_load((built / "config.yaml").read_text())[
        "scaling"], **TINY["scaling"]}) == ["d2-c2.5e11-lr0.003-b2048-s0", "d3-c2.5e11-lr0.003-b2048-s0"]
    assert [p["steps"] for p in points] == [25, 10] and all(p["val_loss"] < 8 for p in points)
    assert points[1]["non_embedding_parameters"] > points[0]["non_embedding_parameters"]
    assert {p["data"] for p in points} == {file_digest(built / "results/tokens/index.json")[:12]}
    assert planned(built, "sweep", *config) == []
    (tmp_path / "deeper.yaml").write_text(yaml.safe_dump({"scaling": {**TINY["scaling"], "depths": [1, 2, 3]}}))
    assert planned(built, "sweep", "--configfile", "config.yaml", tmp_path / "deeper.yaml") == \
        ["d1-c2.5e11-lr0.003-b2048-s0"]


def test_a_budget_too_small_for_a_point_is_one_line_naming_the_key(workflow_dir, tmp_path):
    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"scaling": {"depths": [8], "flops": [1.0e9]}}))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "sweep", "--configfile", "config.yaml",
                             tmp_path / "small.yaml"], cwd=workflow_dir, capture_output=True, text=True)
    assert result.returncode != 0
    assert "scaling.flops: point d8-c1e9-lr0.003-b2048-s0 buys fewer than 4 steps" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr

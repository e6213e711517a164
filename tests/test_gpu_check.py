"""benchmarks/gpu_check.sh, the prepared check for a lent GPU: its --smoke mode end to end on the
demo's built data (as the README types it), and its advice where MFU falls short."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from workflow_scripts.lib.atomic_files import file_digest

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_check import MFU_TARGET, advice  # noqa: E402


@pytest.mark.slow
def test_the_smoke_run_measures_every_step_on_the_cpu(built, tmp_path):
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke"], cwd=built,
                            env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [run["run"] for run in report["throughput"]] == ["sdpa", "sdpa + compile", "ZeRO-2"]
    assert all(run["tokens_per_s"] > 0 and "mfu" not in run for run in report["throughput"])
    for model in ("base", "sft"):
        probe = report["chain"][model]["probe"]
        assert set(probe["overall"]) == {"corpus", "held_out", "question"}
        assert 0 <= probe["qa_accuracy"] <= 1 and probe["qa_chance"] == pytest.approx(1 / 12)
        assert 0 <= probe["generated_accuracy"] <= 1
        assert {"0-shot cloze", "5-shot letter"} <= set(report["chain"][model]["multiple_choice"])
    assert report["chain"]["sft"]["tokens_per_s"] > 0 and report["chain"]["base"]["steps"] == 4
    assert [row["clients"] for row in report["decoding"]] == [1, 16]
    assert report["next"] == []  # no MFU on a CPU
    [point] = report["sweep"]["points"]
    assert report["sweep"]["failed"] == [] and point["point"] == "d1-c4e10-lr0.003-b2048-s0"
    assert point["steps"] == point["budget_flops"] // (point["flops_per_token"] * 2048) and "val_loss" in point
    assert point["data"] == file_digest(built / "results/tokens/index.json")[:12]  # what the fit checks
    assert (tmp_path / "sweep_points.jsonl").read_text() == json.dumps(point) + "\n"
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check")
    assert "## The demo chain" in (tmp_path / "gpu_check.log").read_text()


def test_mfu_short_of_the_target_says_what_to_change_next():
    runs = [{"run": "sdpa", "mfu": 0.30, "peak_memory_gb": 20.0},
            {"run": "sdpa + compile", "mfu": 0.334, "peak_memory_gb": 18.0}]
    steps = advice(runs, card_gib=139.8)
    assert any("micro_batch" in step and "18.0 of 140 GiB" in step for step in steps)
    assert not any("torch.compile gained under" in step for step in steps)  # it gained 11 %
    assert advice([{**run, "mfu": MFU_TARGET} for run in runs], card_gib=139.8) == []
    assert advice([{"run": "sdpa", "tokens_per_s": 10}], card_gib=0) == []

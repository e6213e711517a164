"""rules/preflight.smk: the mistakes a newcomer makes on the command line, each one line before any
job starts (lib/workflow/command_line.py, lib/workflow/devices.py)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import snakemake
from workflow_scripts.lib.workflow.devices import gpu_shortfall
from workflow_scripts.lib.workflow.command_line import snakemake_args, unknown_target


def last_line(result):
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_a_misspelt_target_names_the_closest_and_lists_the_targets(workflow_dir):
    line = last_line(snakemake(workflow_dir, "-n", "sft_modle", check=False))
    assert line.startswith("unknown target sft_modle (did you mean sft_model?); the targets are all, base_model,")
    assert "MissingRuleException" not in line and "extract_shard" not in line  # rules with wildcards are no targets


def test_rule_names_and_file_paths_are_targets():
    rules = ["all", "corpus", "sft_model"]
    assert unknown_target(["corpus", "results/sweep/d1/summary.json", "summary.md"], rules) is None
    assert unknown_target(["sft_model", "evla"], rules) == "unknown target evla; the targets are all, corpus, sft_model"
    args = snakemake_args(["snakemake", "--cores", "all", "sft_model", "--configfile", "config.yaml", "x.yaml"])
    assert args.targets == ["sft_model"] and not args.dryrun
    assert snakemake_args(["pytest", "-k", "x"]) is None


def test_gpu_training_on_a_machine_without_gpus_stops_before_the_first_job(workflow_dir):
    """README's real-run command on a CPU machine: one line before the download, not a failure
    after the whole data pipeline."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "all", "--resources", "gpu=1",
                             "--configfile", "config.yaml", "config/presets/zhwiki.yaml"], cwd=workflow_dir,
                            capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert last_line(result).startswith(
        "GPUs asked for: base_model 1 (config pretrain.gpus), sft_model 1 (config sft.gpus); this machine shows 0 "
        "(none)")
    assert not (workflow_dir / "results").exists()


def test_the_gpu_line_counts_each_jobs_gpus_against_the_visible_ones():
    asks = [("base_model", 2, "pretrain.gpus"), ("base_model", 2, "pretrain.gpus"), ("sft_model", 1, "sft.gpus")]
    assert gpu_shortfall(asks, ["0", "1"]) is None
    assert gpu_shortfall(asks, ["3"]).startswith("GPUs asked for: base_model 2 (config pretrain.gpus); this machine "
                                                 "shows 1 (3)")


def test_a_dry_run_while_another_run_holds_the_directory_is_refused(workflow_dir):
    holder = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "base_model"], cwd=workflow_dir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        locks = Path(workflow_dir, ".snakemake/locks")
        deadline = time.monotonic() + 120
        while not any(locks.glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.2)
        line = last_line(snakemake(workflow_dir, "-n", "sft_model", check=False))
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert line.startswith("another snakemake run holds this directory (2 lock files in .snakemake/locks)")
    assert line.endswith("run snakemake --unlock first")

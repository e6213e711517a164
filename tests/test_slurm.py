"""The SLURM profile against stand-in SLURM commands, for what the real CPU-only SLURM of
tests/test_real_slurm.py cannot show: GPU partitions (the sbatch options of the rules that ask for
GPUs), GPU allocations across nodes; the pre-flight check's reading of sinfo; and sharded data
stages giving the same corpus as one shard."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, copy_workflow, snakemake
from workflow_scripts.lib.corpus.signature_files import SignatureFiles
from workflow_scripts.lib.stage_cli import StageError
from workflow_scripts.lib.workflow import slurm_cluster
from workflow_scripts.lib.workflow.workflow_config import sweep_points
from workflow_scripts.training.launch import RENDEZVOUS_PORT, accelerate_command, claim_gpus

sys.path.insert(0, str(REPO / "benchmarks"))
from dedup_scaling import reference_removals  # noqa: E402  the single job dedup replaced

FAKE_SLURM = REPO / "tests" / "fake_slurm.py"
SLURM_COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel", "sinfo", "sacctmgr", "sshare", "scontrol")
QUICK = {"pretrain": {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "gpus": 1},
         "slurm": {"partition": "cpu", "gpu_partition": "gpu", "account": "my_account"}}
# Pretraining on a GPU and an evaluation of it that asks for one, on a copy of the built demo: the
# jobs the real SLURM cannot show, and no others (each costs ~10 s of Snakemake starting; the CPU
# rules' asks are checked on the real SLURM).
TARGET = "results/eval/base_model/bpb.json"


@pytest.fixture(scope="module")
def fake_slurm(tmp_path_factory):
    """PATH and FAKE_SLURM_DIR for a shell whose SLURM commands are the stand-ins."""
    root = tmp_path_factory.mktemp("slurm")
    (root / "bin").mkdir()
    for name in SLURM_COMMANDS:
        (root / "bin" / name).symlink_to(FAKE_SLURM)
    return {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", "FAKE_SLURM_DIR": str(root / "state")}


@pytest.fixture(scope="module")
def slurm_run(fake_slurm, built, tmp_path_factory):
    """The built demo's pretraining on one (stand-in) GPU and its evaluation, run again with
    --profile profiles/slurm."""
    workdir = tmp_path_factory.mktemp("slurm-run") / "workflow"
    shutil.copytree(built, workdir, symlinks=True)
    (workdir / "quick.yaml").write_text(yaml.safe_dump(QUICK))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--configfile",
                             "config.yaml", "quick.yaml", "--slurm-init-seconds-before-status-checks", "1", TARGET],
                            cwd=workdir, env=fake_slurm, capture_output=True, text=True, timeout=900)
    jobs = [json.loads(p.read_text()) for p in sorted(Path(fake_slurm["FAKE_SLURM_DIR"], "jobs").glob("*.json"))]
    return workdir, result, jobs


def submitted(jobs):
    """{rule or group: [sbatch options of each of its jobs]} from the recorded submissions."""
    by_rule = {}
    for job in jobs:
        rule = job["options"]["comment"].removeprefix("rule_").split("_wildcards_")[0]
        by_rule.setdefault(rule, []).append(job["options"])
    return by_rule


def test_gpu_rules_ask_for_their_gpus_memory_time_partition_and_account(slurm_run):
    workdir, result, jobs = slurm_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    by_rule = submitted(jobs)
    assert {rule: len(options) for rule, options in by_rule.items()} == {"base_model": 1, "bits_per_byte_model": 1}
    assert json.loads((workdir / "results/pretrain/summary.json").read_text())["steps"] == 6
    assert (workdir / TARGET).exists()
    assert by_rule["base_model"][0]["gpus"] == "1"  # pretrain.gpus from the config
    assert by_rule["bits_per_byte_model"][0]["gpus"] == "1"  # from the profile
    assert by_rule["base_model"][0]["cpus-per-gpu"] == "8"
    # the warning before the time limit, at which training checkpoints and requeues itself
    assert by_rule["base_model"][0]["signal"] == "USR1@300" and "signal" not in by_rule["bits_per_byte_model"][0]
    assert all("requeue" in options for [options] in by_rule.values())
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for rule, [options] in by_rule.items():
        asks = {**profile["default-resources"], **profile["set-resources"][rule]}
        # pretraining asks for two days, longer than the gpu partition's one (sinfo): it gets one
        # day, and requeues itself with a checkpoint when that ends
        runtime = 1440 if rule == "base_model" else asks["runtime"]
        assert (options["mem"], options["t"]) == (str(asks["mem_mb"]), str(runtime)), rule
        assert options["p"] == "gpu" and options["A"] == "my_account", rule
    assert ("slurm: rule base_model asks for runtime 2880 min, and its partition allows 1440: it runs as up to 2 "
            "submissions of 1440 min, each ending with a checkpoint that the next resumes from") in result.stderr


def test_two_node_launch_command():
    env = {"SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    hosts = {"gpu[07-08]": ["gpu07", "gpu08"]}
    command = accelerate_command(8, 1, 2, env, hosts.__getitem__)
    assert command == ["accelerate", "launch", "--multi_gpu", "--num_processes", "16", "--num_machines", "2",
                       "--mixed_precision", "no", "--dynamo_backend", "no", "--machine_rank", "1",
                       "--main_process_ip", "gpu07", "--main_process_port", str(RENDEZVOUS_PORT)]
    with pytest.raises(StageError, match="needs a SLURM allocation"):
        accelerate_command(8, 1, 2, {}, hosts.__getitem__)
    assert "--multi_gpu" not in accelerate_command(0, 1, 1, {}, hosts.__getitem__)
    assert accelerate_command(0, 2, 1, {}, hosts.__getitem__)[-2:] == ["--main_process_port", "0"]


def test_the_rule_starts_one_launcher_per_node(fake_slurm, workflow_dir, tmp_path):
    (tmp_path / "nodes.yaml").write_text("pretrain:\n  nodes: 2\n  gpus: 4\n  global_batch_tokens: 16384\n")
    out = snakemake(workflow_dir, "-n", "-p", "base_model", "--configfile", "config.yaml",
                    str(tmp_path / "nodes.yaml")).stdout
    assert "srun --overlap --nodes=2 --ntasks=2 --ntasks-per-node=1 python -m workflow_scripts.training.launch " \
           "--gpus 4 --processes 1 --nodes 2 -- -m workflow_scripts.training.pretrain" in out
    assert "gres=gpu:4" in out and "nodes=2" in out  # GPUs per node; `gpu` would be the whole job's
    hostnames = subprocess.run(["scontrol", "show", "hostnames", "gpu[07-08],cpu1"], env=fake_slurm,
                               capture_output=True, text=True, check=True).stdout.split()
    assert hostnames == ["gpu07", "gpu08", "cpu1"]


def test_jobs_on_one_machine_get_different_gpus(tmp_path):
    first, first_locks = claim_gpus(2, tmp_path, ["0", "1", "2", "3"], timeout_s=1)
    second, second_locks = claim_gpus(2, tmp_path, ["0", "1", "2", "3"], timeout_s=1)
    assert first == ["0", "1"] and second == ["2", "3"]
    with pytest.raises(StageError, match="no 1 free GPUs among 0,1,2,3"):
        claim_gpus(1, tmp_path, ["0", "1", "2", "3"], timeout_s=0)
    for lock in first_locks:
        lock.close()
    assert claim_gpus(2, tmp_path, ["0", "1", "2", "3"], timeout_s=1)[0] == ["0", "1"]
    del second_locks


def single_job_removals(workdir):
    """The ids the single job dedup was would remove from this run's signatures (datasketch's LSH)."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())["dedup"]
    files = SignatureFiles(sorted((workdir / "results/minhash").glob("*.npz")), ["zhwiki"], config["num_perm"])
    removed = reference_removals(files, config["threshold"])
    return sorted(files.gather("ids", np.array([r[0] for r in removed], dtype=np.int64)).tolist())


def test_sharded_data_stages_give_the_same_corpus_as_one_shard(tmp_path):
    """1 shard, band job and exact job; 3 of each: the same corpus, and the documents removed
    are those the single job dedup was would remove."""
    corpora = []
    for shards in (1, 3):
        workdir = copy_workflow(tmp_path / f"shards-{shards}")
        (workdir / "shards.yaml").write_text(f"extract:\n  shards: {shards}\ndedup:\n  band_jobs: {shards}\n"
                                             f"  join_jobs: {shards}\n")
        snakemake(workdir, "corpus", "--configfile", "config.yaml", "shards.yaml")
        corpora.append({split: sorted(pq.read_table(workdir / f"results/corpus/{split}.parquet").to_pylist(),
                                      key=lambda doc: doc["id"]) for split in ("train", "validation")})
        removed = sorted(pq.read_table(workdir / "results/dedup/removed.parquet")["id"].to_pylist())
        assert removed == single_job_removals(workdir) and len(removed) > 10
    assert corpora[0] == corpora[1]
    assert len(corpora[0]["train"]) > 200


SINFO = ("cpu01|64|256000|(null)|cpu*|infinite\ncpu02|32|512000|(null)|cpu*|infinite\n"
         "gpu01|64|512000|gpu:a100:4(S:0-1),mps:100|gpu|2-00:00:00\n")


def test_sinfo_is_read_into_partitions_of_nodes():
    cluster = slurm_cluster.read_cluster(lambda command: SINFO)
    assert cluster["cpu"].default and not cluster["gpu"].default
    assert [(n.name, n.cpus, n.mem_mb, n.gpus) for n in cluster["cpu"].nodes] == [("cpu01", 64, 256000, 0),
                                                                                ("cpu02", 32, 512000, 0)]
    assert cluster["gpu"].nodes[0].gpus == 4 and cluster["gpu"].max_minutes == 2880
    assert cluster["cpu"].max_minutes is None and slurm_cluster.read_cluster(lambda command: None) is None
    assert [slurm_cluster.minutes(t) for t in ("1-02:03:00", "4:00:00", "30:00", "90", "UNLIMITED")] == \
        [1563, 240, 30, 90, None]


def ask(**asked):
    defaults = {"rule": "tokenizer", "partition": "", "cpus": 1, "mem_mb": 1000, "gpus": 0, "nodes": 1,
                "runtime": 60}
    return slurm_cluster.Ask(**{**defaults, **asked})


def test_a_job_no_node_can_run_is_one_line_naming_the_rule_the_ask_and_the_largest_node():
    cluster = slurm_cluster.read_cluster(lambda command: SINFO)
    assert slurm_cluster.refusal(ask(cpus=64, mem_mb=256000), cluster) is None
    assert slurm_cluster.refusal(ask(cpus=65, mem_mb=600000), cluster) == (
        "slurm: rule tokenizer asks for cpus 65 and mem_mb 600000, and the largest node of partition cpu "
        "(cpu01/cpu02) has 64 cpus and 512000 mem_mb: lower its ask in profiles/slurm/config.yaml or "
        "config.yaml, or set slurm.max_cpus: 64, slurm.max_mem_mb: 512000 in config to fit every rule to it")
    assert "no node of partition cpu has all of them" in slurm_cluster.refusal(ask(cpus=64, mem_mb=512000), cluster)
    assert "asks for gpus 1, and the largest node of partition cpu (cpu01) has 0 gpus" in \
        slurm_cluster.refusal(ask(gpus=1), cluster)
    assert slurm_cluster.refusal(ask(partition="gpu", gpus=4, cpus=32), cluster) is None
    assert "asks for 2 nodes, and partition gpu has 1" in slurm_cluster.refusal(ask(partition="gpu", nodes=2),
                                                                                cluster)
    assert "asks for runtime 2881 min, and partition gpu allows 2880" in \
        slurm_cluster.refusal(ask(partition="gpu", runtime=2881), cluster)
    # what a training job does instead (rules/slurm.smk): the partition's limit, as often as needed
    assert slurm_cluster.submissions_needed(ask(partition="gpu", runtime=5761), cluster) == (2880, 3)
    assert slurm_cluster.submissions_needed(ask(partition="gpu", runtime=2880), cluster) is None
    assert slurm_cluster.submissions_needed(ask(runtime=10**6), cluster) is None  # cpu: no limit
    assert "asks for partition 'a100', which the cluster does not have (sinfo: cpu, gpu)" in \
        slurm_cluster.refusal(ask(partition="a100"), cluster)
    declared = slurm_cluster.declared_cluster({"max_cpus": 8, "max_mem_mb": None, "max_gpus": 0,
                                               "max_runtime": 60})
    assert slurm_cluster.refusal(ask(cpus=8, mem_mb=10**6), declared) is None
    assert "the largest node of the cluster (declared in config) has 8 cpus" in \
        slurm_cluster.refusal(ask(cpus=9), declared)


def test_the_status_check_is_one_that_answers_here():
    assert slurm_cluster.status_command("auto", True, 300, 40) == ("squeue", None)
    assert slurm_cluster.status_command("auto", True, 60, 40) == ("sacct", None)
    assert slurm_cluster.status_command("auto", False, 3600, 40) == ("squeue", None)
    assert slurm_cluster.status_command("sacct", True, 3600, 40) == ("sacct", None)
    command, why = slurm_cluster.status_command("auto", False, 60, 40)
    assert command is None and "squeue forgets a finished job after MinJobAge = 60 s, under the 120 s" in why
    assert "slurm.status_command is sacct, and sacct does not answer" in slurm_cluster.status_command(
        "sacct", False, 3600, 40)[1]
    assert "slurm.status_command is squeue, and squeue forgets" in slurm_cluster.status_command(
        "squeue", True, None, 40)[1]


def test_the_profile_asks_are_lowered_to_the_declared_cluster(fake_slurm, workflow_dir, tmp_path):
    """config slurm fits the profile to a small cluster without losing a rule's own ask."""
    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"slurm": {"max_cpus": 4, "max_mem_mb": 30000,
                                                                   "max_runtime": 240, "partition": "cpu"}}))
    plan = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n", "all",
                           "--configfile", "config.yaml", str(tmp_path / "small.yaml")],
                          cwd=workflow_dir, env=fake_slurm, capture_output=True, text=True, check=True).stdout
    jobs = {block.split("\n")[0].strip(): block for block in plan.split("rule ")[1:]}
    assert "threads: 4" in jobs["tokenizer:"] and "mem_mb=30000" in jobs["tokenizer:"]
    assert "runtime=240" in jobs["tokenizer:"] and "slurm_partition=cpu" in jobs["tokenizer:"]
    assert "mem_mb=8000" in jobs["extract_shard:"] and "runtime=60" in jobs["extract_shard:"]  # fits: kept


def test_the_profile_plans_each_sweep_point_as_a_job_of_its_own(fake_slurm, workflow_dir):
    """The scaling sweep through the profile: one job per point, each with the training rules' asks."""
    plan = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n", "sweep"],
                          cwd=workflow_dir, env=fake_slurm, capture_output=True, text=True, check=True).stdout
    points = [block for block in plan.split("rule ")[1:] if block.startswith("sweep_point:")]
    assert len(points) == len(sweep_points(yaml.safe_load((workflow_dir / "config.yaml").read_text())["scaling"]))
    assert all("wildcards: point=d" in block and "runtime=" in block and "mem_mb=" in block for block in points)

"""The SLURM profile end to end against stand-in SLURM commands, the multi-node launch command,
and sharded data stages giving the same corpus as one shard."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, copy_workflow, snakemake
from workflow_scripts.launch import RENDEZVOUS_PORT, accelerate_command, claim_gpus
from workflow_scripts.lib.common import StageError
from workflow_scripts.lib.signature_files import SignatureFiles

sys.path.insert(0, str(REPO / "benchmarks"))
from dedup_scaling import reference_removals  # noqa: E402  the single job dedup replaced

FAKE_SLURM = REPO / "tests" / "fake_slurm.py"
SLURM_COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel", "sinfo", "sacctmgr", "sshare", "scontrol")
# The plugin names a group job after its group and rules.
SHARD_GROUP = "shard_clean_part_convert_part_extract_shard_minhash_part"
GROUPS = {SHARD_GROUP: ["extract_shard", "convert_part", "clean_part", "minhash_part"]}
QUICK = {"pretrain": {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "gpus": 1},
         "sft": {"max_steps": 4, "eval_every": 2, "checkpoint_every": 2},
         "eval": {"shots": [0], "scoring": ["letter"], "max_new_tokens": 4}}


@pytest.fixture(scope="module")
def fake_slurm(tmp_path_factory):
    """PATH and FAKE_SLURM_DIR for a shell whose SLURM commands are the stand-ins."""
    root = tmp_path_factory.mktemp("slurm")
    (root / "bin").mkdir()
    for name in SLURM_COMMANDS:
        (root / "bin" / name).symlink_to(FAKE_SLURM)
    return {**os.environ, "PATH": f"{root / 'bin'}:{os.environ['PATH']}", "FAKE_SLURM_DIR": str(root / "state")}


@pytest.fixture(scope="module")
def slurm_run(fake_slurm, tmp_path_factory):
    """The demo, pretraining on one (stand-in) GPU, run with --profile profiles/slurm."""
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-run"))
    (workdir / "quick.yaml").write_text(yaml.safe_dump(QUICK))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--configfile",
                             "config.yaml", "quick.yaml", "--slurm-init-seconds-before-status-checks", "1", "all"],
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


def test_the_slurm_profile_runs_the_demo(slurm_run):
    workdir, result, jobs = slurm_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len({job["id"] for job in jobs}) == len(jobs) == 24  # every job but the local `all`
    by_rule = submitted(jobs)
    assert {rule: len(options) for rule, options in by_rule.items()} == {
        "download": 1, SHARD_GROUP: 2, "dedup_band_group": 2, "dedup": 1, "split": 1,
        "corpus_summary": 1, "tokenizer": 1, "token_shard": 4, "tokens_index": 1, "base_model": 1, "chat_data_kind": 1,
        "sft_model": 1,
        "bits_per_byte_model": 2, "multiple_choice_model": 2, "samples_model": 2, "run_summary": 1}
    assert len(list((workdir / "results/minhash").glob("zhwiki-*.npz"))) == 2
    assert json.loads((workdir / "results/pretrain/summary.json").read_text())["steps"] == 6
    assert (workdir / "results/summary.md").exists() and (workdir / "results/sft_model/model.safetensors").exists()


def test_every_job_asks_for_memory_time_partition_and_account(slurm_run):
    """A group job asks for the most memory of its steps and the sum of their time limits."""
    _, _, jobs = slurm_run
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    defaults, per_rule = profile["default-resources"], profile["set-resources"]
    for rule, submissions in submitted(jobs).items():
        steps = [{**defaults, **per_rule.get(step, {})} for step in GROUPS.get(rule, [rule])]
        for options in submissions:
            assert options["mem"] == str(max(step["mem_mb"] for step in steps)), rule
            assert options["t"] == str(sum(step["runtime"] for step in steps)), rule
            assert options["p"] == steps[0]["slurm_partition"] and options["A"] == steps[0]["slurm_account"], rule


def test_gpu_rules_ask_for_their_gpus(slurm_run):
    _, _, jobs = slurm_run
    by_rule = submitted(jobs)
    assert [o.get("gpus") for o in by_rule["base_model"]] == ["1"]  # pretrain.gpus from the config
    assert all(o.get("gpus") == "1" for rule in ("bits_per_byte_model", "multiple_choice_model", "samples_model")
               for o in by_rule[rule])  # from the profile
    assert "gpus" not in by_rule["sft_model"][0] and "gpus" not in by_rule[SHARD_GROUP][0]
    assert by_rule["base_model"][0]["cpus-per-gpu"] == "8"
    assert by_rule[SHARD_GROUP][0]["cpus-per-task"] == "4"  # extract's and minhash's threads


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
    assert "srun --overlap --nodes=2 --ntasks-per-node=1 python -m workflow_scripts.launch --gpus 4 --processes 1 " \
           "--nodes 2 -- -m workflow_scripts.pretrain" in out
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
    """1 shard and 1 band job, 3 shards and 3 band jobs: the same corpus, and the documents removed
    are those the single job dedup was would remove."""
    corpora = []
    for shards in (1, 3):
        workdir = copy_workflow(tmp_path / f"shards-{shards}")
        (workdir / "shards.yaml").write_text(f"extract:\n  shards: {shards}\ndedup:\n  band_jobs: {shards}\n")
        snakemake(workdir, "corpus", "--configfile", "config.yaml", "shards.yaml")
        corpora.append({split: sorted(pq.read_table(workdir / f"results/corpus/{split}.parquet").to_pylist(),
                                      key=lambda doc: doc["id"]) for split in ("train", "validation")})
        removed = sorted(pq.read_table(workdir / "results/dedup/removed.parquet")["id"].to_pylist())
        assert removed == single_job_removals(workdir) and len(removed) > 10
    assert corpora[0] == corpora[1]
    assert len(corpora[0]["train"]) > 1000

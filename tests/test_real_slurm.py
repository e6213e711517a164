"""The workflow through --profile profiles/slurm on a real SLURM with accounting (.ci/slurm_up.sh:
partition cpu, this machine as one node; partition pair, two slurmd on it): the pre-flight check,
the demo's group jobs and pretraining, a failing rule, pretraining across two nodes, a training job
cancelled mid-run and resumed, one signalled with SIGUSR1 that checkpoints and requeues itself, a
point of the scaling sweep, and a run with accounting down.

Skipped where SLURM does not answer, unless REQUIRE_SLURM is set (CI sets it). Every Snakemake run
has a hard timeout: SLURM's failure modes are hangs."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_workflow
from workflow_scripts.lib.workflow import slurm_cluster
from workflow_scripts.lib.workflow.workflow_config import sweep_points

SET_UP_HERE = "cpu" in (slurm_cluster.read_cluster() or {})
pytestmark = pytest.mark.skipif(not (os.environ.get("REQUIRE_SLURM") or SET_UP_HERE),
                                reason="no SLURM set up by .ci/slurm_up.sh answers here")
AS_ROOT = [] if os.geteuid() == 0 else ["sudo"]
# One shard, one band job, one token shard: every kind of job, fewer of them (each costs ~12 s of
# the plugin's status polling on top of its work).
SMALL = {"extract": {"shards": 1}, "dedup": {"band_jobs": 1}, "tokens": {"shards": 1},
         "pretrain": {"max_steps": 8, "eval_every": 4, "checkpoint_every": 4, "global_batch_tokens": 8192}}
SHARD_GROUP = "shard_clean_part_convert_part_extract_shard_minhash_part"  # the plugin's name for a group job
GROUPS = {SHARD_GROUP: ["extract_shard", "convert_part", "clean_part", "minhash_part"]}
# One point of the scaling sweep, run in the same Snakemake run as the demo's pretraining (a run of
# its own would cost the plugin's start and polling again).
SWEEP = {"depths": [1], "flops": [1.0e11], "batch_tokens": [8192]}
[SWEEP_POINT] = sweep_points({**yaml.safe_load((REPO / "config.yaml").read_text())["scaling"], **SWEEP})
# The plugin checks job status 2 s after a job started or ended (default 40 s), then 10 s later each
# time none has ended. A demo job runs 6-8 s, so most are seen ending 14 s after submission (with
# 5 s, 20 s: measured).
FAST_CHECKS = ("--slurm-init-seconds-before-status-checks", "2", "--max-status-checks-per-second", "1")


def node():
    """The node .ci/slurm_up.sh set up, in partition cpu."""
    cluster = slurm_cluster.read_cluster()
    if cluster is None or "cpu" not in cluster:
        pytest.fail("REQUIRE_SLURM is set, and no partition cpu answers sinfo: run .ci/slurm_up.sh first")
    return cluster["cpu"].nodes[0]


def fitted(extra=None):
    """The cluster section a user writes for this node (config/README.md, `slurm`)."""
    biggest = node()
    fit = {"partition": "cpu", "account": "ci_account", "max_cpus": biggest.cpus,
           "max_mem_mb": biggest.mem_mb - 1000, "max_gpus": 0}
    return {**SMALL, "slurm": {**fit, **(extra or {})}}


def start_on_slurm(workdir, target, overlay, *options):
    """snakemake --profile profiles/slurm TARGET (or a list of them) --configfile config.yaml OVERLAY,
    in its own process group."""
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    targets = [target] if isinstance(target, str) else target
    command = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", *targets, *FAST_CHECKS, *options,
               "--configfile", "config.yaml", "overlay.yaml"]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(process, timeout_s):
    """(returncode, output) of a started run; at the timeout it is killed with its process group,
    its jobs cancelled, and the test fails."""
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], check=False)
        pytest.fail(f"{' '.join(process.args[2:6])} on SLURM hung for {timeout_s} s:\n"
                    f"{process.communicate()[0][-3000:]}")
    return process.returncode, out


def run_on_slurm(workdir, target, overlay, *options, timeout_s=600):
    return finish(start_on_slurm(workdir, target, overlay, *options), timeout_s)


def submitted_jobs(workdir):
    """{rule or group: SLURM job ids} of the jobs submitted from this workdir, from Snakemake's logs
    (the plugin deletes a successful job's own log)."""
    submitted = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(?:rule|group)_(\w+?)/")
    jobs = {}
    for log in sorted(Path(workdir, ".snakemake/log").glob("*.snakemake.log")):
        for job, rule in submitted.findall(log.read_text()):
            jobs.setdefault(rule, []).append(int(job))
    return jobs


def slurm_jobs(workdir, rule):
    return sorted(submitted_jobs(workdir).get(rule, []))


def states(job_ids):
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(map(str, job_ids))],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


@pytest.fixture(scope="module")
def demo_on_slurm(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("real-slurm"))
    started = time.monotonic()
    overlay = {**fitted({"status_command": "sacct"}), "scaling": SWEEP}
    returncode, out = run_on_slurm(workdir, ["base_model", f"results/sweep/{SWEEP_POINT}/summary.json"], overlay)
    return workdir, returncode, out, time.monotonic() - started


def test_the_shipped_profile_is_refused_before_any_job_in_one_line_per_rule(tmp_path):
    """On a 2-core, 24 GB node the profile's tokenizer (32 threads, mem_mb 64000) could never run:
    SLURM would leave it pending forever (CPUs) or refuse it at sbatch after the jobs before it."""
    workdir = copy_workflow(tmp_path)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "sft_model"],
                            cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 60
    biggest = node()
    refusals = [line for line in result.stderr.splitlines() if line.startswith("slurm: rule ")]
    assert (f"slurm: rule tokenizer asks for cpus 32 and mem_mb 64000, and the largest node of partition cpu "
            f"({biggest.name}) has {biggest.cpus} cpus and {biggest.mem_mb} mem_mb: lower its ask in "
            f"profiles/slurm/config.yaml or config.yaml, or set slurm.max_cpus: {biggest.cpus}, "
            f"slurm.max_mem_mb: {biggest.mem_mb} in config to fit every rule to it") in refusals
    assert {re.match(r"slurm: rule (\w+)", line).group(1) for line in refusals} >= {"tokenizer", "base_model"}
    assert "Traceback" not in result.stderr and not (workdir / ".snakemake/slurm_logs").exists()


def test_a_gpu_rule_on_a_node_without_gpus_is_refused(tmp_path):
    """Training asks for config's GPUs, which shape the run: checked against the node, never capped."""
    workdir = copy_workflow(tmp_path)
    overlay = fitted()
    overlay["pretrain"] = {**overlay["pretrain"], "gpus": 1}
    returncode, out = run_on_slurm(workdir, "base_model", overlay, timeout_s=120)
    assert returncode == 1
    assert "slurm: rule base_model asks for gpus 1, and the largest node of partition cpu" in out
    assert not (workdir / ".snakemake/slurm_logs").exists()


def test_the_demo_runs_through_the_profile_on_real_slurm(demo_on_slurm):
    """The demo's data stages (a shard's four steps as one group job) and pretraining."""
    workdir, returncode, out, seconds = demo_on_slurm
    assert returncode == 0, out[-4000:]
    print(f"demo base_model on real SLURM: {seconds:.0f} s")
    shard_group = slurm_jobs(workdir, SHARD_GROUP)
    training = slurm_jobs(workdir, "base_model")
    assert len(shard_group) == 1 and len(training) == 1
    assert set(states(shard_group + training).values()) == {"COMPLETED"}
    assert "job status checks by" not in out  # slurm.status_command: sacct, the plugin's default, with accounting
    assert (workdir / "results/base_model/model.safetensors").exists()


def test_each_job_asks_for_its_rules_resources_fitted_to_the_node(demo_on_slurm):
    """What SLURM recorded of each job: slurm.partition and slurm.account; a group job the most
    memory of its steps and the sum of their time limits; asks beyond the node lowered to it."""
    workdir = demo_on_slurm[0]
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    limits = fitted()["slurm"]
    jobs = submitted_jobs(workdir)
    assert {SHARD_GROUP, "tokenizer", "base_model"} <= set(jobs)
    assert not {"download", "tokens_index"} & set(jobs)  # localrules: run where Snakemake runs
    for rule, ids in jobs.items():
        steps = [{**profile["default-resources"], **profile["set-resources"].get(step, {})}
                 for step in GROUPS.get(rule, [rule])]
        threads = max(profile["set-threads"].get(step, 1) for step in GROUPS.get(rule, [rule]))
        memory = min(max(step["mem_mb"] for step in steps), limits["max_mem_mb"])
        expected = (limits["partition"], limits["account"], f"{memory}M", sum(step["runtime"] for step in steps),
                    min(threads, limits["max_cpus"]))
        for job in ids:
            partition, account, memory, limit, cpus = recorded(job)
            assert (partition, account, memory, slurm_cluster.minutes(limit), int(cpus)) == expected, rule


def recorded(job):
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Partition,Account,ReqMem,Timelimit,ReqCPUS", "-j",
                          str(job)], capture_output=True, text=True, check=True).stdout
    return out.strip().split("|")


def test_a_failing_rule_is_reported_failed(demo_on_slurm, tmp_path):
    workdir = demo_on_slurm[0]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "你好", "output": "你好！"}\n{"instruction": \n', encoding="utf-8")
    overlay = fitted()
    overlay["sft"] = {"data": [{"path": str(broken), "weight": 1.0}], "skip_bad_records": False}
    returncode, out = run_on_slurm(workdir, "chat_data", overlay, "--retries", "0", timeout_s=300)
    assert returncode == 1
    assert "Error in rule chat_data_kind" in out
    assert f"{broken}: line 2: not valid JSON" in out  # the stage's own line, from its log
    failed = slurm_jobs(workdir, "chat_data_kind")[-1:]
    assert list(states(failed).values()) == ["FAILED"]


def test_pretraining_spans_two_nodes(demo_on_slurm):
    """pretrain.nodes 2 on partition pair (two slurmd on this host): SLURM allocates both nodes,
    srun starts a launcher on each, and the two processes train as one (gloo)."""
    workdir = demo_on_slurm[0]
    overlay = fitted({"partition": "pair"})
    overlay["pretrain"] = {**overlay["pretrain"], "nodes": 2, "processes": 1}
    returncode, out = run_on_slurm(workdir, "base_model", overlay, timeout_s=300)
    assert returncode == 0, out[-4000:]
    job = slurm_jobs(workdir, "base_model")[-1]
    allocation = subprocess.run(["sacct", "-j", str(job), "-X", "-n", "-P", "-o", "NNodes,NodeList"],
                                capture_output=True, text=True, check=True).stdout.strip()
    assert allocation.startswith("2|")
    summary = json.loads((workdir / "results/pretrain/summary.json").read_text())
    assert summary["processes"] == 2 and summary["gradient_accumulation"] == 2 and summary["steps"] == 8


def test_a_training_job_cancelled_mid_run_is_resubmitted_and_resumes(demo_on_slurm):
    """scancel, as a preemption or a node failure would end it: the profile's retries submit the
    job again, and pretraining resumes from its last checkpoint instead of step 0."""
    workdir = demo_on_slurm[0]
    overlay = fitted()
    overlay["pretrain"] = {**overlay["pretrain"], "max_steps": 20, "checkpoint_every": 5}
    process = start_on_slurm(workdir, "base_model", overlay)
    try:
        cancelled = cancel_after_first_checkpoint(workdir)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    returncode, out = finish(process, timeout_s=600)
    assert returncode == 0, out[-4000:]
    jobs = [job for job in slurm_jobs(workdir, "base_model") if job >= cancelled]
    assert [states(jobs)[str(job)].split()[0] for job in jobs] == ["CANCELLED", "COMPLETED"]
    log = (workdir / "results/logs/base_model.log").read_text()
    resumed = re.search(r"resuming from \S*step-0*(\d+)", log)
    assert resumed and 0 < int(resumed.group(1)) < 20, log[-2000:]
    assert yaml.safe_load((workdir / "results/pretrain/summary.json").read_text())["steps"] == 20


def test_a_usr1_signal_checkpoints_the_step_in_flight_and_the_job_requeues_itself(demo_on_slurm):
    """`scancel --signal=USR1`, as SLURM's warning before a time limit sends it: the run saves a
    checkpoint after the step in flight, the job puts itself back in the queue under the same id
    (no retry spent, no second submission) and resumes there, losing no step."""
    workdir = demo_on_slurm[0]
    overlay = fitted()
    # No scheduled checkpoint before the end: the one saved is the signal's.
    overlay["pretrain"] = {**overlay["pretrain"], "max_steps": 30, "checkpoint_every": 100}
    runs = set(Path(workdir, "results/checkpoints/base_model").glob("*"))
    process = start_on_slurm(workdir, "base_model", overlay)
    try:
        job = signal_once_training(workdir, runs)
        release_when_requeued(job)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    returncode, out = finish(process, timeout_s=600)
    assert returncode == 0, out[-4000:]
    assert [j for j in slurm_jobs(workdir, "base_model") if j >= job] == [job]  # submitted once
    history = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", str(job)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert history[0] == "REQUEUED" and history[-1] == "COMPLETED", history
    log = (workdir / "results/logs/base_model.log").read_text()
    resumed = re.search(r"resuming from \S*step-0*(\d+)", log)
    assert resumed and 0 < int(resumed.group(1)) < 30, log[-2000:]
    assert json.loads((workdir / "results/pretrain/summary.json").read_text())["steps"] == 30


def signal_once_training(workdir, old_runs, timeout_s=300):
    """`scancel --signal=USR1` the running base_model job once its new run has trained a step; its id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True,
                                 check=True).stdout.split()
        new_runs = set(Path(workdir, "results/checkpoints/base_model").glob("*")) - old_runs
        if running and any((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size
                           for run in new_runs):
            subprocess.run(["scancel", "--signal=USR1", running[0]], check=True)
            return int(running[0])
        time.sleep(0.5)
    pytest.fail("base_model never trained a step on SLURM")


def release_when_requeued(job, timeout_s=120):
    """SLURM holds a requeued job for about 2 minutes (BeginTime) before it may start again: once
    the job is back in the queue and its first run has ended, the test lets it start now. Released
    while the first run was still being killed (state REQUEUED or COMPLETING, reason already
    BeginTime), SLURM started it at once and killed that start too ("Job credential revoked"):
    the job ended FAILED and Snakemake submitted it again."""
    deadline, pending_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T|%r"], capture_output=True, text=True).stdout
        pending = state.strip() == "PENDING|BeginTime"
        pending_since = (pending_since or time.monotonic()) if pending else None
        if pending_since and time.monotonic() - pending_since >= 2:  # seen pending for 2 s, not in passing
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        time.sleep(0.5)
    pytest.fail(f"SLURM job {job} was not requeued after SIGUSR1")


def cancel_after_first_checkpoint(workdir, timeout_s=300):
    """scancel the running job (the run's only one: base_model) once it has written a checkpoint
    of this run; its SLURM job id."""
    before = set(Path(workdir, "results/checkpoints/base_model").glob("*/step-*[0-9]"))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True,
                                 check=True).stdout.split()
        if running and set(Path(workdir, "results/checkpoints/base_model").glob("*/step-*[0-9]")) - before:
            subprocess.run(["scancel", running[0]], check=True)
            return int(running[0])
        time.sleep(0.5)
    pytest.fail("base_model never wrote a checkpoint on SLURM")



def test_a_sweep_point_is_a_slurm_job_of_its_own(demo_on_slurm):
    """One point of the scaling sweep (docs/scaling.md), run beside the demo's pretraining: its own
    job (its asks are checked with the others'), pretraining its depth for the steps its budget buys."""
    workdir = demo_on_slurm[0]
    assert len(slurm_jobs(workdir, "sweep_point")) == 1
    summary = json.loads((workdir / f"results/sweep/{SWEEP_POINT}/summary.json").read_text())
    assert summary["preset"] == "d1" and summary["steps"] >= 4 and "val_loss" in summary


@pytest.fixture
def accounting_down():
    """slurmdbd stopped, as on a cluster without accounting: sacct no longer answers."""
    subprocess.run([*AS_ROOT, "pkill", "-x", "slurmdbd"], check=True)
    deadline = time.monotonic() + 20
    while slurm_cluster.accounting_answers() and time.monotonic() < deadline:
        time.sleep(0.5)
    yield
    subprocess.run([*AS_ROOT, "slurmdbd"], check=True)
    deadline = time.monotonic() + 30
    while not slurm_cluster.accounting_answers() and time.monotonic() < deadline:
        time.sleep(0.5)


def test_a_run_with_accounting_down_finishes_with_squeue(demo_on_slurm, accounting_down):
    """The plugin's default, sacct, would lose every finished job and wait forever: squeue follows
    them, and sacct asked for by name is refused before any job."""
    workdir = demo_on_slurm[0]
    returncode, out = run_on_slurm(workdir, "corpus_summary", fitted({"account": "", "status_command": "sacct"}),
                                   "--forcerun", "corpus_summary", timeout_s=120)
    assert returncode == 1 and out.strip().splitlines()[-1] == (
        "slurm: slurm.status_command is sacct, and sacct does not answer (accounting is off or slurmdbd is down); "
        "set slurm.status_command: auto")
    returncode, out = run_on_slurm(workdir, "corpus_summary", fitted({"account": ""}), "--forcerun",
                                   "corpus_summary", timeout_s=300)
    assert returncode == 0, out[-4000:]
    assert "slurm: job status checks by squeue (sacct answers: no; MinJobAge = 3600 s)" in out

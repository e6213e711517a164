"""Start a training stage under `accelerate launch`: one process per GPU (or N CPU processes), on
one machine or across the nodes of a SLURM allocation.

    python -m workflow_scripts.training.launch --gpus 8 -- -m workflow_scripts.training.pretrain --tokens ...
    srun --nodes=2 --ntasks-per-node=1 python -m workflow_scripts.training.launch --gpus 8 --nodes 2 -- -m ...

GPUs on a workstation: Snakemake counts GPUs (`--resources gpu=N`) but does not say which ones a
job gets, so two training jobs would both start on GPU 0. Each job here claims free devices by
holding an exclusive lock per device (`--gpu-locks`), from the devices CUDA_VISIBLE_DEVICES
lists (all of them when it is unset), and runs with CUDA_VISIBLE_DEVICES set to the claimed ones;
the locks go when the job ends, however it ends. Under SLURM (SLURM_JOB_ID set) nothing is
claimed: SLURM already gave the job its own devices, which its cgroup may number from 0 in every
job on a node, so locks on a shared filesystem would only make jobs wait for each other.

Across nodes (`--nodes N`, one launcher per node started by srun): machine rank from
SLURM_NODEID, rendezvous on the first host of SLURM_JOB_NODELIST (`scontrol show hostnames`).

Signals: SIGINT, SIGTERM and SIGUSR1 ask the training processes to stop after the step in flight
with a checkpoint (lib/training/stop_signals.py); `accelerate launch` and its elastic agent ignore
them, so that they neither die of one nor pass it on a second time. This launcher passes each one
it gets to every process under it (accelerate's psutil finds them), and the first again every
RESEND_S seconds until they end, for those still starting: a signal sent to the launcher alone (a
user's `kill`, a job script's trap) reaches the run, and one sent to the whole group (a terminal's
Ctrl-C, SLURM's signals) arrives more than once, which the stop request takes once. A second Ctrl-C
kills them at once. A stopped run's processes exit 0, rank 0 having written its line and status to
a file this launcher names (STOP_REPORT_ENV), so that accelerate prints no traceback; the launcher
prints the line and exits with the status (128 + the signal's number).
"""
import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from workflow_scripts.lib.stage_cli import STOP_REPORT_ENV, STOP_SIGNALS, StageError
from workflow_scripts.lib.workflow.devices import visible_gpus

RENDEZVOUS_PORT = 29500
# A training process ignores a stop signal until it has started its loop's handlers (the imports
# and model take seconds), so the first one received is sent again this often until the run ends.
RESEND_S = 2


def accelerate_command(gpus, processes, nodes, slurm_env, hostnames):
    """The `accelerate launch` arguments for this node (before the script and its arguments)."""
    per_node = gpus or processes
    command = ["accelerate", "launch", "--num_processes", str(per_node * nodes), "--num_machines", str(nodes),
               "--mixed_precision", "no", "--dynamo_backend", "no"]
    if per_node * nodes > 1:
        command.insert(2, "--multi_gpu")
    if per_node > 1 and nodes == 1:
        # A free port, not 29500: jobs Snakemake starts in the same second (sft_model beside
        # continued_model, or two runs on one node) would all see 29500 free, and all but one fail.
        command += ["--main_process_port", "0"]
    if nodes > 1:
        missing = [v for v in ("SLURM_NODEID", "SLURM_JOB_NODELIST") if v not in slurm_env]
        if missing:
            raise StageError(f"--nodes {nodes} needs a SLURM allocation (no {', '.join(missing)}); start one launcher "
                             "per node with srun --ntasks-per-node=1")
        command += ["--machine_rank", slurm_env["SLURM_NODEID"], "--main_process_ip",
                    hostnames(slurm_env["SLURM_JOB_NODELIST"])[0], "--main_process_port", str(RENDEZVOUS_PORT)]
    return command


def slurm_hostnames(nodelist):
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                          check=True).stdout.split()


def claim_gpus(count, lock_dir: Path, visible, timeout_s):
    """Lock `count` of the `visible` device ids; returns (ids, open lock files to keep)."""
    if len(visible) < count:
        raise StageError(f"the job needs {count} GPUs, only {len(visible)} are visible ({','.join(visible)})")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        held = []
        for device in visible:
            handle = open(lock_dir / f"gpu-{device}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((device, handle))
            except BlockingIOError:
                handle.close()
            if len(held) == count:
                return [d for d, _ in held], [h for _, h in held]
        for _, handle in held:
            handle.close()
        if time.monotonic() > deadline:
            raise StageError(f"no {count} free GPUs among {','.join(visible)} after {timeout_s} s "
                             f"(locks in {lock_dir}); is another job holding them?")
        time.sleep(2)


def main():
    ap = argparse.ArgumentParser(prog="python -m workflow_scripts.training.launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=0, help="GPUs per node: one process each; 0 = CPU processes")
    ap.add_argument("--processes", type=int, default=1, help="CPU processes when --gpus is 0")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--gpu-locks", type=Path, default=Path("results/.gpu-locks"), help="one lock file per device")
    ap.add_argument("--gpu-wait", type=float, default=3600, help="seconds to wait for free GPUs")
    ap.add_argument("script", nargs=argparse.REMAINDER, help="-- then what accelerate launch runs (-m module ...)")
    args = ap.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    try:
        command = accelerate_command(args.gpus, args.processes, args.nodes, os.environ, slurm_hostnames) + script
        env = dict(os.environ)
        if args.gpus and "SLURM_JOB_ID" not in os.environ:
            devices, _locks = claim_gpus(args.gpus, args.gpu_locks, visible_gpus(), args.gpu_wait)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    except StageError as err:
        sys.exit(f"launch: error: {err}")
    print(f"launch: {' '.join(command)}" + (f" on GPUs {env.get('CUDA_VISIBLE_DEVICES')}" if args.gpus else ""),
          file=sys.stderr)
    env["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGHUP,SIGQUIT"  # not the stop signals: see above
    status = run_passing_signals(command, env)
    if status == 128 + signal.SIGUSR1 and "SLURM_JOB_ID" in os.environ:
        requeue(os.environ["SLURM_JOB_ID"])
    sys.exit(status)


def requeue(job_id):
    """Put this SLURM job back in the queue: the run stopped at SIGUSR1 (the warning before the time
    limit that the SLURM profile asks for, or `scancel --signal=USR1`) with its checkpoint saved,
    and resumes from it when SLURM starts the job again. The job keeps its id, so Snakemake's SLURM
    executor goes on waiting for it and spends no retry."""
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    print(f"launch: SLURM job {job_id} " + ("requeued: it resumes from the checkpoint" if done.returncode == 0
                                         else f"not requeued ({done.stderr.strip()})"), file=sys.stderr)


def run_passing_signals(command, env):
    """Run `command`, which ignores the stop signals, passing each one this process gets to every
    process under it (SIGKILL on a second SIGINT); its exit status, or the stopped run's
    (STOP_REPORT_ENV), whose line it prints."""
    def ignore_stop_signals():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    with tempfile.TemporaryDirectory(prefix="launch-") as folder:
        report = Path(folder, "stopped.json")
        child = subprocess.Popen(command, env={**env, STOP_REPORT_ENV: str(report)}, preexec_fn=ignore_stop_signals)
        received = []

        def pass_on(signum, frame):
            again = signum == signal.SIGINT and signal.SIGINT in received
            received.append(signum)
            send_below(child.pid, signal.SIGKILL if again else signum)

        for signum in STOP_SIGNALS:
            signal.signal(signum, pass_on)
        while True:
            try:
                status = child.wait(timeout=RESEND_S)
                break
            except subprocess.TimeoutExpired:
                if received and not report.exists():  # for processes still starting, or started since
                    send_below(child.pid, received[0])
        if status == 0 and report.exists():
            stopped = json.loads(report.read_text(encoding="utf-8"))
            print(stopped["line"], file=sys.stderr)
            return stopped["status"]
    return 128 - status if status < 0 else status  # killed by a signal: the shell's 128 + its number


def send_below(pid, signum):
    """`signum` to the process `pid` and every process under it."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signum)


if __name__ == "__main__":
    main()

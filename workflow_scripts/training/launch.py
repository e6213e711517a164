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
"""
import argparse
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from workflow_scripts.lib.stage_cli import StageError

RENDEZVOUS_PORT = 29500


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


def visible_devices():
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


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
            devices, _locks = claim_gpus(args.gpus, args.gpu_locks, visible_devices(), args.gpu_wait)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    except StageError as err:
        sys.exit(f"launch: error: {err}")
    print(f"launch: {' '.join(command)}" + (f" on GPUs {env.get('CUDA_VISIBLE_DEVICES')}" if args.gpus else ""),
          file=sys.stderr)
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()

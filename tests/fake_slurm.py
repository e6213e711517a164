#!/usr/bin/env python3
"""Stand-ins for the SLURM commands snakemake-executor-plugin-slurm calls, for tests on a machine
without SLURM: linked as sbatch, srun, sacct, squeue, scancel, sinfo, sacctmgr, sshare and
scontrol (the name it is called by picks the command).

sbatch records its arguments in $FAKE_SLURM_DIR/jobs/<id>.json and runs the job script (--wrap)
in the background on this machine; sacct and squeue report each job as RUNNING until it exits,
then COMPLETED or FAILED, waiting (up to 30 s) for one of the running jobs to end first; srun
drops its options and runs the command; scontrol expands `host[01-02]` node lists.
"""
import getpass
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake-slurm"))
JOBS = STATE / "jobs"


def options(argv):
    """--key value, --key=value and -k value pairs (flags map to True); the rest in order."""
    parsed, rest, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) > 1:
            key, eq, value = arg.lstrip("-").partition("=")
            if eq:
                parsed[key] = value
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                parsed[key], i = argv[i + 1], i + 1
            else:
                parsed[key] = True
        else:
            rest.append(arg)
        i += 1
    return parsed, rest


def new_job_id():
    """The next free id, claimed by creating its record file exclusively (the plugin submits from
    several threads at once)."""
    JOBS.mkdir(parents=True, exist_ok=True)
    job_id = 1000 + len(list(JOBS.glob("*.json")))
    while True:
        try:
            os.close(os.open(JOBS / f"{job_id}.json", os.O_CREAT | os.O_EXCL))
            return str(job_id)
        except FileExistsError:
            job_id += 1


def sbatch(argv):
    parsed, _ = options(argv)
    job_id = new_job_id()
    (JOBS / f"{job_id}.json").write_text(json.dumps({"id": job_id, "argv": argv, "options": parsed}))
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": str(parsed.get("job-name", "")),
           "SLURM_JOB_NODELIST": "localhost", "SLURM_NODEID": "0", "SLURM_NNODES": str(parsed.get("nodes", 1))}
    if "gpus" in parsed:  # SLURM shows a job only its own devices
        env["SLURM_GPUS"] = str(parsed["gpus"])
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(int(str(parsed["gpus"]).split(":")[-1]))))
    log = Path(str(parsed.get("output", JOBS / f"{job_id}.out")).replace("%j", job_id))
    log.parent.mkdir(parents=True, exist_ok=True)
    runner = f'sh -c "$0"; echo $? > {JOBS / job_id}.exit'
    with open(log, "w") as out:
        process = subprocess.Popen(["sh", "-c", runner, parsed["wrap"]], cwd=parsed.get("D", "."), env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (JOBS / f"{job_id}.pid").write_text(str(process.pid))
    print(job_id)


def state(job_id):
    exit_file = JOBS / f"{job_id}.exit"
    if not exit_file.exists() or not exit_file.read_text().strip():
        return "RUNNING"
    return "COMPLETED" if exit_file.read_text().strip() == "0" else "FAILED"


def jobs_named(name):
    records = (json.loads(p.read_text()) for p in sorted(JOBS.glob("*.json")))
    return [r["id"] for r in records if r["options"].get("job-name") == name]


def sacct(argv, longest_wait_s=30):
    """The plugin waits 10 s longer before each status check that finds no job ended (1, 11, 21 s
    ...), so with an answer at once each of the demo's 14 DAG levels took at least 12 s; waiting for
    a job to end makes a level take as long as its jobs (a real cluster's jobs outlast the checks)."""
    parsed, _ = options(argv)
    job_ids = jobs_named(parsed["name"]) if "name" in parsed else []
    running = [job_id for job_id in job_ids if state(job_id) == "RUNNING"]
    deadline = time.monotonic() + longest_wait_s
    while running and all(state(job_id) == "RUNNING" for job_id in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    for job_id in job_ids:
        print(f"{job_id}|{state(job_id)}")


def squeue(argv):
    sacct(argv)


def scancel(argv):
    _, job_ids = options(argv)
    for job_id in job_ids:
        pid_file = JOBS / f"{job_id}.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass


def srun(argv):
    command = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    os.execvp(argv[command], argv[command:])


def scontrol(argv):
    """`scontrol show hostnames gpu[01-02],cpu7` prints one host per line."""
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", argv[-1]):
        match = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not match:
            print(part)
            continue
        for piece in match.group(2).split(","):
            low, _, high = piece.partition("-")
            for n in range(int(low), int(high or low) + 1):
                print(f"{match.group(1)}{n:0{len(low)}d}")


def sinfo(argv):
    """Two partitions: cpu (the default; 64 CPUs, 512 GB) and gpu (8 GPUs, one day: shorter than
    the profile's pretraining asks)."""
    print("cpu01|64|512000|(null)|cpu*|infinite\ngpu01|64|512000|gpu:h100:8(S:0-1)|gpu|1-00:00:00")


def sacctmgr(argv):
    """The user's account; with -P (parsable), as `user|account`."""
    account = os.environ.get("FAKE_SLURM_ACCOUNT", "my_account")
    print(f"{getpass.getuser()}|{account}" if "-P" in argv else account)


COMMANDS = {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scancel": scancel, "sinfo": sinfo,
            "sacctmgr": sacctmgr, "sshare": sacctmgr, "scontrol": scontrol}

if __name__ == "__main__":
    COMMANDS[Path(sys.argv[0]).name](sys.argv[1:])

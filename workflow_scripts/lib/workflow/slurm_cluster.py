"""What a SLURM cluster offers and whether a job fits it, checked before anything is submitted
(rules/slurm.smk). SLURM itself accepts a job asking for more CPUs than any node has and leaves
it pending forever; a job asking for too much memory is refused by sbatch only when it is
submitted, and the executor plugin's retries submit it again (86 s lost on the CI node).

The cluster is read from sinfo; without an answer, from the limits declared in config (slurm.max_*).
"""
import getpass
import re
import subprocess
from dataclasses import dataclass

# The resources a job asks of one node, as Snakemake names them, and the config key that caps them.
NODE_RESOURCES = {"cpus": "slurm.max_cpus", "mem_mb": "slurm.max_mem_mb", "gpus": "slurm.max_gpus"}


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int

    def offers(self, resource):
        return getattr(self, resource)


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple
    max_minutes: int | None  # None: no limit
    default: bool = False


@dataclass(frozen=True)
class Ask:
    """What one job asks for: per node (cpus, mem_mb, gpus), its nodes and its minutes."""
    rule: str
    partition: str
    cpus: int
    mem_mb: int
    gpus: int
    nodes: int
    runtime: int | None


def query(command, timeout_s=15):
    """A SLURM command's output, or None when it fails or does not answer in time (slurmctld down,
    accounting off): no check here may hang the run it protects."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def minutes(limit):
    """A SLURM time limit in minutes: 'infinite', 'days-hours:minutes:seconds', 'hours:minutes:seconds',
    'minutes:seconds' or 'minutes'."""
    if limit.upper() in ("INFINITE", "UNLIMITED", "NONE"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, mins, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return int(days or 0) * 1440 + hours * 60 + mins + (seconds > 0)


def gpu_count(gres):
    """GPUs in an sinfo GRES field: '(null)', 'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:2,mps:100'."""
    counts = re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres)
    return sum(map(int, counts))


def read_cluster(run=query):
    """{partition name: Partition} from sinfo, or None when sinfo does not answer."""
    out = run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P|%l"])
    if not out or not out.strip():
        return None
    nodes, members, limits, default = {}, {}, {}, None
    for line in out.strip().splitlines():
        name, cpus, memory, gres, partition, limit = line.split("|")
        if partition.endswith("*"):
            partition = default = partition[:-1]
        nodes[name] = Node(name, int(cpus.rstrip("+")), int(memory.rstrip("+")), gpu_count(gres))
        members.setdefault(partition, []).append(name)
        limits[partition] = minutes(limit)
    return {p: Partition(p, tuple(nodes[n] for n in names), limits[p], p == default) for p, names in members.items()}


def declared_cluster(limits):
    """The cluster as config slurm declares it, for when sinfo does not answer: one node of the
    declared size (keys left null are not checked)."""
    big = 2**62
    node = Node("declared in config", limits["max_cpus"] or big, limits["max_mem_mb"] or big,
                big if limits["max_gpus"] is None else limits["max_gpus"])
    return {"": Partition("", (node,), limits["max_runtime"], default=True)}


def partition_of(ask, cluster):
    """The partition the job goes to: the one it names, else the cluster's default; None if neither."""
    return cluster.get(ask.partition) or next((p for p in cluster.values() if p.default and not ask.partition), None)


def submissions_needed(ask, cluster):
    """(the partition's time limit in minutes, submissions) for a job asking for more time than its
    partition allows; None where it fits (or the partition has no limit)."""
    partition = partition_of(ask, cluster)
    limit = partition and partition.max_minutes
    if not (limit and ask.runtime and ask.runtime > limit):
        return None
    return limit, -(-ask.runtime // limit)


def refusal(ask, cluster):
    """One line naming the rule, the resource, its ask and the largest node when no node of the
    job's partition can ever run it; None when it fits."""
    partition = partition_of(ask, cluster)
    if partition is None:
        return (f"slurm: rule {ask.rule} asks for partition {ask.partition!r}, which the cluster does not have "
                f"(sinfo: {', '.join(sorted(cluster))}); set slurm.partition or slurm.gpu_partition in config.yaml")
    where = f"partition {partition.name}" if partition.name else "the cluster"
    largest = {r: max(partition.nodes, key=lambda node: node.offers(r)) for r in NODE_RESOURCES}
    over = [r for r in NODE_RESOURCES if getattr(ask, r) > largest[r].offers(r)]
    if over:
        asks = " and ".join(f"{r} {getattr(ask, r)}" for r in over)
        has = " and ".join(f"{largest[r].offers(r)} {r}" for r in over)
        names = "/".join(sorted({largest[r].name for r in over}))
        fits = ", ".join(f"{NODE_RESOURCES[r]}: {largest[r].offers(r)}" for r in over)
        return (f"slurm: rule {ask.rule} asks for {asks}, and the largest node of {where} ({names}) has {has}: "
                f"lower its ask in profiles/slurm/config.yaml or config.yaml, or set {fits} in config "
                "to fit every rule to it")
    if not any(all(getattr(ask, r) <= node.offers(r) for r in NODE_RESOURCES) for node in partition.nodes):
        return (f"slurm: rule {ask.rule} asks for {ask.cpus} cpus, {ask.mem_mb} mem_mb and {ask.gpus} gpus on one "
                f"node, and no node of {where} has all of them; lower its ask")
    if ask.nodes > len(partition.nodes):
        return (f"slurm: rule {ask.rule} asks for {ask.nodes} nodes, and {where} has {len(partition.nodes)}; "
                "lower its nodes in config.yaml")
    if submissions_needed(ask, cluster):
        return (f"slurm: rule {ask.rule} asks for runtime {ask.runtime} min, and {where} allows "
                f"{partition.max_minutes}: lower its runtime, or set slurm.max_runtime: {partition.max_minutes}")
    return None


def user_accounts(run=query):
    """The accounts SLURM knows for the user (lower case, as the plugin compares them), or None
    when accounting does not answer."""
    out = run(["sacctmgr", "-n", "-P", "-s", "list", "user", "format=user,account"])
    if out is None:
        return None
    user = getpass.getuser()
    return {account.strip().lower() for line in out.splitlines() if line.startswith(f"{user}|")
            for account in line.split("|")[1:2] if account.strip()}


def accounting_answers(run=query):
    """Whether sacct answers (slurmdbd up, accounting on): the plugin's default status check."""
    return run(["sacct", "-n", "-X", "-o", "JobID", "--starttime", "now"]) is not None


def min_job_age(run=query):
    """MinJobAge in seconds (how long squeue still lists a finished job), or None."""
    out = run(["scontrol", "show", "config"]) or ""
    match = re.search(r"^MinJobAge\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else None


def status_command(wanted, accounting, job_age, first_check_s):
    """(command, None) for the status check that can follow jobs here, or (None, why not).
    squeue first: it needs finished jobs listed for 3 x the plugin's first check delay (else the
    plugin silently goes back to sacct), and reads every state plainly. sacct needs accounting, and
    SLURM 22.05's sacct calls a cancelled job 'CANCELLED by <uid>', which the plugin (2.8.0) reads
    as neither failed nor running: Snakemake then waits for it forever (seen on the CI node)."""
    needed = 3 * first_check_s
    squeue_works = job_age is not None and job_age >= needed
    if wanted in ("auto", "squeue") and squeue_works:
        return "squeue", None
    if wanted in ("auto", "sacct") and accounting:
        return "sacct", None
    if wanted == "squeue":
        return None, (f"slurm: slurm.status_command is squeue, and squeue forgets a finished job after MinJobAge = "
                      f"{job_age} s, under the {needed} s it needs; set slurm.status_command: auto")
    if wanted == "sacct":
        return None, ("slurm: slurm.status_command is sacct, and sacct does not answer (accounting is off or "
                      "slurmdbd is down); set slurm.status_command: auto")
    return None, (f"slurm: no status check can follow jobs here: sacct does not answer (accounting is off or "
                  f"slurmdbd is down), and squeue forgets a finished job after MinJobAge = {job_age} s, under the "
                  f"{needed} s it needs; ask your admin for accounting or MinJobAge >= {needed}, or lower "
                  "--slurm-init-seconds-before-status-checks")

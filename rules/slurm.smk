# SLURM (--profile profiles/slurm): the cluster as config slurm declares it, and a check of every
# job against what the cluster offers before the first one is submitted
# (workflow_scripts/lib/workflow/slurm_cluster.py). Included last: it reads the rules defined above.
from workflow_scripts.lib.workflow import slurm_cluster

# Jobs that run where Snakemake runs, not as SLURM jobs: the downloads (a cluster's compute nodes
# often cannot reach the internet; its login node can) and the token shards' index (a second of
# work, where a SLURM job costs about 14 s of submission and status polling, tests/test_real_slurm.py).
localrules: download, fetch_url, tokens_index

# Per-rule asks of the profile (set-resources), capped by config slurm. A rule's own resources
# (the GPUs and nodes of training, from config) shape the run itself, so they are checked, not capped.
PROFILE_CAPS = {"mem_mb": "max_mem_mb", "runtime": "max_runtime", "gpu": "max_gpus", "cpus_per_gpu": "max_cpus"}
# The rules that train through workflow_scripts.training.launch: on the warning signal before their
# time limit they checkpoint and requeue themselves. The warning goes to the job's steps, not B:
# the batch shell, which the plugin's job script gives no way to trap in; the plugin runs each rule
# in an srun step, so every training process receives it. Each with the config section that sets
# it up (its GPUs: rules/preflight.smk).
TRAINING_RULES = {"base_model": "pretrain", "sweep_point": "pretrain", "sft_model": "sft", "dpo_model": "dpo",
                  "grpo_model": "grpo", "continued_model": "continued_pretrain"}


def capped(resource, limit):
    if limit is None or resource.is_evaluable() or not isinstance(resource.value, int):
        return resource
    return min(resource.value, limit)


def fit_rules_to_cluster(limits):
    """Caps the profile's asks by config slurm and puts each rule in its partition and account."""
    settings = workflow.resource_settings
    if limits["max_cpus"] is not None:
        settings.max_threads = min(settings.max_threads or limits["max_cpus"], limits["max_cpus"])
    profile_keys = set(settings._parsed_default_resources)
    for stage in workflow.rules:
        from_profile = profile_keys | set(settings._parsed_overwrite_resources.get(stage.name, {}))
        for key, limit_key in PROFILE_CAPS.items():
            if key in stage.resources and key in from_profile:
                stage.resources[key] = capped(stage.resources[key], limits[limit_key])
        gpu = stage.resources.get("gpu")
        asks_gpus = gpu is not None and not gpu.is_evaluable() and (gpu.value or 0) > 0
        partition = (asks_gpus and limits["gpu_partition"]) or limits["partition"]
        if partition:
            stage.resources["slurm_partition"] = partition
        if limits["account"]:
            stage.resources["slurm_account"] = limits["account"]
        if stage.name in TRAINING_RULES and limits["stop_warning_s"]:
            stage.resources["slurm_extra"] = f"--signal=USR1@{limits['stop_warning_s']}"


def job_ask(job):
    """What a job asks of each node (gres gpu:N is per node; gpu and gpus are the job's)."""
    resources = job.resources
    gpus = resources.get("gpu") or resources.get("gpus") or slurm_cluster.gpu_count(resources.get("gres", ""))
    cpus = resources.get("cpus_per_gpu", 0) * gpus if gpus and resources.get("cpus_per_gpu") else job.threads
    return slurm_cluster.Ask(job.rule.name, resources.get("slurm_partition", ""), cpus,
                             resources.get("mem_mb", 0), gpus, resources.get("nodes", 1), resources.get("runtime"))


def cluster_of(limits):
    """The cluster as sinfo shows it, else as config slurm declares it."""
    return slurm_cluster.read_cluster() or slurm_cluster.declared_cluster(limits)


def split_long_training(jobs, cluster, limits):
    """A training job asking for more time than its partition allows is given the partition's limit,
    and runs as as many submissions as it needs: at the warning before each limit it saves a
    checkpoint and requeues itself (training/launch.py), and the next resumes there. Without the
    warning (slurm.stop_warning_s: 0) it is left to refusals. One line per rule."""
    lines = {}
    for job in jobs if limits["stop_warning_s"] else []:
        needed = job.rule.name in TRAINING_RULES and slurm_cluster.submissions_needed(job_ask(job), cluster)
        if not needed:
            continue
        limit, count = needed
        lines.setdefault(job.rule.name, f"slurm: rule {job.rule.name} asks for runtime {job.resources['runtime']} "
                         f"min, and its partition allows {limit}: it runs as up to {count} submissions of {limit} "
                         "min, each ending with a checkpoint that the next resumes from")
        job.rule.resources["runtime"] = limit
        job.reset_params_and_resources()  # the job's resources are computed again, from the rule's
    return list(lines.values())


def refusals(jobs, cluster):
    """One line per rule that no node could ever run, or whose account SLURM does not know."""
    accounts = slurm_cluster.user_accounts()
    lines = {}
    for job in jobs:
        name = job.rule.name
        if name in lines:  # one line per rule
            continue
        account = job.resources.get("slurm_account")
        if account and accounts and account.lower() not in accounts:
            lines[name] = (f"slurm: rule {name} asks for account {account!r}, and SLURM knows "
                           f"{', '.join(sorted(accounts))} for you; set slurm.account in config.yaml")
        elif line := slurm_cluster.refusal(job_ask(job), cluster):
            lines[name] = line
    return list(lines.values())


def choose_status_command(settings, wanted):
    """The plugin's status check set to one that can follow jobs here (slurm_cluster.status_command)."""
    accounting, job_age = slurm_cluster.accounting_answers(), slurm_cluster.min_job_age()
    command, why_not = slurm_cluster.status_command(wanted, accounting, job_age,
                                                    settings.init_seconds_before_status_checks or 40)
    if why_not:
        return why_not
    if command != settings.status_command:
        print(f"slurm: job status checks by {command} (sacct answers: {'yes' if accounting else 'no'}; "
              f"MinJobAge = {job_age} s)", file=sys.stderr)
        settings.status_command = command
    return None


fit_rules_to_cluster(config["slurm"])

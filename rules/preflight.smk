# Mistakes caught before any job, one line each (tests/test_preflight.py). Included last: it reads
# every rule. While the Snakefile is parsed: an unknown target, and a dry run in a directory another
# run holds (Snakemake only warns there). Once the jobs are planned (onstart): on SLURM, the checks of
# rules/slurm.smk; on this machine, training jobs asking for GPUs it does not have, which would
# otherwise fail only after every data stage before them.
from workflow_scripts.lib.workflow.devices import gpu_shortfall, visible_gpus
from workflow_scripts.lib.workflow.command_line import held_lock, unknown_target


def command_line_problem(args):
    if args is None:
        return None
    target_rules = [stage.name for stage in workflow.rules if not stage.has_wildcards()]
    return unknown_target(args.targets, target_rules) or (held_lock() if args.dryrun else None)


def local_gpu_problem(jobs):
    # Each job's GPUs and the setting that gives them: its training section's, else its own resource.
    gpus = {job.rule.name: job.resources.get("gpu") or 0 for job in jobs}
    asks = [(rule, count, f"{TRAINING_RULES[rule]}.gpus" if rule in TRAINING_RULES else "gpu")
            for rule, count in gpus.items() if count > 0]
    return gpu_shortfall(asks, visible_gpus()) if asks else None


if problem := command_line_problem(SNAKEMAKE_ARGS):
    sys.exit(problem)


onstart:
    jobs = list(workflow.dag.needrun_jobs())  # a generator: read by several checks
    if workflow.executor_plugin.name == "slurm":
        cluster = cluster_of(config["slurm"])
        for line in split_long_training(jobs, cluster, config["slurm"]):
            print(line, file=sys.stderr)
        problems = refusals(jobs, cluster)
        if status_problem := choose_status_command(workflow.executor_settings, config["slurm"]["status_command"]):
            problems.append(status_problem)
    else:
        problems = [line for line in [local_gpu_problem(jobs)] if line]
    if problems:
        sys.exit("\n".join(problems))

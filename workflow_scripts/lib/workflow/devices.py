"""The GPUs this process may use: the launcher claims among them, and a local run's pre-flight
check (rules/preflight.smk) counts them before any job starts."""
import os


def visible_gpus():
    """Device ids from CUDA_VISIBLE_DEVICES where it is set (SLURM and users narrow it there),
    else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d]
    import torch  # 2 s: only where a job asks for GPUs
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_shortfall(asks, visible):
    """The line for a local run whose training jobs ask for more GPUs than `visible`, or None.
    asks: (rule, GPUs, the setting that asks for them) of each job that will run."""
    short = sorted({ask for ask in asks if ask[1] > len(visible)})
    if not short:
        return None
    wanted = ", ".join(f"{rule} {gpus} (config {key})" for rule, gpus, key in short)
    return (f"GPUs asked for: {wanted}; this machine shows {len(visible)} ({','.join(visible) or 'none'}), so the "
            "run would stop at training after every stage before it: run it where the GPUs are, submit it with "
            "--profile profiles/slurm, or set those keys to 0 to train on the CPU")

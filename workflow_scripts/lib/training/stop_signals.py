"""A training run stopped by a signal loses no step: SIGTERM (SLURM's time limit, preemption,
`scancel`), SIGUSR1 (the warning SLURM's `--signal=USR1@N` sends) and SIGINT (Ctrl-C) only ask the
loop to stop; it finishes the step in flight, every rank saves the checkpoint, and the stage exits
with 128 + the signal's number and one line. The first signal is the one kept: the launcher
(workflow_scripts.training.launch) passes on what it gets, so a signal sent to the whole group
arrives twice; a second Ctrl-C is the launcher's to act on (it kills the run at once)."""
import signal

import torch

from workflow_scripts.lib.stage_cli import STOP_SIGNALS, StageStopped, log
from workflow_scripts.lib.training.metrics import trainer_tracking


class TrainingStopped(StageStopped):
    """Raised once the checkpoint of the step the run stopped at is saved."""

    def __init__(self, signum, step, max_steps, checkpoint):
        super().__init__(128 + signum, f"stopped by {signal.Signals(signum).name} at step {step} of {max_steps}, "
                                       f"checkpoint {checkpoint} saved; the next run resumes from it")


class StopRequests:
    """The first stop signal this process received; the loop asks `requested` after each step.
    `stopped_at` is (signal, step) once a Trainer stopped on one (trainer_callback)."""

    def __init__(self):
        self.signum = None
        self.stopped_at = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.handle)

    def handle(self, signum, frame):
        self.signum = self.signum or signum

    def requested(self, all_reduce_sum):
        """A signal some rank received, the same on every rank (so all stop at the same step), or None."""
        received = all_reduce_sum(torch.tensor([float(self.signum == s) for s in STOP_SIGNALS]))
        return next((s for s, count in zip(STOP_SIGNALS, received.tolist()) if count), None)


def all_reduce_sum(tensor):
    """torch.distributed's sum over the ranks where it is initialised (a Trainer's processes)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = tensor.to("cuda" if torch.cuda.is_available() else "cpu")
        torch.distributed.all_reduce(tensor)
    return tensor


def trainer_callback(stop):
    """A transformers TrainerCallback for the stages trl's trainers run (DPO): after the step in
    flight of a stop signal, the Trainer saves its checkpoint and ends; `stop.stopped_at` is then
    (signal, step)."""
    from transformers import TrainerCallback

    class StopCallback(TrainerCallback):
        def on_step_end(self, training_args, state, control, **kwargs):  # called positionally
            signum = stop.requested(all_reduce_sum) if state.global_step < state.max_steps else None
            if signum:
                control.should_save = control.should_training_stop = True
                stop.stopped_at = (signum, state.global_step)

    return StopCallback()


def run_trainer(trainer, stop, run_dir, max_steps, backends, settings):
    """A transformers Trainer (trl's DPO or GRPO) run from the last checkpoint in run_dir, if any, to
    max_steps, logged to the trackers `backends` with its `settings` as hyperparameters;
    TrainingStopped once the checkpoint of a stop signal's step is saved."""
    trainer.add_callback(trainer_callback(stop))
    trainer.add_callback(trainer_tracking(backends, run_dir, {**settings, "run": run_dir.name}))
    resume = any(run_dir.glob("checkpoint-*"))
    if resume:
        log.info("resuming from the last checkpoint in %s", run_dir)
    trainer.train(resume_from_checkpoint=resume or None)
    if stop.stopped_at:
        signum, step = stop.stopped_at
        raise TrainingStopped(signum, step, max_steps, run_dir / f"checkpoint-{step}")

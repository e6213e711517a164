"""A stage's process: its command line, its log, its one-line errors and its peak memory."""
import argparse
import json
import logging
import os
import re
import resource
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("zhwiki_llm")


class StageError(Exception):
    """A problem with the user's input or config: reported as one line, never as a traceback."""


# The signals that ask a training stage to stop after the step in flight (lib/training/stop_signals.py),
# in the order a run that received several reports them.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# The file where a training stage stopped by a signal reports to its launcher
# (workflow_scripts.training.launch): {"line": ..., "status": 128 + the signal's number}.
STOP_REPORT_ENV = "TRAINING_STOP_REPORT"


class StageStopped(Exception):
    """The stage stopped on request before its end, its work kept (a training run's checkpoint);
    it exits with `status`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def stage_cli(stage, description, add_arguments, run):
    """Parse the stage's arguments, log to --log, and turn a StageError into one line on stderr."""
    main = sys.modules["__main__"].__spec__  # None when the file is run by path rather than with -m
    prog = f"python -m {main.name}" if main else stage
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--log", type=Path, help="write the log (and progress bars) here instead of stderr")
    args = parser.parse_args()
    rank = os.environ.get("RANK", "0")
    if args.log and rank != "0":  # each process of a distributed stage logs to its own file
        args.log = args.log.with_name(f"{args.log.name}.rank{rank}")
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
    stream = ProgressEcho(open(args.log, "w", encoding="utf-8"), args.log) if args.log else sys.stderr
    logging.basicConfig(stream=stream, level=logging.INFO, format=f"%(asctime)s {stage} %(message)s")
    quiet_transformers()
    try:
        run(args, progress_stream=stream)
        leave_process_group()
    except StageError as err:
        line = f"{stage}: error: {err}"
        log.error("error: %s", err)
        if stream is not sys.stderr:
            print(line, file=sys.stderr)
        sys.exit(1)
    except StageStopped as stopped:
        leave_process_group()  # every rank stops at the same step (stop_signals.py), so all leave
        stopped_exit(f"{stage}: {stopped}", stopped.status, rank)


def quiet_transformers():
    """No transformers progress bars ("Loading weights", "Writing model shards": they went to the
    terminal, outside the stage's log, at every model load and save) and no length warning below."""
    logging.getLogger("transformers.tokenization_utils_base").addFilter(quiet_length_warning)
    if "transformers" in sys.modules:  # stages that load models lazily call this again (lib.training.models)
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def quiet_length_warning(record):
    """Drops transformers' "Token indices sequence length is longer than the specified maximum"
    warning: every stage sizes its own windows and refuses prompts past the context, so it is never
    the user's to act on, and it reached the terminal chat whenever a tokenizer's model_max_length
    is the model's context (a long validation document, a long message)."""
    return not record.getMessage().startswith("Token indices sequence length is longer than")


class ProgressEcho:
    """A stage's log file as its progress stream, which also shows the latest state of the stage's
    progress bar in the terminal, one short line at most every `every_s` seconds; the full bar stays
    in the log. Without it the demo's base_model printed nothing for its 2.5 minutes (15 on a busy
    machine) and looked frozen."""

    def __init__(self, log_file, path, terminal=sys.stderr, every_s=30):
        self.file, self.path, self.terminal, self.every_s = log_file, path, terminal, every_s
        self.echoed = time.monotonic()

    def write(self, text):
        self.file.write(text)
        latest = text.rsplit("\r", 1)[-1].strip() if "\r" in text else ""
        if latest and time.monotonic() - self.echoed >= self.every_s:
            # "pretrain:  62%|█████▏   | 745/1200 [10:08<06:49, ...]" without the bar's blocks
            print(f"{re.sub(r' *[|][^|]*[|]', '', latest)} ({self.path})", file=self.terminal, flush=True)
            self.echoed = time.monotonic()
        return len(text)

    def __getattr__(self, name):  # flush, fileno, encoding, close: the log file's
        return getattr(self.file, name)


def leave_process_group():
    """Destroys a distributed stage's process group while the interpreter is whole. Left to the
    interpreter's exit, gloo's worker threads were destroyed still joinable: one rank aborted with
    "terminate called without an active exception" (SIGABRT) after a finished run (CI, DeepSpeed
    ZeRO-3, once in 547 tests; pytorch/pytorch#190489). Not after an error: a rank that failed alone
    would wait here for the others (torchtitan destroys it only after a clean exit, too)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def stopped_exit(line, status, rank):
    """Exit a stage that stopped on request, the stop signals ignored from here on (a resent one
    would kill the interpreter as it shuts down). Under the training launcher (STOP_REPORT_ENV set)
    rank 0 writes the line and status for the launcher to report, and every rank exits 0, so that
    accelerate and its elastic agent see no failure to print a traceback for."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    log.warning("%s", line)
    report = os.environ.get(STOP_REPORT_ENV)
    if report is None:
        print(line, file=sys.stderr)
        sys.exit(status)
    if rank == "0":
        Path(report).write_text(json.dumps({"line": line, "status": status}), encoding="utf-8")
    sys.exit(0)


def peak_rss_mb():
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

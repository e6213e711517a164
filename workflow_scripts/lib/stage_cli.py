"""A stage's process: its command line, its log, its one-line errors and its peak memory."""
import argparse
import logging
import os
import resource
import sys
from pathlib import Path

log = logging.getLogger("zhwiki_llm")


class StageError(Exception):
    """A problem with the user's input or config: reported as one line, never as a traceback."""


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
    stream = open(args.log, "w", encoding="utf-8") if args.log else sys.stderr
    logging.basicConfig(stream=stream, level=logging.INFO, format=f"%(asctime)s {stage} %(message)s")
    try:
        run(args, progress_stream=stream)
    except StageError as err:
        line = f"{stage}: error: {err}"
        log.error("error: %s", err)
        if stream is not sys.stderr:
            print(line, file=sys.stderr)
        sys.exit(1)


def peak_rss_mb():
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

"""The `snakemake` command line as the Snakefile sees it while it is parsed, and the mistakes in it
that Snakemake itself reports late or in a banner: a target no rule makes, and a dry run in a
directory another run holds. Each comes back as one line for sys.exit."""
import difflib
import sys
from pathlib import Path

from snakemake.cli import get_argument_parser


def snakemake_args(argv=None):
    """The parsed options of the snakemake command that runs this workflow; None where the Snakefile
    is read by something else (a SLURM job's own snakemake is still snakemake, and parses)."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name not in ("snakemake", "__main__.py"):
        return None
    args, _ = get_argument_parser().parse_known_args(argv[1:])
    return args


def unknown_target(targets, target_rules):
    """A target that is neither a rule that may be named (one without wildcards) nor a file path:
    the line that names it, the closest rule, and every target there is."""
    for target in targets:
        if target in target_rules or "/" in target or "." in target:
            continue
        close = difflib.get_close_matches(target, target_rules, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown target {target}{hint}; the targets are {', '.join(sorted(target_rules))}"
    return None


def held_lock(workdir="."):
    """In a dry run: the line saying another run holds this directory. Snakemake only warns there and
    then plans around the other run's half-written outputs (often "Nothing to be done", exit 0)."""
    locks = sorted(Path(workdir, ".snakemake/locks").glob("*.lock"))
    if not locks:
        return None
    return (f"another snakemake run holds this directory ({len(locks)} lock files in .snakemake/locks), so a dry run "
            "would plan around its unfinished outputs: wait for it, or if none is running (a killed run leaves its "
            "locks), run snakemake --unlock first")

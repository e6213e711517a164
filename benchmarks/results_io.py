"""What every benchmark records beside its figures, and where it writes them."""
import json
import math
import os
import statistics
import platform
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]


def provenance():
    """The machine (and its GPU), the library versions, the code (commit, "-dirty" with uncommitted
    changes; BENCHMARK_COMMIT instead where the tree was copied, as onto a lent GPU machine)
    and the exact command line, so a reader can rerun the benchmark."""
    commit = os.environ.get("BENCHMARK_COMMIT", "")
    if not commit and shutil.which("git"):
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=RESULTS.parent, capture_output=True,
                                text=True).stdout.strip()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True).stdout.split("\n")
        machine += ", " + ", ".join(name for name in gpus if name)
    return {"machine": machine,
            "versions": {name: version(name) for name in ("torch", "transformers", "accelerate")},
            "commit": commit or "unknown",
            "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])}


def workflow_copy(workdir: Path):
    """The tracked files of this checkout under workdir (as a fresh clone has them), unless a copy is
    there already (a benchmark run again reuses what its earlier runs built)."""
    if not (workdir / "Snakefile").exists():
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.split("\0")
        for name in filter(None, tracked):
            if (REPO / name).is_file():
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, workdir / name)
    return workdir


def save(name, report, markdown_text):
    """benchmarks/results/{name}.json and .md, and the markdown on stdout."""
    versions = ", ".join(f"{name} {number}" for name, number in report["versions"].items())
    markdown_text += f"\nCode: commit `{report['commit']}`; {versions}.\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown_text)
    print(markdown_text)


def rotated_rounds(runs, repeats):
    """(round number, the runs in that round's order): each round starts one run later than the one
    before, so that no run always goes first (a cold cache) or last (a machine warmed up)."""
    for number in range(repeats):
        shift = number % len(runs)
        yield number, runs[shift:] + runs[:shift]


def module_in(tree, module):
    """`python -m` name of a stage or tool of workflow_scripts in a checkout: `data.extract` in this
    tree, `extract` in one from before the folders by phase."""
    moved = tree.joinpath("workflow_scripts", *module.split(".")).with_suffix(".py").is_file()
    return f"workflow_scripts.{module if moved else module.rsplit('.', 1)[-1]}"


def median_interval(values, confidence=0.95):
    """The median of values and a distribution-free interval for it (order statistics of the
    binomial(n, 1/2)): no assumption about the noise of a shared machine. The interval drops as
    many values from each end as keeps its coverage at `confidence` or above; `coverage` is what it
    has (below `confidence` only when there are too few values to drop any)."""
    ordered, n = sorted(values), len(values)

    def at_most(k):  # P(Binomial(n, 1/2) <= k)
        return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    below = 0  # the interval [ordered[below], ordered[n - 1 - below]] covers with 1 - 2 P(X <= below)
    while below + 1 < n / 2 and 1 - 2 * at_most(below + 1) >= confidence:
        below += 1
    return {"median": round(statistics.median(ordered), 3),
            "interval": [round(ordered[below], 3), round(ordered[n - 1 - below], 3)],
            "coverage": round(1 - 2 * at_most(below), 3)}


def paired_ratio(ours, theirs, confidence=0.95):
    """ours / theirs of rates measured in the same rounds, one ratio per round (a slow spell of the
    machine slows both), with the median's interval."""
    return {**median_interval([a / b for a, b in zip(ours, theirs)], confidence), "rounds": len(ours)}

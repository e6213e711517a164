"""What every benchmark records beside its figures, and where it writes them."""
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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


def save(name, report, markdown_text):
    """benchmarks/results/{name}.json and .md, and the markdown on stdout."""
    versions = ", ".join(f"{name} {number}" for name, number in report["versions"].items())
    markdown_text += f"\nCode: commit `{report['commit']}`; {versions}.\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown_text)
    print(markdown_text)

"""What every benchmark records beside its figures, and where it writes them."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def provenance():
    """The machine, the code (commit, "-dirty" with uncommitted changes) and the exact command
    line, so a reader can rerun the benchmark."""
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=RESULTS.parent, capture_output=True,
                            text=True).stdout.strip()
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "commit": commit or "unknown",
            "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])}


def save(name, report, markdown_text):
    """benchmarks/results/{name}.json and .md, and the markdown on stdout."""
    markdown_text += f"\nCode: commit `{report['commit']}`.\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown_text)
    print(markdown_text)

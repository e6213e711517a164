"""Shared fixtures: paths to the real data beside the repo, a stage runner, a workflow copy."""
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_SLICE = SHARED_DATA / "zhwiki" / "zhwiki-test-pages.xml.bz2"
DEMO_DUMP = next((REPO / "demo" / "zhwiki").glob("*-multistream.xml.bz2"))
DEMO_INDEX = next((REPO / "demo" / "zhwiki").glob("*-multistream-index.txt.bz2"))


def run_stage(stage, *args, cwd=REPO):
    """Run `python -m workflow_scripts.<stage>` as a rule would; the caller checks returncode."""
    return subprocess.run([sys.executable, "-m", f"workflow_scripts.{stage}", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True)


def train_tokenizer(tmp, docs, vocab_size=800, *extra):
    out, report = tmp / "tokenizer", tmp / "report.json"
    run_ok("tokenizer", "--train", docs, "--validation", docs, "--vocab-size", vocab_size,
           "--out", out, "--report", report, *extra)
    return out, json.loads(report.read_text())


def run_ok(stage, *args):
    result = run_stage(stage, *args)
    assert result.returncode == 0, result.stderr
    return result


def run_fails(stage, pattern, *args):
    """The stage exits 1 with exactly one line on stderr (its log goes to a file, as in a rule),
    and the line matches the regex `pattern`."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run_stage(stage, *args, "--log", Path(tmp, "log"))
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert re.search(pattern, line), line
    return line


def copy_workflow(parent):
    """A copy of the workflow (what git tracks, not results/) to run Snakemake in."""
    dest = parent / "workflow"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def snakemake(workdir, *args, check=True):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir,
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def workflow_dir(tmp_path):
    return copy_workflow(tmp_path)


@pytest.fixture(scope="session")
def demo_docs(tmp_path_factory):
    """A quarter of the demo dump, extracted and converted: a small real train split."""
    tmp = tmp_path_factory.mktemp("docs")
    run_ok("extract", "--dump", DEMO_DUMP, "--index", DEMO_INDEX, "--shard", 0, "--shards", 4,
           "--out", tmp / "extract.parquet", "--stats", tmp / "e.json")
    run_ok("convert", "--input", tmp / "extract.parquet", "--out", tmp / "train.parquet", "--stats", tmp / "c.json")
    return tmp / "train.parquet"


@pytest.fixture(scope="session")
def trained(demo_docs, tmp_path_factory):
    """(tokenizer directory, report) of an 800-token tokenizer trained on demo_docs."""
    return train_tokenizer(tmp_path_factory.mktemp("tok"), demo_docs)

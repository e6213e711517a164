"""Shared fixtures: paths to the real data beside the repo, a stage runner, a workflow copy."""
import contextlib
import http.server
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_SLICE = SHARED_DATA / "zhwiki" / "zhwiki-test-pages.xml.bz2"
DEMO_DUMP = next((REPO / "demo" / "zhwiki").glob("*-multistream.xml.bz2"))
DEMO_INDEX = next((REPO / "demo" / "zhwiki").glob("*-multistream-index.txt.bz2"))


class FileServer(http.server.ThreadingHTTPServer):
    """Serves {url path: bytes} on 127.0.0.1; honours Range; can fail or cut transfers on purpose."""

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), FileHandler)
        self.files = files
        self.failures = {}   # file name -> how many 503s to answer before serving
        self.cut_once = set()  # file names whose first transfer stops half-way
        self.requests = []

    @property
    def mirror(self):
        return f"http://127.0.0.1:{self.server_port}"

    @classmethod
    @contextlib.contextmanager
    def running(cls, files):
        server = cls(files)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()


class FileHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        name = self.path.rsplit("/", 1)[-1]
        server.requests.append((name, self.headers.get("Range")))
        if server.failures.get(name, 0) > 0:
            server.failures[name] -= 1
            return self.send_error(503, "Service Unavailable")
        if self.path not in server.files:
            return self.send_error(404)
        data = server.files[self.path]
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers["Range"] else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in server.cut_once:
            server.cut_once.discard(name)
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def zip_of(members):
    """The bytes of a zip archive holding {member name: bytes}."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def run_stage(stage, *args, cwd=REPO):
    """Run `python -m workflow_scripts.<stage>` as a rule would; the caller checks returncode."""
    return subprocess.run([sys.executable, "-m", f"workflow_scripts.{stage}", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True)


def train_tokenizer(tmp, docs, vocab_size=800, *extra):
    out, report = tmp / "tokenizer", tmp / "report.json"
    run_ok("tokenizer.tokenizer", "--train", docs, "--validation", docs, "--vocab-size", vocab_size,
           "--out", out, "--report", report, *extra)
    return out, json.loads(report.read_text())


def run_ok(stage, *args):
    result = run_stage(stage, *args)
    assert result.returncode == 0, result.stderr
    return result


def run_dedup(tmp, signatures, *options, band_jobs=1, join_jobs=1, corpus_order=("zhwiki",)):
    """dedup_bands in band_jobs groups and dedup_exact in join_jobs groups, then dedup_join in
    join_jobs parts and dedup, as the rules chain them: the removed documents."""
    order = ["--corpus-order", *corpus_order]
    parts = range(join_jobs)
    for group in range(band_jobs):
        run_ok("data.dedup_bands", "--signatures", *signatures, "--group", group, "--groups", band_jobs, *options,
               *order, "--out", *(tmp / f"pairs-{group}-{part}.npz" for part in parts),
               "--stats", tmp / f"pairs-{group}.json")
    copies = [tmp / f"exact-{group}.npz" for group in range(join_jobs)]
    for group, out in enumerate(copies):
        run_ok("data.dedup_exact", "--signatures", *signatures, "--group", group, "--groups", join_jobs, *order,
               "--out", out, "--stats", tmp / f"exact-{group}.json")
    reports = [tmp / f"join-{part}.parquet" for part in parts]
    for part in parts:
        run_ok("data.dedup_join", "--signatures", *signatures, "--exact", *copies,
               "--pairs", *(tmp / f"pairs-{group}-{part}.npz" for group in range(band_jobs)),
               "--earlier", *reports[:part], "--part", part, *order, "--report", reports[part],
               "--stats", tmp / f"join-{part}.json")
    run_ok("data.dedup", "--exact", *copies, "--parts", *reports,
           "--part-stats", *(tmp / f"join-{part}.json" for part in parts), *options,
           "--report", tmp / "removed.parquet", "--stats", tmp / "dedup.json")
    return pq.read_table(tmp / "removed.parquet").to_pylist()


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


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The demo built end to end (`snakemake all`), once for every test file that reads its results."""
    workdir = copy_workflow(tmp_path_factory.mktemp("e2e"))
    snakemake(workdir, "all")
    return workdir


@pytest.fixture
def workflow_dir(tmp_path):
    return copy_workflow(tmp_path)


@pytest.fixture(scope="session")
def demo_docs(tmp_path_factory):
    """A quarter of the demo dump, extracted and converted: a small real train split."""
    tmp = tmp_path_factory.mktemp("docs")
    run_ok("data.extract", "--dump", DEMO_DUMP, "--index", DEMO_INDEX, "--shard", 0, "--shards", 4,
           "--out", tmp / "extract.parquet", "--stats", tmp / "e.json")
    run_ok("data.convert", "--input", tmp / "extract.parquet", "--out", tmp / "train.parquet", "--stats",
           tmp / "c.json")
    return tmp / "train.parquet"


@pytest.fixture(scope="session")
def trained(demo_docs, tmp_path_factory):
    """(tokenizer directory, report) of an 800-token tokenizer trained on demo_docs."""
    return train_tokenizer(tmp_path_factory.mktemp("tok"), demo_docs)

"""Shared fixtures: paths to the real data beside the repo, a stage runner, a workflow copy."""
import contextlib
import http.server
import io
import json
import random
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

from workflow_scripts.lib.corpus.documents import DocWriter

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_SLICE = SHARED_DATA / "zhwiki" / "zhwiki-test-pages.xml.bz2"
DEMO_DUMP = next((REPO / "demo" / "zhwiki").glob("*-multistream.xml.bz2"))
DEMO_INDEX = next((REPO / "demo" / "zhwiki").glob("*-multistream-index.txt.bz2"))
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"  # noqa: E501


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
        run_ok("data.dedup_bands", "--signatures", *signatures, "--group", group, "--band-jobs", band_jobs, *options,
               *order, "--out", *(tmp / f"pairs-{group}-{part}.npz" for part in parts),
               "--stats", tmp / f"pairs-{group}.json")
    copies = [tmp / f"exact-{group}.npz" for group in range(join_jobs)]
    for group, out in enumerate(copies):
        run_ok("data.dedup_exact", "--signatures", *signatures, "--group", group, "--join-jobs", join_jobs, *order,
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


def tensorboard_curve(run_dir, tag):
    """[(step, value)] of a scalar in a run's TensorBoard events, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's --dist loadgroup (pyproject's addopts): the tests of a file run on
    one worker, so that its module fixtures are made once, and every file that reads the built demo
    on the same worker, so that the demo is built once (5 minutes) however many workers there are."""
    reads_built = {item.path for item in items if "built" in item.fixturenames}
    for item in items:
        item.add_marker(pytest.mark.xdist_group("built" if item.path in reads_built else item.path.stem))


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The demo built end to end (`snakemake all`), once for every test file that reads its results;
    what the run printed in the terminal is beside it, in terminal.txt."""
    workdir = copy_workflow(tmp_path_factory.mktemp("e2e"))
    result = snakemake(workdir, "all")
    (workdir.parent / "terminal.txt").write_text(result.stdout + result.stderr, encoding="utf-8")
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


def write_docs(path, docs):
    with DocWriter(path) as writer:
        for doc in docs:
            writer.write({"url": f"https://zh.wikipedia.org/wiki?curid={doc['id']}", "title": f"t{doc['id']}", **doc})
    return path


def read(path):
    """A Parquet document file's rows."""
    return pq.read_table(path).to_pylist()


def chinese(seed, n=300):
    """n random common Han characters: a text that passes clean and shares little with another seed's."""
    rng = random.Random(seed)
    return "".join(rng.choice(HAN) for _ in range(n))


def dedup(tmp_path, shards, threshold=0.8, ngram=5, num_perm=128, join_jobs=1):
    """minhash each shard of documents, then the dedup jobs as the rules chain them: the removed documents."""
    signatures = []
    for n, docs in enumerate(shards):
        src = write_docs(tmp_path / f"clean-{n}.parquet", docs)
        signatures.append(tmp_path / f"sig-{n}.npz")
        run_ok("data.minhash", "--input", src, "--ngram", ngram, "--num-perm", num_perm, "--seed", 1,
               "--out", signatures[-1])
    return run_dedup(tmp_path, signatures, "--threshold", threshold, "--num-perm", num_perm, join_jobs=join_jobs)

"""download against an HTTP server on 127.0.0.1 that serves the demo dump like dumps.wikimedia.org."""
import hashlib
import json

import pytest

from conftest import DEMO_DUMP, DEMO_INDEX, REPO, FileServer, run_stage

DATE = "20261101"


DUMP_NAME = f"zhwiki-{DATE}-pages-articles-multistream.xml.bz2"
INDEX_NAME = f"zhwiki-{DATE}-pages-articles-multistream-index.txt.bz2"
SHA1_NAME = f"zhwiki-{DATE}-sha1sums.txt"


@pytest.fixture
def server():
    dump, index = DEMO_DUMP.read_bytes(), DEMO_INDEX.read_bytes()
    sums = "".join(f"{hashlib.sha1(data).hexdigest()}  {name}\n" for name, data in
                   ((DUMP_NAME, dump), (INDEX_NAME, index), (f"zhwiki-{DATE}-pages-articles.xml.bz2", b"x")))
    with FileServer.running({f"/zhwiki/{DATE}/{name}": data for name, data in
                             ((DUMP_NAME, dump), (INDEX_NAME, index), (SHA1_NAME, sums.encode()))}) as srv:
        yield srv


def download(server, out, *extra):
    return run_stage("data.download", "--source", "remote", "--mirror", server.mirror, "--date", DATE,
                     "--retries", 3, "--backoff", 0.01, "--timeout-s", 5,
                     "--dump", out / "dump.xml.bz2", "--index", out / "index.txt.bz2",
                     "--sha1sums", out / "sha1sums.txt", "--stats", out / "stats.json", "--log", out / "log", *extra)


def assert_downloaded(out):
    assert (out / "dump.xml.bz2").read_bytes() == DEMO_DUMP.read_bytes()
    assert (out / "index.txt.bz2").read_bytes() == DEMO_INDEX.read_bytes()
    assert not list(out.glob("*.part")) and not list(out.glob(".*tmp"))
    return json.loads((out / "stats.json").read_text())


def test_full_download(server, tmp_path):
    result = download(server, tmp_path)
    assert result.returncode == 0, result.stderr
    stats = assert_downloaded(tmp_path)
    assert stats["http_attempts"] == 3 and not stats["resumed"]
    assert [r for r in server.requests if r[1]] == []


def test_cut_transfer_is_resumed_with_range(server, tmp_path):
    server.cut_once.add(DUMP_NAME)
    result = download(server, tmp_path)
    assert result.returncode == 0, result.stderr
    stats = assert_downloaded(tmp_path)
    assert stats["resumed"]
    half = (len(DEMO_DUMP.read_bytes())) // 2
    assert (DUMP_NAME, f"bytes={half}-") in server.requests


def test_partial_file_left_by_a_killed_run_is_resumed(server, tmp_path):
    (tmp_path / "dump.xml.bz2.part").write_bytes(DEMO_DUMP.read_bytes()[:1000])
    result = download(server, tmp_path)
    assert result.returncode == 0, result.stderr
    assert_downloaded(tmp_path)
    assert (DUMP_NAME, "bytes=1000-") in server.requests


def test_503_then_success(server, tmp_path):
    server.failures[DUMP_NAME] = 2
    result = download(server, tmp_path)
    assert result.returncode == 0, result.stderr
    assert assert_downloaded(tmp_path)["http_attempts"] == 5
    assert (tmp_path / "log").read_text().count("HTTP 503; retry") == 2


def test_503_forever_fails_with_one_line(server, tmp_path):
    server.failures[DUMP_NAME] = 100
    result = download(server, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"download: error: {server.mirror}/zhwiki/{DATE}/{DUMP_NAME}: HTTP 503 "
                                     "Service Unavailable; check download.mirror and download.date in config.yaml")
    assert not (tmp_path / "dump.xml.bz2").exists()


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    path = f"/zhwiki/{DATE}/{DUMP_NAME}"
    server.files[path] = server.files[path][:-1] + b"\0"
    result = download(server, tmp_path)
    assert result.returncode == 1
    assert "SHA-1 mismatch" in result.stderr and DUMP_NAME in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "dump.xml.bz2").exists() and not list(tmp_path.glob("*.part"))


def test_missing_date_is_a_clear_error(server, tmp_path):
    result = run_stage("data.download", "--source", "remote", "--mirror", server.mirror, "--date", "20200101",
                       "--retries", 0, "--dump", tmp_path / "d", "--index", tmp_path / "i",
                       "--sha1sums", tmp_path / "s", "--stats", tmp_path / "j", "--log", tmp_path / "log")
    assert result.returncode == 1 and "HTTP 404" in result.stderr and "download.date" in result.stderr


def test_sample_and_local_sources(tmp_path):
    sample = tmp_path / "sample"
    result = run_stage("data.download", "--source", "sample", "--sample-dir", REPO / "demo" / "zhwiki",
                       "--dump", sample / "d", "--index", sample / "i", "--sha1sums", sample / "s",
                       "--stats", sample / "j")
    assert result.returncode == 0, result.stderr
    assert (sample / "d").read_bytes() == DEMO_DUMP.read_bytes()
    local = tmp_path / "local"
    result = run_stage("data.download", "--source", "local", "--local-dump", DEMO_DUMP, "--dump", local / "d",
                       "--index", local / "i", "--sha1sums", local / "s", "--stats", local / "j")
    assert result.returncode == 0, result.stderr
    assert (local / "d").resolve() == DEMO_DUMP.resolve() and (local / "i").stat().st_size == 0
    result = run_stage("data.download", "--source", "local", "--local-dump", tmp_path / "absent.xml.bz2",
                       "--dump", local / "d", "--index", local / "i", "--sha1sums", local / "s", "--stats", local / "j")
    assert result.returncode == 1 and "download.local_dump" in result.stderr and "absent.xml.bz2" in result.stderr

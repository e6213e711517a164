"""fetch_data against an HTTP server on 127.0.0.1: files and archives by URL, checksums, resume,
and archives whose members would escape their folder."""
import hashlib
import io
import json
import tarfile

import pytest

from conftest import REPO, FileServer, run_stage, zip_of

CHAT = (REPO / "demo/sft/demo_chat.jsonl").read_bytes()


def tar_of(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


CEVAL_LIKE = {"dev/physics_dev.csv": b"id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n",
              "val/physics_val.csv": b"id,question,A,B,C,D,answer\n0,q,a,b,c,d,B\n",
              "test/physics_test.csv": b"id,question,A,B,C,D\n0,q,a,b,c,d\n"}


@pytest.fixture
def server():
    files = {"/data/chat.jsonl": CHAT, "/data/ceval.zip": zip_of(CEVAL_LIKE), "/data/ceval.tar.gz": tar_of(CEVAL_LIKE),
             "/data/evil.zip": zip_of({"../escaped.txt": b"x"}), "/data/evil.tar.gz": tar_of({"../escaped.txt": b"x"})}
    with FileServer.running(files) as srv:
        yield srv


def fetch(server, tmp_path, name, *extra, max_gb=50):
    out = tmp_path / "fetched" / name
    result = run_stage("fetch.fetch_data", "--url", f"{server.mirror}/data/{name}", "--out", out,
                       "--downloads", tmp_path / "downloads" / name, "--stats", tmp_path / f"{name}.json",
                       "--max-gb", max_gb, "--max-unpacked-gb", 100,
                       "--retries", 2, "--backoff", 0.01, "--log", tmp_path / f"{name}.log", *extra)
    return result, out


def test_a_file_is_fetched_verified_and_its_digest_recorded(server, tmp_path):
    sha256 = hashlib.sha256(CHAT).hexdigest()
    result, out = fetch(server, tmp_path, "chat.jsonl", "--sha256", sha256)
    assert result.returncode == 0, result.stderr
    assert (out / "chat.jsonl").read_bytes() == CHAT
    stats = json.loads((tmp_path / "chat.jsonl.json").read_text())
    assert stats["sha256"] == sha256 and stats["verified"] and stats["files"] == 1


def test_without_a_checksum_the_log_says_what_to_pin(server, tmp_path):
    result, _ = fetch(server, tmp_path, "chat.jsonl")
    assert result.returncode == 0, result.stderr
    assert f"add sha256: {hashlib.sha256(CHAT).hexdigest()}" in (tmp_path / "chat.jsonl.log").read_text()


def test_a_cut_transfer_resumes_and_503s_are_retried(server, tmp_path):
    server.cut_once.add("chat.jsonl")
    server.failures["chat.jsonl"] = 1
    result, out = fetch(server, tmp_path, "chat.jsonl")
    assert result.returncode == 0, result.stderr
    assert (out / "chat.jsonl").read_bytes() == CHAT
    assert ("chat.jsonl", f"bytes={len(CHAT) // 2}-") in server.requests
    assert json.loads((tmp_path / "chat.jsonl.json").read_text())["resumed"]


def test_a_wrong_checksum_says_what_to_do_and_a_new_pin_needs_no_new_download(server, tmp_path):
    sha256 = hashlib.sha256(CHAT).hexdigest()
    result, out = fetch(server, tmp_path, "chat.jsonl", "--sha256", "0" * 64)
    assert result.returncode == 1 and not out.exists()
    [line] = result.stderr.strip().splitlines()
    kept = tmp_path / "downloads" / "chat.jsonl" / "chat.jsonl"
    assert line.startswith(f"fetch_data: error: {server.mirror}/data/chat.jsonl: SHA-256 mismatch: "
                           f"expected {'0' * 64}, got {sha256}. The file is not the one pinned")
    assert f"set its sha256 to {sha256} in config" in line and f"delete {kept} to fetch it again" in line
    assert kept.read_bytes() == CHAT
    requests = len(server.requests)
    result, out = fetch(server, tmp_path, "chat.jsonl", "--sha256", sha256)  # the user pins what upstream serves
    assert result.returncode == 0, result.stderr
    assert (out / "chat.jsonl").read_bytes() == CHAT and len(server.requests) == requests


@pytest.mark.parametrize("name", ["ceval.zip", "ceval.tar.gz"])
def test_archives_are_unpacked(server, tmp_path, name):
    result, out = fetch(server, tmp_path, name)
    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.csv")) == sorted(CEVAL_LIKE)


@pytest.mark.parametrize("name", ["evil.zip", "evil.tar.gz"])
def test_members_escaping_the_folder_are_refused(server, tmp_path, name):
    result, out = fetch(server, tmp_path, name)
    assert result.returncode == 1 and not out.exists()
    assert not (tmp_path / "fetched" / "escaped.txt").exists()
    [line] = result.stderr.strip().splitlines()
    assert "member '../escaped.txt' would be written outside" in line


def test_an_oversized_download_is_refused(server, tmp_path):
    result, out = fetch(server, tmp_path, "chat.jsonl", max_gb=1e-6)
    assert result.returncode == 1 and not out.exists()
    assert "larger than the 1,073-byte limit" in result.stderr

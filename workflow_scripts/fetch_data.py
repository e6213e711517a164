"""Fetch one data file given by URL (a chat set, preference pairs, a benchmark), verified, unpacked.

    python -m workflow_scripts.fetch_data \
        --url https://huggingface.co/datasets/ceval/ceval-exam/resolve/REV/ceval-exam.zip --sha256 HEX \
        --out results/fetched/ceval-exam.zip-1a2b3c4d5e --partial results/fetched/.partial/ceval-exam.zip-1a2b3c4d5e \
        --stats results/fetched/ceval-exam.zip-1a2b3c4d5e.json

The transfer resumes from the `.part` file under --partial (outside the rule's output, so a failed
job keeps it), is retried with backoff and must match --sha256 when one is given; without one, the
stats and the log give the digest to pin in config. A zip or tar archive is unpacked into --out
(members that would escape it, and more than --max-unpacked-gb, are refused); any other file is
placed in --out under its own name.
"""
import shutil
import time
from pathlib import Path

from workflow_scripts.lib.common import atomic_dir, file_digest, log, stage_cli, write_json
from workflow_scripts.lib.http_fetch import Fetcher, is_archive, unpack, url_file_name, verify

GB = 1 << 30


def add_arguments(ap):
    ap.add_argument("--url", required=True)
    ap.add_argument("--sha256", default="", help="the file's SHA-256; '' = not checked (the digest is logged)")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    ap.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds; doubles each time")
    ap.add_argument("--max-gb", type=float, default=50.0, help="largest download accepted")
    ap.add_argument("--max-unpacked-gb", type=float, default=100.0, help="largest unpacked archive accepted")
    ap.add_argument("--out", type=Path, required=True, help="folder that receives the file or the unpacked archive")
    ap.add_argument("--partial", type=Path, required=True, help="folder for the resumable partial download")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    started = time.monotonic()
    fetcher = Fetcher(args.retries, args.timeout, args.backoff, progress_stream, max_bytes=int(args.max_gb * GB),
                      remedy="check the url (and its revision) in config.yaml")
    name = url_file_name(args.url)
    download = args.partial / name
    if not download.exists():  # a previous run may have fetched it and then failed to unpack
        fetcher.fetch(args.url, download)
    if args.sha256:
        verify(download, args.sha256, args.url, "sha256")
    sha256 = file_digest(download, "sha256")
    if not args.sha256:
        log.warning("%s: no sha256 in config; to pin this file, add sha256: %s", args.url, sha256)
    with atomic_dir(args.out) as tmp:
        if is_archive(name):
            unpack(download, tmp, int(args.max_unpacked_gb * GB))
        else:
            shutil.copyfile(download, tmp / name)
    files = sorted(p for p in args.out.rglob("*") if p.is_file())
    write_json(args.stats, {"url": args.url, "sha256": sha256, "verified": bool(args.sha256),
                            "bytes": download.stat().st_size, "files": len(files),
                            "unpacked_bytes": sum(p.stat().st_size for p in files),
                            "http_attempts": fetcher.attempts, "resumed": fetcher.resumed,
                            "seconds": round(time.monotonic() - started, 2)})
    shutil.rmtree(args.partial)


if __name__ == "__main__":
    stage_cli("fetch_data", __doc__, add_arguments, run)

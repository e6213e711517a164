"""Fetch one data file given by URL (a chat set, preference pairs, a benchmark), verified, unpacked.

    python -m workflow_scripts.fetch.fetch_data \
        --url https://huggingface.co/datasets/ceval/ceval-exam/resolve/REV/ceval-exam.zip --sha256 HEX \
        --out results/fetched/ceval-exam.zip-1a2b3c4d5e --downloads results/fetched/.downloads/9f8e7d6c5b \
        --max-gb 50 --max-unpacked-gb 100 --stats results/fetched/ceval-exam.zip-1a2b3c4d5e.json

The download is kept under --downloads (outside the rule's output, so a failed job keeps it): an
interrupted transfer resumes from its `.part` file, and a later run with another sha256 checks the
kept file instead of fetching it again. Transfers are retried with backoff; the file must match
--sha256 when one is given (a mismatch keeps the download and says how to pin what upstream now
serves); without one, the stats and the log give the digest to pin in config. A zip or tar archive
is unpacked into --out (members that would escape it, and more than --max-unpacked-gb, are
refused); any other file is placed in --out under its own name.
"""
import os
import shutil
import time
from pathlib import Path

from workflow_scripts.lib.atomic_files import atomic_dir, file_digest, write_json
from workflow_scripts.lib.http_fetch import Fetcher, is_archive, unpack, url_file_name
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli

GB = 1 << 30


def add_arguments(ap):
    ap.add_argument("--url", required=True)
    ap.add_argument("--sha256", default="", help="the file's SHA-256; '' = not checked (the digest is logged)")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry")
    ap.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds; doubles each time")
    add_settings(ap, "fetch", "max_gb", "max_unpacked_gb")
    ap.add_argument("--out", type=Path, required=True, help="folder that receives the file or the unpacked archive")
    ap.add_argument("--downloads", type=Path, required=True,
                    help="folder that keeps the download (and its resumable partial transfer)")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    started = time.monotonic()
    fetcher = Fetcher(args.retries, args.timeout, args.backoff, progress_stream, max_bytes=int(args.max_gb * GB),
                      remedy="check the url (and its revision) in config.yaml")
    name = url_file_name(args.url)
    download = args.downloads / name
    if download.exists():
        log.info("%s: using the download kept in %s", args.url, download)
    else:
        fetcher.fetch(args.url, download)
    sha256 = file_digest(download, "sha256")
    if args.sha256 and sha256 != args.sha256.lower():
        raise StageError(f"{args.url}: SHA-256 mismatch: expected {args.sha256}, got {sha256}. The file is not the one "
                         f"pinned (upstream changed it, or the mirror serves another): check {download}, then set its "
                         f"sha256 to {sha256} in config, or pin the revision whose file has the digest expected; "
                         f"delete {download} to fetch it again")
    if not args.sha256:
        log.warning("%s: no sha256 in config; to pin this file, add sha256: %s", args.url, sha256)
    with atomic_dir(args.out) as tmp:
        if is_archive(name):
            unpack(download, tmp, int(args.max_unpacked_gb * GB))
        else:
            link_or_copy(download, tmp / name)
    files = sorted(p for p in args.out.rglob("*") if p.is_file())
    write_json(args.stats, {"url": args.url, "sha256": sha256, "verified": bool(args.sha256),
                            "bytes": download.stat().st_size, "files": len(files),
                            "unpacked_bytes": sum(p.stat().st_size for p in files),
                            "http_attempts": fetcher.attempts, "resumed": fetcher.resumed,
                            "seconds": round(time.monotonic() - started, 2)})


def link_or_copy(source: Path, dest: Path):
    """A hard link where the filesystem allows (a chat set kept twice costs no disk), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


if __name__ == "__main__":
    stage_cli("fetch_data", __doc__, add_arguments, run)

"""Fetch a zhwiki multistream dump and its index, verified against the dump's sha1sums file.

    python -m workflow_scripts.data.download --source remote --mirror https://dumps.wikimedia.org \
        --date latest --dump D.xml.bz2 --index D-index.txt.bz2 --sha1sums sha1sums.txt --stats d.json

--source remote downloads {mirror}/zhwiki/{date}/zhwiki-{date}-pages-articles-multistream.xml.bz2,
its -index.txt.bz2 and zhwiki-{date}-sha1sums.txt. An interrupted transfer is kept as `.part`
beside the output and resumed with an HTTP Range request; failures are retried with exponential
backoff; a file moves into place only once its SHA-1 matches. --source sample copies the bundled
demo dump (through the same checks); --source local links to a dump already on disk (its index
may be left out for a single-stream dump: the index output is then empty and extract reads the
dump as one shard).
"""
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from workflow_scripts.lib.atomic_files import atomic_path, file_digest, write_json
from workflow_scripts.lib.http_fetch import Fetcher, verify
from workflow_scripts.lib.settings import add_settings, definitions, typed
from workflow_scripts.lib.stage_cli import StageError, stage_cli

DUMP_SUFFIX = "pages-articles-multistream.xml.bz2"
INDEX_SUFFIX = "pages-articles-multistream-index.txt.bz2"


def expected_sha1(sha1sums: Path, suffix):
    """The checksum of the one file in a sha1sums listing whose name ends in -{suffix}."""
    for line in sha1sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition("  ")
        if name.startswith("zhwiki-") and name.endswith("-" + suffix):
            return digest
    raise StageError(f"{sha1sums}: lists no zhwiki-*-{suffix}; is this the sha1sums file of that dump?")


@dataclass(frozen=True)
class DumpFiles:
    """Where the rule wants the dump, its index and its checksums."""
    dump: Path
    index: Path
    sha1sums: Path


def download_remote(mirror, date, files, fetcher):
    base = f"{mirror.rstrip('/')}/zhwiki/{date}/zhwiki-{date}-"
    fetcher.fetch(base + "sha1sums.txt", files.sha1sums)
    fetcher.fetch(base + INDEX_SUFFIX, files.index, expected_sha1(files.sha1sums, INDEX_SUFFIX))
    fetcher.fetch(base + DUMP_SUFFIX, files.dump, expected_sha1(files.sha1sums, DUMP_SUFFIX))


def copy_sample(sample_dir, files):
    sha1sums = next(sample_dir.glob("zhwiki-*-sha1sums.txt"), None)
    if sha1sums is None:
        raise StageError(f"{sample_dir}: no zhwiki-*-sha1sums.txt; the bundled demo dump is missing")
    with atomic_path(files.sha1sums) as tmp:
        shutil.copyfile(sha1sums, tmp)
    for suffix, dest in ((INDEX_SUFFIX, files.index), (DUMP_SUFFIX, files.dump)):
        source = next(sample_dir.glob(f"zhwiki-*-{suffix}"))
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
            verify(tmp, expected_sha1(files.sha1sums, suffix), source)


def link_local(local_dump, local_index, files):
    """The user's dump and index (paths from config; an empty index is none) linked as the outputs."""
    if not local_dump or not Path(local_dump).is_file():
        raise StageError(f"download.local_dump: {local_dump!r} is not a file")
    local_dump, local_index = Path(local_dump), local_index and Path(local_index)
    if local_index and not local_index.is_file():
        raise StageError(f"download.local_index: {local_index} is not a file")
    for source, dest in ((local_dump, files.dump), (local_index, files.index)):
        with atomic_path(dest) as tmp:
            tmp.unlink()
            if source:
                tmp.symlink_to(source.resolve())
            else:
                tmp.touch()  # no index: extract reads the dump as one shard
    with atomic_path(files.sha1sums) as tmp:
        tmp.write_text(f"{file_digest(local_dump)}  {local_dump.name}\n")


def add_arguments(ap):
    add_settings(ap, "download", *definitions("download"))
    ap.add_argument("--sample-dir", type=Path, default=Path("demo/zhwiki"), help="the demo dump (source sample)")
    ap.add_argument("--backoff", type=float, default=2.0, help="first retry delay in seconds; doubles each time")
    ap.add_argument("--dump", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--sha1sums", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    started = time.monotonic()
    fetcher = Fetcher(args.retries, args.timeout_s, args.backoff, progress_stream,
                      remedy="check download.mirror and download.date in config.yaml")
    files = typed(DumpFiles, vars(args))
    {"remote": lambda: download_remote(args.mirror, args.date, files, fetcher),
     "sample": lambda: copy_sample(args.sample_dir, files),
     "local": lambda: link_local(args.local_dump, args.local_index, files)}[args.source]()
    write_json(args.stats, {"source": args.source, "date": args.date, "dump_bytes": args.dump.stat().st_size,
                            "index_bytes": args.index.stat().st_size, "http_attempts": fetcher.attempts,
                            "resumed": fetcher.resumed, "seconds": round(time.monotonic() - started, 2)})


if __name__ == "__main__":
    stage_cli("download", __doc__, add_arguments, run)

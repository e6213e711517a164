"""Helpers every stage shares: the CLI wrapper, atomic writes, the document schema, stats files."""
import argparse
import contextlib
import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DOC_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("title", pa.string()),
    ("url", pa.string()),
    ("text", pa.string()),
    ("source", pa.string()),  # zhwiki, or the name of an extra corpus (config corpora.extra)
])
# Row groups of this many documents keep a shard streamable: readers hold one group at a time.
ROW_GROUP_DOCS = 2048

# Extra-corpus ids sit above every zhwiki page id (< 2^31): 2^62 + a 24-bit hash of the source's
# name x 2^38 + the record's number in the source. They depend on neither the sharding nor the
# order in which config lists the corpora, so a document keeps its side of the split.
EXTRA_ID_BASE = 1 << 62
EXTRA_ID_RECORD_BITS = 38

log = logging.getLogger("zhwiki_llm")
UMASK = os.umask(0)
os.umask(UMASK)


# Label of a token that is not trained on (PyTorch cross-entropy's ignore_index).
IGNORE_INDEX = -100


class StageError(Exception):
    """A problem with the user's input or config: reported as one line, never as a traceback."""


def stage_cli(stage, description, add_arguments, run):
    """Parse the stage's arguments, log to --log, and turn a StageError into one line on stderr."""
    parser = argparse.ArgumentParser(prog=f"python -m workflow_scripts.{stage}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--log", type=Path, help="write the log (and progress bars) here instead of stderr")
    args = parser.parse_args()
    rank = os.environ.get("RANK", "0")
    if args.log and rank != "0":  # each process of a distributed stage logs to its own file
        args.log = args.log.with_name(f"{args.log.name}.rank{rank}")
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
    stream = open(args.log, "w", encoding="utf-8") if args.log else sys.stderr
    logging.basicConfig(stream=stream, level=logging.INFO, format=f"%(asctime)s {stage} %(message)s")
    try:
        run(args, progress_stream=stream)
    except StageError as err:
        line = f"{stage}: error: {err}"
        log.error("error: %s", err)
        if stream is not sys.stderr:
            print(line, file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def atomic_path(dest):
    """Yield a temporary path beside `dest`; it replaces `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; outputs should be as readable as any other
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(dest):
    """Yield a temporary directory beside `dest`; it replaces `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~UMASK)
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def peak_rss_mb():
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def file_digest(path, algorithm="sha1"):
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj):
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


class DocWriter:
    """Stream documents into a Parquet file with DOC_SCHEMA, written atomically on close."""

    def __init__(self, path):
        self._atomic = atomic_path(path)
        self._writer = pq.ParquetWriter(self._atomic.__enter__(), DOC_SCHEMA, compression="zstd")
        self._rows = []
        self.docs = 0
        self.chars = 0

    def write(self, doc):
        self._rows.append(doc)
        self.docs += 1
        self.chars += len(doc["text"])
        if len(self._rows) >= ROW_GROUP_DOCS:
            self._flush()

    def _flush(self):
        self._writer.write_table(pa.Table.from_pylist(self._rows, schema=DOC_SCHEMA))
        self._rows = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._rows:
            self._flush()
        self._writer.close()
        self._atomic.__exit__(exc_type, exc, tb)


def open_parquet(path, remedy="rerun the stage that wrote it"):
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise StageError(f"{path}: not a readable Parquet file ({err}); {remedy}") from None


def open_docs(path):
    """A document file (DOC_SCHEMA) opened for reading; a one-line error for anything else."""
    pf = open_parquet(path)
    if not pf.schema_arrow.equals(DOC_SCHEMA, check_metadata=False):
        raise StageError(f"{path}: columns {pf.schema_arrow.names} are not {DOC_SCHEMA.names}")
    return pf


def read_docs(paths):
    """Yield documents as dicts from Parquet files, one row group in memory at a time."""
    for path in paths:
        pf = open_docs(path)
        for group in range(pf.num_row_groups):
            yield from pf.read_row_group(group).to_pylist()


def capped_texts(train_path, max_chars):
    """The train split's texts, stopping once max_chars characters were given (0: no cap)."""
    given = 0
    for doc in read_docs([train_path]):
        yield doc["text"]
        given += len(doc["text"])
        if max_chars and given >= max_chars:
            return


# The per-corpus table of corpus_summary (markdown) and run_summary (the report's HTML page).
SOURCE_KEYS = ["source", "weight", "read", "after_clean", "after_dedup", "train_documents", "train_characters",
               "validation_documents"]
SOURCE_COLUMNS = ["corpus", "weight", "read", "after clean", "after dedup", "train documents (weighted)",
                  "train characters (weighted)", "validation documents"]

def markdown_table(header, rows):
    """A GitHub markdown table; columns after the first are right-aligned (they hold numbers)."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def extra_doc_id(source, record):
    if record >= 1 << EXTRA_ID_RECORD_BITS:
        raise StageError(f"corpus {source}: more than 2^{EXTRA_ID_RECORD_BITS} records; split it into several sources")
    return EXTRA_ID_BASE + ((zlib.crc32(source.encode()) & 0xFFFFFF) << EXTRA_ID_RECORD_BITS) + record


def count_docs(paths):
    return sum(open_docs(p).metadata.num_rows for p in paths)

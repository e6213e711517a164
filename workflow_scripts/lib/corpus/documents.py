"""Document files: Parquet with DOC_SCHEMA, written in streamable row groups and read one group
at a time, and the ids of extra corpora's documents."""
import zlib

import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.lib.atomic_files import atomic_path
from workflow_scripts.lib.stage_cli import StageError

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


class DocWriter:
    """Stream documents into a Parquet file with DOC_SCHEMA, written atomically on close."""

    def __init__(self, path):
        self._atomic = atomic_path(path)
        # Dictionary encoding only where values repeat: on every column it slowed the extract stage for
        # no smaller file, the texts and titles being all distinct.
        self._writer = pq.ParquetWriter(self._atomic.__enter__(), DOC_SCHEMA, compression="zstd",
                                        use_dictionary=["source"])
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


def extra_doc_id(source, record):
    if record >= 1 << EXTRA_ID_RECORD_BITS:
        raise StageError(f"corpus {source}: more than 2^{EXTRA_ID_RECORD_BITS} records; split it into several sources")
    return EXTRA_ID_BASE + ((zlib.crc32(source.encode()) & 0xFFFFFF) << EXTRA_ID_RECORD_BITS) + record


def count_docs(paths):
    return sum(open_docs(p).metadata.num_rows for p in paths)

"""Read one shard of an extra local corpus (text, JSONL or Parquet files) into the document schema.

    python -m workflow_scripts.ingest --name textbook --files 'corpora/textbook/*.txt' \
        --shard 0 --shards 1 --out ingest/textbook-000.parquet --stats ingest/textbook-000.json

The format follows each file's suffix:
  .txt       one document per file (title: the file name), or per blank-line-separated
             paragraph with --txt-document paragraph;
  .jsonl     one JSON object per line, the text in --text-field and the title in --title-field
             (optional: without it, the title is the source name and the record number);
  .parquet   the same fields as columns, read one row group at a time.
Records are numbered across the files in the order given; record r goes to shard r mod --shards,
and its document id is common.extra_doc_id(name, r), so ids do not depend on the sharding. The
converted, cleaned and deduplicated documents then flow with zhwiki's (rules/data.smk).
"""
import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from workflow_scripts.common import DocWriter, StageError, extra_doc_id, log, stage_cli, write_json

def txt_records(path: Path, unit, fields):
    text = path.read_text(encoding="utf-8")
    if unit == "file":
        yield path.stem, text, str(path)
        return
    for k, paragraph in enumerate(p for p in text.split("\n\n") if p.strip()):
        yield f"{path.stem} #{k + 1}", paragraph, f"{path}#{k + 1}"


def jsonl_records(path: Path, unit, fields):
    text_field, title_field = fields
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise StageError(f"{path}:{line_no}: not valid JSON ({err.msg}); fix or delete the line") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise StageError(f"{path}:{line_no}: no string field {text_field!r} (has {keys}); set this "
                                 "corpus's text_field in config corpora.extra")
            yield record.get(title_field), record[text_field], f"{path}:{line_no}"


def parquet_records(path: Path, unit, fields):
    text_field, title_field = fields
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise StageError(f"{path}: not a readable Parquet file ({err})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise StageError(f"{path}: no column {text_field!r} (has {names}); set this corpus's text_field in "
                         "config corpora.extra")
    columns = [text_field] + ([title_field] if title_field in names else [])
    row = 0
    for batch in pf.iter_batches(columns=columns):
        for record in batch.to_pylist():
            row += 1
            yield record.get(title_field), record[text_field], f"{path}#row{row}"


READERS = {".txt": txt_records, ".jsonl": jsonl_records, ".parquet": parquet_records}


def records(files, unit, fields):
    """(title, text, origin) for every record of the files, in order."""
    for path in files:
        if path.suffix not in READERS:
            raise StageError(f"{path}: unknown format; corpora take {', '.join(READERS)} files")
        try:
            yield from READERS[path.suffix](path, unit, fields)
        except UnicodeDecodeError as err:
            raise StageError(f"{path}: not UTF-8 (byte {err.start}); convert it, e.g. iconv -f GB18030 -t UTF-8") from None


def add_arguments(ap):
    ap.add_argument("--name", required=True, help="the corpus's name (its documents' source)")
    ap.add_argument("--files", type=Path, nargs="+", required=True)
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--title-field", default="title")
    ap.add_argument("--txt-document", choices=("file", "paragraph"), default="file")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    empty = 0
    stream = records(args.files, args.txt_document, (args.text_field, args.title_field))
    mine = itertools.islice(enumerate(stream), args.shard, None, args.shards)
    with DocWriter(args.out) as writer:
        for number, (title, text, origin) in tqdm(mine, file=progress_stream, desc=f"ingest {args.name}",
                                                  mininterval=5):
            if not text or not text.strip():
                empty += 1
                continue
            writer.write({"id": extra_doc_id(args.name, number), "title": title or f"{args.name} #{number}",
                          "url": origin, "text": text, "source": args.name})
    stats = {"source": args.name, "files": len(args.files), "records": writer.docs + empty,
             "dropped": {"empty": empty}, "documents": writer.docs, "characters": writer.chars}
    write_json(args.stats, stats)
    log.info("%s", stats)


if __name__ == "__main__":
    stage_cli("ingest", __doc__, add_arguments, run)

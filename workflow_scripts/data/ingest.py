"""Read one shard of an extra local corpus (text, JSONL or Parquet files) into the document schema.

    python -m workflow_scripts.data.ingest --name textbook --files 'corpora/textbook/*.txt' \
        --shard 0 --shards 1 --out ingest/textbook-000.parquet --stats ingest/textbook-000.json

The format follows each file's suffix:
  .txt       one document per file (title: the file name), or per blank-line-separated
             paragraph with --txt-document paragraph;
  .jsonl     one JSON object per line, the text in --text-field and the title in --title-field
             (optional: without it, the title is the source name and the record number);
  .parquet   the same fields as columns, read one row group at a time.
Records are numbered across the files in the order given; record r goes to shard r mod --shards,
and its document id is common.extra_doc_id(name, r), so ids do not depend on the sharding. A shard
job counts every record but decodes only its own (JSON lines, Parquet rows, one-document-per-file
texts), so n shards do not parse the corpus n times; a bad record is reported by the job of its shard.
The converted, cleaned and deduplicated documents then flow with zhwiki's (rules/data.smk).
"""
import json
from pathlib import Path

from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.documents import DocWriter, extra_doc_id, open_parquet
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli


class ShardCounter:
    """Numbers the records across all files; a number is this shard's when it is shard mod shards."""

    def __init__(self, shard, shards):
        self.shard, self.shards, self.records = shard, shards, 0

    def next(self):
        """The next record's number if it is this shard's, else None."""
        number, self.records = self.records, self.records + 1
        return number if number % self.shards == self.shard else None


def txt_records(path: Path, unit, fields, counter):
    if unit == "file":
        number = counter.next()
        if number is not None:
            yield number, path.stem, path.read_text(encoding="utf-8"), str(path)
        return
    paragraphs = (p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip())
    for k, paragraph in enumerate(paragraphs):
        number = counter.next()
        if number is not None:
            yield number, f"{path.stem} #{k + 1}", paragraph, f"{path}#{k + 1}"


def jsonl_records(path: Path, unit, fields, counter):
    text_field, title_field = fields
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip() or (number := counter.next()) is None:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise StageError(f"{path}:{line_no}: not valid JSON ({err.msg}); fix or delete the line") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise StageError(f"{path}:{line_no}: no string field {text_field!r} (has {keys}); set this "
                                 "corpus's text_field in config corpora.extra")
            yield number, record.get(title_field), record[text_field], f"{path}:{line_no}"


def parquet_records(path: Path, unit, fields, counter):
    text_field, title_field = fields
    pf = open_parquet(path, remedy="check the file config corpora.extra names")
    names = pf.schema_arrow.names
    if text_field not in names:
        raise StageError(f"{path}: no column {text_field!r} (has {names}); set this corpus's text_field in "
                         "config corpora.extra")
    columns = [text_field] + ([title_field] if title_field in names else [])
    first_row = 0
    for batch in pf.iter_batches(columns=columns):
        numbers = [counter.next() for _ in range(batch.num_rows)]
        rows = [row for row, number in enumerate(numbers) if number is not None]
        for row, record in zip(rows, batch.take(rows).to_pylist()):
            yield numbers[row], record.get(title_field), record[text_field], f"{path}#row{first_row + row + 1}"
        first_row += batch.num_rows


READERS = {".txt": txt_records, ".jsonl": jsonl_records, ".parquet": parquet_records}


def records(files, unit, fields, counter):
    """(number, title, text, origin) for each of this shard's records of the files, in order."""
    for path in files:
        if path.suffix not in READERS:
            raise StageError(f"{path}: unknown format; corpora take {', '.join(READERS)} files")
        try:
            yield from READERS[path.suffix](path, unit, fields, counter)
        except UnicodeDecodeError as err:
            raise StageError(f"{path}: not UTF-8 (byte {err.start}); convert it, "
                             "e.g. iconv -f GB18030 -t UTF-8") from None


def add_arguments(ap):
    ap.add_argument("--name", required=True, help="the corpus's name (its documents' source)")
    ap.add_argument("--files", type=Path, nargs="+", required=True)
    add_settings(ap, "corpora.extra", "text_field", "title_field", "txt_document", "shards")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    empty = 0
    counter = ShardCounter(args.shard, args.shards)
    mine = records(args.files, args.txt_document, (args.text_field, args.title_field), counter)
    with DocWriter(args.out) as writer:
        for number, title, text, origin in tqdm(mine, file=progress_stream, desc=f"ingest {args.name}",
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

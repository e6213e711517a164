"""Extract plain-text articles from one shard of a zhwiki dump with WikiExtractor.

    python -m workflow_scripts.data.extract --dump D.xml.bz2 --index D-index.txt.bz2 \
        --shard 0 --shards 4 --out shard-000.parquet --stats shard-000.json

A multistream dump is cut along its index into `--shards` runs of whole bz2 streams, so every
shard job decompresses and parses only its own bytes: the stock `wikiextractor` reads the whole
dump in one process and feeds its workers through queues, which caps it at that one reader's
speed. Without an index (a single-stream dump, a plain .xml) shard 0 takes the whole file.

Pages are checked as they are read (every page needs <title>, <ns>, <id> and <text>; an empty
<text/> must carry the SHA-1 of the empty string), and a broken or truncated dump stops the job
with one line naming the file and the page. Only namespace-0 articles are kept; redirects and,
unless --keep-disambiguation, disambiguation pages are dropped. Before WikiExtractor cleans the
wikitext, zhwiki's -{…}- language-conversion markup is resolved and list markers are removed so
list items survive as text; afterwards headings lose the '.' WikiExtractor appends and brackets
left empty by removed templates are deleted.
"""
import bz2
import collections
import html
import re
from pathlib import Path

from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.documents import DocWriter
from workflow_scripts.lib.corpus.multistream_index import shard_ranges, stream_offsets
from workflow_scripts.lib.corpus.wikitext_cleaning import clean_paragraphs, extractor_for
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli

EMPTY_SHA1 = {"phoiac9h4m842xq45sp7s6u21eteeq1", "da39a3ee5e6b4b0d3255bfef95601890afd80709"}
FIELD = re.compile(r"<(\w+)[^>]*>([^<]*)</\1>")
ATTR = re.compile(r'(\w+)="([^"]*)"')

CONVERSION = re.compile(r"-\{((?:(?!-\{|\}-).)*)\}-", re.S)
CONVERSION_FLAGS = re.compile(r"[A-Za-z\-;\s]+")
# A variant is `zh-xx:text`, or `source=>zh-xx:text` for a one-way rule.
VARIANT_PAIR = re.compile(r"\s*(?:[^;:]*=>\s*)?(zh(?:-[a-z]{2,4})?)\s*:(.*)", re.S)
VARIANT_SPLIT = re.compile(r";(?=\s*(?:[^;:]*=>\s*)?zh(?:-[a-z]{2,4})?\s*:)")
# Simplified first (what the corpus ends up as), then traditional, as issue #2 asks.
VARIANT_ORDER = ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh", "zh-hant", "zh-tw", "zh-hk", "zh-mo")
HIDDEN_FLAGS = {"H", "T", "-", "D"}

DISAMBIGUATION = re.compile(r"\{\{\s*(?:disambig|dab|hndis|geodis|[^{}|]*消歧[义義])\s*(?:\||\}\})", re.I)
LIST_MARKER = re.compile(r"^[*#:;]+[ \t]*", re.M)
EMPTY_BRACKETS = re.compile(r"[（(](?:[^（）()\n]{1,8}[：:])?[\s，,、;；]*[)）]")


def resolve_conversion(text):
    """Replace every -{…}- with the text zh-hans readers see; innermost first, so nesting works."""
    while "-{" in text:
        resolved = CONVERSION.sub(_resolve_one, text)
        if resolved == text:
            break
        text = resolved
    return text


def _resolve_one(match):
    body = match.group(1)
    flags, bar, rest = body.partition("|")
    if bar and CONVERSION_FLAGS.fullmatch(flags):
        if HIDDEN_FLAGS & set(flags.replace(";", " ").split()):
            return ""  # rule definitions (H, T, -, D) show nothing where they stand
        body = rest
    if not VARIANT_PAIR.match(body):
        return body
    variants = {}
    for part in VARIANT_SPLIT.split(body.rstrip().removesuffix(";")):
        m = VARIANT_PAIR.match(part)
        if m:
            variants.setdefault(m.group(1), m.group(2).strip())
    return next((variants[v] for v in VARIANT_ORDER if v in variants), next(iter(variants.values())))


class DumpReader:
    """The lines of one shard of a dump, and the site's base URL from its <siteinfo>."""

    def __init__(self, dump: Path, index: Path | None, shard: int, shards: int):
        # download links a local dump (source: local) into results/: errors name the user's own file,
        # and a damaged one is to be checked, not downloaded again.
        local = dump.is_symlink()
        self.dump = dump.resolve() if local else dump
        self.remedy = "check it (bzip2 -t) or export it again" if local else "download it again"
        has_index = index is not None and index.stat().st_size > 0  # download writes an empty one for none
        self.offsets = stream_offsets(index, dump.stat().st_size) if has_index else None
        self.ranges = shard_ranges(self.offsets, shard, shards) if self.offsets else None
        self.whole_file = self.offsets is None and shard == 0
        self.urlbase = self._read_urlbase()

    def _read_urlbase(self):
        header = (self._decompress(0, self.offsets[0]) if self.offsets else "".join(self._plain_lines(200)))
        base = re.search(r"<base>([^<]*)</base>", header)
        if not base:
            raise StageError(f"{self.dump}: no <siteinfo><base> in the dump header; is this a MediaWiki export?")
        return base.group(1).rsplit("/", 1)[0]

    def _decompress(self, start, end):
        with open(self.dump, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        try:
            return bz2.decompress(data).decode("utf-8")
        except (OSError, ValueError, EOFError) as err:
            raise StageError(f"{self.dump}: bz2 stream at byte {start} is damaged ({err}); "
                             f"the file is truncated or corrupt: {self.remedy}") from None

    def _plain_lines(self, limit=None):
        """The whole dump's lines, bz2-compressed or plain XML, told apart by its first bytes (not its name)."""
        with open(self.dump, "rb") as fh:
            compressed = fh.read(3) == b"BZh"
        opener = bz2.open if compressed else open
        try:
            with opener(self.dump, "rt", encoding="utf-8") as fh:
                for n, line in enumerate(fh):
                    if limit is not None and n >= limit:
                        return
                    yield line
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise StageError(f"{self.dump}: cannot be read to the end ({err}); "
                             f"the file is truncated or corrupt: {self.remedy}") from None

    @property
    def total_bytes(self):
        if self.ranges is not None:
            return sum(end - start for start, end in self.ranges)
        return self.dump.stat().st_size if self.whole_file else 0

    def lines(self, progress):
        if self.ranges is not None:
            for start, end in self.ranges:
                yield from self._decompress(start, end).splitlines(keepends=True)
                progress.update(end - start)
        elif self.whole_file:
            yield from self._plain_lines()
            progress.update(self.total_bytes)


def iter_pages(lines, source, remedy):
    """Yield each <page> as a dict, raising StageError on a page the dump format does not allow."""
    page, text, in_text = None, None, False
    for line in lines:
        if in_text:
            end = line.find("</text>")
            text.append(line if end < 0 else line[:end])
            in_text = end < 0
            continue
        tag = line.lstrip()[:10]
        if tag.startswith("<page>"):
            if page is not None:
                raise _malformed(source, page, "a new <page> starts before </page>")
            page, text = {"title": None, "ns": None, "id": None, "redirect": None, "sha1": None}, None
        elif page is None:
            continue
        elif tag.startswith(("<text>", "<text ", "<text/")):
            head, _, rest = line.partition(">")
            text = []
            if head.endswith("/"):
                page["deleted"] = "deleted=" in head
                continue
            end = rest.find("</text>")
            text.append(rest if end < 0 else rest[:end])
            in_text = end < 0
        elif tag.startswith("</page>"):
            yield _finished(source, page, text)
            page = None
        elif tag.startswith("<redirect"):
            page["redirect"] = html.unescape(dict(ATTR.findall(line)).get("title", ""))
        else:
            field = FIELD.search(line)
            if field and field.group(1) in page and page[field.group(1)] is None:
                page[field.group(1)] = html.unescape(field.group(2))
    if page is not None:
        raise _malformed(source, page, f"the file ends inside this page: it is truncated, {remedy}")


def _finished(source, page, text):
    for field in ("title", "ns", "id"):
        if page[field] is None:
            raise _malformed(source, page, f"the page has no <{field}>")
    if text is None:
        raise _malformed(source, page, "the page has no <text> element")
    if not text and not page.get("deleted") and page["sha1"] not in EMPTY_SHA1:
        raise _malformed(source, page, "<text/> is empty but <sha1> belongs to a non-empty text: the page is cut")
    page["text"] = html.unescape("".join(text))
    return page


def _malformed(source, page, why):
    where = f"page id={page.get('id')} title={page.get('title')!r}"
    return StageError(f"{source}: malformed dump at {where}: {why}")


def article_paragraphs(page, extractor, keep_headings):
    """WikiExtractor's clean text of one page, as a list of paragraphs (headings on their own)."""
    wikitext = LIST_MARKER.sub("", resolve_conversion(page["text"]))
    paragraphs = []
    for line in clean_paragraphs(extractor, wikitext):
        if line.startswith("## "):
            if not keep_headings:
                continue
            line = line[3:].removesuffix(".")
        line = EMPTY_BRACKETS.sub("", line).strip()
        if line:
            paragraphs.append(line)
    return paragraphs


def extract_shard(reader, out, keep_disambiguation, keep_headings, progress_stream):
    counts = collections.Counter()
    extractor = extractor_for(reader.urlbase)
    with DocWriter(out) as writer, tqdm(total=reader.total_bytes, unit="B", unit_scale=True,
                                        file=progress_stream, desc="extract", mininterval=5) as bar:
        for page in iter_pages(reader.lines(bar), reader.dump, reader.remedy):
            counts["pages"] += 1
            if page["ns"] != "0":
                counts["other_namespace"] += 1
            elif page["redirect"] is not None or page["text"].lstrip()[:9].upper() in ("#REDIRECT", "#重定向"):
                counts["redirect"] += 1
            elif not keep_disambiguation and DISAMBIGUATION.search(page["text"]):
                counts["disambiguation"] += 1
            else:
                paragraphs = article_paragraphs(page, extractor, keep_headings)
                if not paragraphs:
                    counts["empty"] += 1
                    continue
                writer.write({"id": int(page["id"]), "title": resolve_conversion(page["title"]),
                              "url": f"{reader.urlbase}?curid={page['id']}", "text": "\n".join(paragraphs),
                              "source": "zhwiki"})
    return {"pages": counts["pages"], "dropped": {k: counts[k] for k in
                                                  ("other_namespace", "redirect", "disambiguation", "empty")},
            "documents": writer.docs, "characters": writer.chars}


def add_arguments(ap):
    ap.add_argument("--dump", type=Path, required=True, help="pages-articles(-multistream).xml[.bz2]")
    ap.add_argument("--index", type=Path, help="the multistream index; without it (or if it is empty) shard 0 "
                    "reads the whole dump")
    ap.add_argument("--shard", type=int, default=0)
    add_settings(ap, "extract", "shards", "keep_disambiguation", "keep_headings")
    ap.add_argument("--out", type=Path, required=True, help="Parquet file (id, title, url, text)")
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    if not 0 <= args.shard < args.shards:
        raise StageError(f"--shard {args.shard} is outside 0..{args.shards - 1}")
    for path in (args.dump, args.index):
        if path is not None and not path.is_file():
            raise StageError(f"{path}: no such file")
    reader = DumpReader(args.dump, args.index, args.shard, args.shards)
    stats = extract_shard(reader, args.out, args.keep_disambiguation, args.keep_headings, progress_stream)
    stats.update(shard=args.shard, shards=args.shards, bytes=reader.total_bytes)
    write_json(args.stats, stats)
    log.info("shard %d/%d: %d pages -> %d documents, %d characters", args.shard, args.shards,
             stats["pages"], stats["documents"], stats["characters"])


if __name__ == "__main__":
    stage_cli("extract", __doc__, add_arguments, run)

"""Normalise one shard's text and drop documents that are too short, not Chinese, or repetitive.

    python -m workflow_scripts.data.clean --input convert/shard-000.parquet --min-chars 200 \
        --min-han-fraction 0.4 --max-duplicate-line-fraction 0.3 --repetition-ngram 10 \
        --max-repeated-ngram-fraction 0.3 --out clean/shard-000.parquet --stats clean/shard-000.json

Normalisation keeps full-width punctuation (lib/corpus/text_normalization.py). Each filter's count of
removed documents goes into the stats file; a document is counted under the first filter it fails.
"""
import collections
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.documents import DocWriter, count_docs, read_docs
from workflow_scripts.lib.corpus.text_normalization import normalize
from workflow_scripts.lib.settings import add_settings, definitions, typed
from workflow_scripts.lib.stage_cli import log, stage_cli

HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
FILTERS = ("too_short", "low_han_fraction", "duplicate_lines", "repeated_ngrams")


def han_fraction(text):
    visible = len(text) - sum(map(text.count, " \n"))
    return len(HAN.findall(text)) / visible if visible else 0.0


def duplicate_line_fraction(text):
    """Share of characters that sit in lines appearing more than once."""
    lines = text.split("\n")
    counts = collections.Counter(lines)
    return sum(len(line) for line in lines if counts[line] > 1) / max(1, len(text))


def repeated_ngram_fraction(text, n):
    """Share of character n-grams that repeat an earlier n-gram of the same document."""
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class Filters:
    min_chars: int
    min_han_fraction: float
    max_duplicate_line_fraction: float
    repetition_ngram: int
    max_repeated_ngram_fraction: float


def failed_filter(text, filters):
    if len(text) < filters.min_chars:
        return "too_short"
    if han_fraction(text) < filters.min_han_fraction:
        return "low_han_fraction"
    if duplicate_line_fraction(text) > filters.max_duplicate_line_fraction:
        return "duplicate_lines"
    if repeated_ngram_fraction(text, filters.repetition_ngram) > filters.max_repeated_ngram_fraction:
        return "repeated_ngrams"
    return None


def add_arguments(ap):
    ap.add_argument("--input", type=Path, required=True)
    add_settings(ap, "clean", *definitions("clean"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    removed, filters = dict.fromkeys(FILTERS, 0), typed(Filters, vars(args))
    with DocWriter(args.out) as writer:
        for doc in tqdm(read_docs([args.input]), total=count_docs([args.input]), file=progress_stream,
                        desc="clean", mininterval=5):
            text = normalize(doc["text"])
            reason = failed_filter(text, filters)
            if reason:
                removed[reason] += 1
            else:
                writer.write({**doc, "title": normalize(doc["title"]), "text": text})
    write_json(args.stats, {"documents": writer.docs, "characters": writer.chars, "removed": removed})
    log.info("%d documents kept, %d characters; removed %s", writer.docs, writer.chars, removed)


if __name__ == "__main__":
    stage_cli("clean", __doc__, add_arguments, run)

"""Whether two demo runs made the same outputs: for a change that must not change what the workflow makes.

    python benchmarks/compare_demo_outputs.py BEFORE/results AFTER/results --out benchmarks/results/NAME.md

Compares, byte for byte, the corpus Parquet files and the tokenizer; and, value for value, every
pretraining and SFT metrics record except wall-clock fields (time, tokens per second). Exits 1
when anything differs; the markdown table says what.
"""
import argparse
import json
import sys
from pathlib import Path

from workflow_scripts.lib.atomic_files import file_digest

BYTE_FILES = ["corpus/train.parquet", "corpus/validation.parquet", "tokenizer/tokenizer.json",
              "tokenizer/tokenizer_config.json", "tokens/index.json"]
CURVES = ["pretrain/metrics.jsonl", "sft/metrics.jsonl"]
WALL_CLOCK = {"time", "tokens_per_s"}


def curve(path: Path):
    records = map(json.loads, path.read_text().splitlines())
    return [{k: v for k, v in record.items() if k not in WALL_CLOCK} for record in records]


def describe(records):
    return f"{len(records)} steps, final loss {records[-1]['loss']:.6f}" if records else "empty"


def compare(before: Path, after: Path):
    rows = []
    for name in BYTE_FILES:
        a, b = file_digest(before / name)[:12], file_digest(after / name)[:12]
        rows.append((name, f"sha1 {a}", f"sha1 {b}", a == b))
    for name in CURVES:
        a, b = curve(before / name), curve(after / name)
        rows.append((name, describe(a), describe(b), a == b))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = compare(args.before, args.after)
    table = "| output | before | after | identical |\n|---|---|---|---|\n" + "".join(
        f"| `{name}` | {a} | {b} | {'yes' if same else '**no**'} |\n" for name, a, b, same in rows)
    print(table)
    if args.out:
        args.out.write_text(table)
    sys.exit(0 if all(same for *_, same in rows) else 1)


if __name__ == "__main__":
    main()

"""Read, check and mix the chat files of SFT (or DPO's preference pairs, or GRPO's questions) into one
normalised file.

    python -m workflow_scripts.training.chat_data --kind sft --seed 0 \
        --sources '[{"path": "demo/sft/demo_chat.jsonl", "weight": 1.0}, {"path": "firefly.jsonl", "weight": 0.5,
                    "formatting": "sharegpt", "columns": {"messages": "conversation"},
                    "tags": {"role_tag": "", "user_tag": "human", "assistant_tag": "assistant"}}]' \
        --out results/chat_data/sft.jsonl --stats results/chat_data/sft.json

Runs before training, so a bad, empty or unrecognised file fails here, naming the file (and the
record and field), and the last good model stays in place. Each SFT source is read in its declared
layout (`formatting`, `columns`, `tags`: workflow_scripts.lib.training.sft_data.Layout) or the one detected from
its first record, and mixed by weight: a weight w takes each record floor(w) times plus a seeded
share w - floor(w) of them once more. SFT output: JSONL of {messages: [{role, content}]}; DPO
output: JSONL of trl's conversational pairs {prompt, chosen, rejected}. GRPO output: JSONL of
{prompt, question, answer[, candidates]}, each source's field names given by its `columns`; a
record without its answer stops here. Each is read back by its training stage.
"""
import json
import random
from pathlib import Path

from workflow_scripts.lib.atomic_files import atomic_path, write_json
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.sft_data import (Layout, ReadStats, converted_records, read_conversations,
                                                    to_pair, to_question, weighted)


def sft_records(source, skip_bad, stats):
    layout = Layout.from_config(source) if source.get("formatting") else None
    return [{"messages": messages} for messages in read_conversations(Path(source["path"]), skip_bad, stats, layout)]


def dpo_records(source, skip_bad, stats):
    return list(converted_records(Path(source["path"]), to_pair, skip_bad, stats, setting="dpo.skip_bad_records"))


def grpo_records(source, skip_bad, stats):
    return list(converted_records(Path(source["path"]), lambda record: to_question(record, source.get("columns")),
                                  skip_bad, stats, setting="grpo.skip_bad_records"))


READERS = {"sft": sft_records, "dpo": dpo_records, "grpo": grpo_records}


def add_arguments(ap):
    ap.add_argument("--kind", choices=sorted(READERS), required=True)
    ap.add_argument("--sources", type=json.loads, required=True,
                    help="JSON list of {path, weight, formatting, columns, tags} (weight and layout: SFT only; "
                         "columns: SFT and GRPO)")
    # dpo.skip_bad_records and dpo.seed share these definitions (config/schema.yaml $defs)
    add_settings(ap, "sft", "skip_bad_records", "seed")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    rng = random.Random(args.seed)
    records, files = [], {}
    for source in args.sources:
        stats = ReadStats()
        read = READERS[args.kind](source, args.skip_bad_records, stats)
        mixed = weighted(read, source.get("weight", 1.0), rng)
        records += mixed
        files[source["path"]] = {"records": stats.records, "skipped_bad": stats.skipped,
                                 "trimmed_unanswered": stats.trimmed_unanswered, "weight": source.get("weight", 1.0),
                                 "written": len(mixed)}
        for error in stats.errors[:5]:
            log.warning("%s: skipped %s", source["path"], error)
        log.info("%s: %s", source["path"], files[source["path"]])
    if not records:
        raise StageError(f"{', '.join(files)}: the weights left no records; raise them in config")
    with atomic_path(args.out) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    write_json(args.stats, {"kind": args.kind, "records": len(records), "files": files})
    print(f"{args.kind}: {len(records)} records from {len(files)} files", file=progress_stream)


if __name__ == "__main__":
    stage_cli("chat_data", __doc__, add_arguments, run)

"""Convert one shard's titles and texts from traditional to simplified Chinese with OpenCC.

    python -m workflow_scripts.data.convert --opencc-config t2s --input extract/shard-000.parquet \
        --out convert/shard-000.parquet --stats convert/shard-000.json

--opencc-config names an OpenCC configuration: t2s (traditional to simplified), tw2sp (Taiwan usage
to mainland usage, phrases included), hk2s (Hong Kong to simplified) or none (an extra corpus that
is already simplified: copied unchanged).
"""
from pathlib import Path

import opencc
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json
from workflow_scripts.lib.corpus.documents import DocWriter, count_docs, read_docs
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import log, stage_cli

OPENCC_CONFIGS = ("t2s", "tw2sp", "hk2s", "none")


class Unchanged:
    def convert(self, text):
        return text


def add_arguments(ap):
    add_settings(ap, "convert", "opencc_config")
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stats", type=Path, required=True)


def run(args, progress_stream):
    converter = Unchanged() if args.opencc_config == "none" else opencc.OpenCC(args.opencc_config)
    changed = 0
    with DocWriter(args.out) as writer:
        docs = read_docs([args.input])
        for doc in tqdm(docs, total=count_docs([args.input]), file=progress_stream, desc="convert", mininterval=5):
            text = converter.convert(doc["text"])
            changed += text != doc["text"]
            writer.write({**doc, "title": converter.convert(doc["title"]), "text": text})
    write_json(args.stats, {"config": args.opencc_config, "documents": writer.docs, "characters": writer.chars,
                            "documents_changed": changed})
    log.info("%d documents (%d changed), %d characters", writer.docs, changed, writer.chars)


if __name__ == "__main__":
    stage_cli("convert", __doc__, add_arguments, run)

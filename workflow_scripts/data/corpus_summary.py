"""Summarise the data funnel: documents and characters after each stage and each filter, in all
and for each corpus (zhwiki and the extra ones).

    python -m workflow_scripts.data.corpus_summary --extract extract/*.json --ingest ingest/*.json \
        --convert convert/*.json --clean clean/*.json --dedup dedup/stats.json --split corpus/split.json \
        --json corpus/summary.json --markdown corpus/summary.md --plot corpus/funnel.png
"""
from dataclasses import dataclass
from pathlib import Path

from workflow_scripts.lib.atomic_files import read_json, write_json, write_text
from workflow_scripts.lib.plots import plt, save_png
from workflow_scripts.lib.settings import typed
from workflow_scripts.lib.stage_cli import stage_cli
from workflow_scripts.lib.summary_tables import SOURCE_COLUMNS, SOURCE_KEYS, markdown_table


def summed(paths, *keys):
    """Sum a (possibly nested) field over per-shard stats files."""
    total = 0
    for path in paths:
        value = read_json(path)
        for key in keys:
            value = value[key]
        total += value
    return total


@dataclass(frozen=True)
class StageStats:
    """The stats files of the data stages, each a list over shards (dedup's and split's are one)."""
    extract: list
    ingest: list
    convert: list
    clean: list
    dedup: Path
    split: Path


def funnel(files):
    split = read_json(files.split)
    dedup = read_json(files.dedup)
    rows = [{"step": "dump pages", "documents": summed(files.extract, "pages"), "characters": None}]
    for reason in ("other_namespace", "redirect", "disambiguation", "empty"):
        rows.append({"step": f"extract: drop {reason}", "documents": -summed(files.extract, "dropped", reason),
                     "characters": None})
    rows.append({"step": "extract", "documents": summed(files.extract, "documents"),
                 "characters": summed(files.extract, "characters")})
    for source, stats in ingested(files.ingest).items():
        rows.append({"step": f"ingest: {source}", "documents": stats["documents"], "characters": stats["characters"]})
    rows.append({"step": "convert", "documents": summed(files.convert, "documents"),
                 "characters": summed(files.convert, "characters")})
    for reason in read_json(files.clean[0])["removed"]:
        rows.append({"step": f"clean: drop {reason}", "documents": -summed(files.clean, "removed", reason),
                     "characters": None})
    rows.append({"step": "clean", "documents": summed(files.clean, "documents"),
                 "characters": summed(files.clean, "characters")})
    rows.append({"step": "dedup: drop exact", "documents": -dedup["exact_duplicates"], "characters": None})
    rows.append({"step": "dedup: drop near", "documents": -dedup["near_duplicates"], "characters": None})
    rows.append({"step": "dedup", **split["kept"]})
    for side in ("train", "validation"):
        rows.append({"step": f"split: {side}", **split[side]})
    return rows


def ingested(paths):
    """Documents and characters read from each extra corpus, summed over its shards."""
    totals = {}
    for path in paths:
        stats = read_json(path)
        entry = totals.setdefault(stats["source"], {"documents": 0, "characters": 0})
        entry["documents"] += stats["documents"]
        entry["characters"] += stats["characters"]
    return totals


def sources(files):
    """One row per corpus: documents read, left by clean and by dedup, and its share of each split."""
    read = {"zhwiki": summed(files.extract, "documents"),
            **{source: stats["documents"] for source, stats in ingested(files.ingest).items()}}
    dedup, split_stats = read_json(files.dedup)["by_source"], read_json(files.split)
    split = split_stats["by_source"]
    # A corpus that dedup emptied has no by_source entry, but its weight is still the configured one.
    return [{"source": source, "weight": split_stats["weights"].get(source, 1.0), "read": count,
             "after_clean": dedup.get(source, {}).get("documents_in", 0),
             "after_dedup": dedup.get(source, {}).get("documents_out", 0),
             **{key: split.get(source, {}).get(key, 0) for key in
                ("train_documents", "train_characters", "validation_documents", "validation_characters")}}
            for source, count in read.items()]



def markdown(rows, by_source):
    funnel = markdown_table(["step", "documents", "characters"],
                            [[r["step"], f"{r['documents']:,}", "" if r["characters"] is None
                              else f"{r['characters']:,}"] for r in rows])
    table = markdown_table(SOURCE_COLUMNS, [[f"{r[key]:,}" if isinstance(r[key], int) else r[key]
                                             for key in SOURCE_KEYS] for r in by_source])
    return f"{funnel}\nBy corpus:\n\n{table}"


def plot_funnel(rows, path: Path):
    """Documents and characters after each stage (the rows that are not a filter's drop)."""
    stages = [r for r in rows if ": drop " not in r["step"]][::-1]
    labels = [r["step"] for r in stages]
    fig, (docs_ax, chars_ax) = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, key, title in ((docs_ax, "documents", "documents"), (chars_ax, "characters", "characters (millions)")):
        scale = 1e6 if key == "characters" else 1
        values = [(r[key] or 0) / scale for r in stages]
        bars = ax.barh(labels, values, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:,.0f}" if scale == 1 else (f"{v:.2f}" if v else "") for v in values],
                     padding=2, fontsize=8)
        ax.set_title(title)
        ax.margins(x=0.2)
    fig.suptitle("Data funnel")
    fig.tight_layout()
    save_png(fig, path)


def add_arguments(ap):
    for stage in ("extract", "convert", "clean"):
        ap.add_argument(f"--{stage}", type=Path, nargs="+", required=True, help=f"per-shard {stage} stats")
    ap.add_argument("--ingest", type=Path, nargs="*", default=[], help="per-shard stats of the extra corpora")
    ap.add_argument("--dedup", type=Path, required=True)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)
    ap.add_argument("--plot", type=Path, required=True, help="funnel PNG")


def run(args, progress_stream):
    files = typed(StageStats, vars(args))
    rows, by_source = funnel(files), sources(files)
    write_json(args.json, {"funnel": rows, "sources": by_source, "dedup": read_json(args.dedup)})
    write_text(args.markdown, markdown(rows, by_source))
    plot_funnel(rows, args.plot)
    print(markdown(rows, by_source), file=progress_stream)


if __name__ == "__main__":
    stage_cli("corpus_summary", __doc__, add_arguments, run)

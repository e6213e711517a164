"""Summarise the data funnel: documents and characters after each stage and each filter.

    python -m workflow_scripts.corpus_summary --extract extract/*.json --convert convert/*.json \
        --clean clean/*.json --dedup dedup/stats.json --split corpus/split.json \
        --json corpus/summary.json --markdown corpus/summary.md --plot corpus/funnel.png
"""
from pathlib import Path

from workflow_scripts.common import markdown_table, read_json, stage_cli, write_json, write_text
from workflow_scripts.plots import plt, save_png


def summed(paths, *keys):
    """Sum a (possibly nested) field over per-shard stats files."""
    total = 0
    for path in paths:
        value = read_json(path)
        for key in keys:
            value = value[key]
        total += value
    return total


def funnel(args):
    split = read_json(args.split)
    dedup = read_json(args.dedup)
    corpus_docs = split["train"]["documents"] + split["validation"]["documents"]
    corpus_chars = split["train"]["characters"] + split["validation"]["characters"]
    rows = [{"step": "dump pages", "documents": summed(args.extract, "pages"), "characters": None}]
    for reason in ("other_namespace", "redirect", "disambiguation", "empty"):
        rows.append({"step": f"extract: drop {reason}", "documents": -summed(args.extract, "dropped", reason),
                     "characters": None})
    rows.append({"step": "extract", "documents": summed(args.extract, "documents"),
                 "characters": summed(args.extract, "characters")})
    rows.append({"step": "convert", "documents": summed(args.convert, "documents"),
                 "characters": summed(args.convert, "characters")})
    for reason in read_json(args.clean[0])["removed"]:
        rows.append({"step": f"clean: drop {reason}", "documents": -summed(args.clean, "removed", reason),
                     "characters": None})
    rows.append({"step": "clean", "documents": summed(args.clean, "documents"),
                 "characters": summed(args.clean, "characters")})
    rows.append({"step": "dedup: drop exact", "documents": -dedup["exact_duplicates"], "characters": None})
    rows.append({"step": "dedup: drop near", "documents": -dedup["near_duplicates"], "characters": None})
    rows.append({"step": "dedup", "documents": corpus_docs, "characters": corpus_chars})
    for side in ("train", "validation"):
        rows.append({"step": f"split: {side}", **split[side]})
    return rows


def markdown(rows):
    return markdown_table(["step", "documents", "characters"],
                          [[r["step"], f"{r['documents']:,}", "" if r["characters"] is None else f"{r['characters']:,}"]
                           for r in rows])


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
    ap.add_argument("--dedup", type=Path, required=True)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)
    ap.add_argument("--plot", type=Path, required=True, help="funnel PNG")


def run(args, progress_stream):
    rows = funnel(args)
    write_json(args.json, {"funnel": rows, "dedup": read_json(args.dedup)})
    write_text(args.markdown, markdown(rows))
    plot_funnel(rows, args.plot)
    print(markdown(rows), file=progress_stream)


if __name__ == "__main__":
    stage_cli("corpus_summary", __doc__, add_arguments, run)

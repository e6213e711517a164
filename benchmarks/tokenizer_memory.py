"""Tokenizer training memory: this workflow's `han-runs` pre-tokenization against the naive ByteLevel setup.

    python benchmarks/tokenizer_memory.py --sizes 10 20 38 --vocab-size 32000

On the real novels in ../shared/data/pretrain_text/chinese-novels/ (normalised as the clean
stage does; every 25th chapter held out for validation), trains both setups at each size, each in
a fresh process, with workflow_scripts.tokenizer.tokenizer.train, and records training time, peak RSS (and
peak RSS minus the process's RSS before training: the trainer's own memory) and characters per
token on the held-out chapters. A power law fitted to the trainer memory projects it to 1.5 GB
of text (simplified zhwiki). Writes benchmarks/results/tokenizer_memory.{json,md}.
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from workflow_scripts.lib.corpus.text_normalization import normalize  # noqa: E402
from workflow_scripts.lib.stage_cli import peak_rss_mb  # noqa: E402
from results_io import provenance, save  # noqa: E402

NOVELS = REPO.parent / "shared" / "data" / "pretrain_text" / "chinese-novels"
HELD_OUT_EVERY = 25
SETUPS = ("han-runs", "naive")
PROJECT_TO_MB = 1500


def chapters(held_out):
    for n, path in enumerate(sorted(NOVELS.glob("*.txt"))):
        if (n % HELD_OUT_EVERY == 0) == held_out:
            yield normalize(path.read_text(encoding="utf-8"))


def training_lines(limit_mb):
    """Lines of the training chapters until limit_mb MB of UTF-8; the total is in `size` afterwards."""
    size = {"bytes": 0}

    def lines():
        for text in chapters(held_out=False):
            for line in text.split("\n"):
                yield line
                size["bytes"] += len(line.encode()) + 1
                if size["bytes"] >= limit_mb * 1e6:
                    return
    return lines(), size


def worker(setup, limit_mb, vocab_size):
    import yaml

    from workflow_scripts.lib.bpe_training import train
    settings = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))["tokenizer"]
    lines, size = training_lines(limit_mb)
    before = peak_rss_mb()
    started = time.perf_counter()
    tokenizer = train(lines, vocab_size, setup, settings["han_run_max"], settings["min_frequency"])
    seconds, peak = time.perf_counter() - started, peak_rss_mb()
    held_out = "\n".join(chapters(held_out=True))
    tokens = len(tokenizer.encode(held_out).ids)
    return {"setup": setup, "mb": round(size["bytes"] / 1e6, 1), "seconds": round(seconds, 1), "peak_rss_mb": peak,
            "trainer_mb": round(peak - before, 1), "chars_per_token": round(len(held_out) / tokens, 4)}


def fit_power_law(points):
    """(c, alpha) of y = c * x**alpha, least squares in log space."""
    xs, ys = [math.log(x) for x, _ in points], [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    alpha = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - alpha * mx), alpha


def summarise(rows, sizes):
    by = {(r["setup"], r["size"]): r for r in rows}
    table = []
    for size in sizes:
        ours, naive = by["han-runs", size], by["naive", size]
        table.append({"size_mb": ours["mb"], "ours": ours, "naive": naive,
                      "rss_ratio": round(ours["peak_rss_mb"] / naive["peak_rss_mb"], 3),
                      "trainer_ratio": round(ours["trainer_mb"] / naive["trainer_mb"], 3),
                      "chars_per_token_ratio": round(ours["chars_per_token"] / naive["chars_per_token"], 4)})
    projection = {}
    for setup in SETUPS:
        c, alpha = fit_power_law([(by[setup, s]["mb"], by[setup, s]["trainer_mb"]) for s in sizes])
        projection[setup] = {"alpha": round(alpha, 3), "trainer_mb_at_1500mb": round(c * PROJECT_TO_MB ** alpha)}
    return table, projection


def markdown(report):
    lines = [f"# Tokenizer training memory (vocabulary {report['vocab_size']:,}, {report['machine']})", "",
             f"`{report['command']}`; text: the four classic novels, every {HELD_OUT_EVERY}th chapter held out "
             "for characters per token.", "",
             "| MB | setup | seconds | peak RSS MB | trainer MB | chars/token |", "|---:|---|---:|---:|---:|---:|"]
    for row in report["table"]:
        for setup in ("ours", "naive"):
            r = row[setup]
            lines.append(f"| {r['mb']} | {r['setup']} | {r['seconds']} | {r['peak_rss_mb']:.0f} | "
                         f"{r['trainer_mb']:.0f} | {r['chars_per_token']:.4f} |")
    lines += ["", "| MB | peak RSS ours/naive | trainer memory ours/naive | chars/token ours/naive |",
              "|---:|---:|---:|---:|"]
    lines += [f"| {r['size_mb']} | {r['rss_ratio']:.2f} | {r['trainer_ratio']:.2f} | {r['chars_per_token_ratio']:.4f} |"
              for r in report["table"]]
    lines += ["", f"Power law fitted to trainer memory (MB = c · size^α), projected to {PROJECT_TO_MB} MB of text:", ""]
    lines += [f"- {setup}: α = {p['alpha']}, ≈ {p['trainer_mb_at_1500mb']:,} MB"
              for setup, p in report["projection"].items()]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[10, 20, 38], help="MB of training text")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--worker", nargs=2, metavar=("SETUP", "MB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], float(args.worker[1]), args.vocab_size)))
        return
    rows = []
    for size in args.sizes:
        for setup in SETUPS:
            out = subprocess.run([sys.executable, __file__, "--worker", setup, str(size), "--vocab-size",
                                  str(args.vocab_size)], check=True, capture_output=True, text=True).stdout
            rows.append({**json.loads(out.splitlines()[-1]), "size": size})
            print(rows[-1], flush=True)
    table, projection = summarise(rows, args.sizes)
    report = {"vocab_size": args.vocab_size, **provenance(), "table": table, "projection": projection}
    save("tokenizer_memory", report, markdown(report))


if __name__ == "__main__":
    main()

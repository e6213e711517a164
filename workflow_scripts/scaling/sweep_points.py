"""The sweep's points in one table: each point's shape, budget, settings, compute and final
validation loss, from its pretraining summary, its model's config and its benchmark's wall time,
and the token shards it was measured on (`data`: the digest of their index.json, which names the
tokenizer and every shard), since losses on other shards do not belong in the same fit.

    python -m workflow_scripts.scaling.sweep_points --root results/sweep --points d1-c1e12-lr0.003-b2048-s0 ... \
        --benchmarks results/benchmarks/sweep --tokens results/tokens --out results/sweep/points.jsonl \
        --markdown results/sweep/points.md
"""
import csv
import json
from pathlib import Path

from workflow_scripts.lib.atomic_files import file_digest, read_json, write_text
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.summary_tables import markdown_table
from workflow_scripts.lib.workflow.workflow_config import sweep_point


def point_record(root: Path, benchmarks: Path, data, name):
    summary_path = root / name / "summary.json"
    summary = read_json(summary_path)
    if "val_loss" not in summary:
        raise StageError(f"{summary_path}: no final validation loss; rerun the point (snakemake --forcerun "
                         f"results/sweep/{name}/summary.json)")
    config = read_json(root / name / "model" / "config.json")
    with open(benchmarks / f"{name}.tsv", encoding="utf-8") as fh:
        seconds = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    return {"point": name, **sweep_point(name), "data": data, "parameters": summary["parameters"],
            "non_embedding_parameters": summary["non_embedding_parameters"],
            "flops_per_token": summary["flops_per_token"], "tokens": summary["tokens"],
            "compute": summary["flops_per_token"] * summary["tokens"], "steps": summary["steps"],
            "val_loss": summary["val_loss"], "val_bpb": summary.get("val_bpb"),
            "tokens_per_s": summary["tokens_per_s"], "seconds": seconds,
            "vocab_size": config["vocab_size"], "seq_len": config["max_position_embeddings"]}


def markdown(points):
    rows = [(p["point"], f"{p['non_embedding_parameters']:,}", f"{p['parameters']:,}", f"{p['tokens']:,}",
             f"{p['compute']:.3g}", p["lr"], p["batch_tokens"], p["seed"], f"{p['val_loss']:.4f}",
             f"{p['seconds']:.0f}") for p in points]
    header = ["point", "non-embedding parameters", "parameters", "tokens", "FLOPs", "lr", "batch tokens", "seed",
              "validation loss", "seconds"]
    total = sum(p["seconds"] for p in points)
    return (f"# Sweep: {len(points)} points, {total / 60:.1f} minutes of training jobs\n\n"
            + markdown_table(header, rows))


def add_arguments(ap):
    ap.add_argument("--root", type=Path, required=True, help="the folder of the points (results/sweep)")
    ap.add_argument("--points", nargs="+", required=True, help="the points' names (their folders under --root)")
    ap.add_argument("--benchmarks", type=Path, required=True, help="the folder of the points' benchmark TSVs")
    ap.add_argument("--tokens", type=Path, required=True, help="the token shards the points trained on (index.json)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, one point each")
    ap.add_argument("--markdown", type=Path, required=True)


def run(args, progress_stream):
    data = file_digest(args.tokens / "index.json")[:12]
    points = [point_record(args.root, args.benchmarks, data, name) for name in args.points]
    write_text(args.out, "".join(json.dumps(point) + "\n" for point in points))
    write_text(args.markdown, markdown(points))
    log.info("%d points, least validation loss %.4f", len(points), min(p["val_loss"] for p in points))


if __name__ == "__main__":
    stage_cli("sweep_points", __doc__, add_arguments, run)

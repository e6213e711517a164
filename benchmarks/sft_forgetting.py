"""What SFT costs the base model: validation bits per byte after chat fine-tuning, by learning rate
and share of replayed pretraining text.

    python benchmarks/sft_forgetting.py --workdir /tmp/demo --runs 3e-3:0 3e-4:0 1e-4:0 3e-3:0.5 1e-3:0.5

--workdir is a copy of this workflow in which `snakemake --cores all sft_model` has run on the
demo (results/base_model, results/tokens, results/chat_data/sft.jsonl, results/corpus/). Each
run (LR:REPLAY_SHARE) fine-tunes the base model on the demo chats with the sft stage (full
fine-tuning, 60 steps, the demo's other SFT settings), and the bits_per_byte stage scores the
result on the validation split beside the base model's own score: the relative increase is what
the chat model forgot of the corpus. The SFT validation loss (on held-out chats) shows what it
learnt instead. Writes benchmarks/results/sft_forgetting.{json,md}.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from results_io import provenance, save


def stage(workdir, name, *args):
    subprocess.run([sys.executable, "-m", f"workflow_scripts.{name}", *map(str, args)], cwd=workdir, check=True,
                   capture_output=True)


def bits_per_byte(workdir, model, out):
    stage(workdir, "eval.bits_per_byte", "--model", model, "--text", "results/corpus/validation.parquet",
          "--out", out, "--log", out.with_suffix(".log"))
    return json.loads(out.read_text())["bits_per_byte"]


def sft_run(workdir, lr, share, steps, tmp: Path):
    out = tmp / f"lr{lr}-replay{share}"
    stage(workdir, "training.sft", "--model", "results/base_model", "--data", "results/chat_data/sft.jsonl:1",
          "--lr", lr, "--replay-tokens", "results/tokens", "--replay-share", share,
          "--max-steps", steps, "--checkpoint-root", out / "ckpt", "--out", out / "model",
          "--metrics", out / "m.jsonl", "--plot", out / "p.png", "--summary", out / "s.json", "--log", out / "log")
    summary = json.loads((out / "s.json").read_text())
    return {"lr": lr, "replay_share": share, "steps": steps,
            "bits_per_byte": bits_per_byte(workdir, out / "model", out / "bpb.json"),
            "sft_first_loss": summary["first_loss"], "sft_final_loss": summary["final_loss"],
            "sft_validation_loss": summary["val_loss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--runs", nargs="+", default=["3e-3:0", "3e-4:0", "1e-4:0", "3e-3:0.5", "1e-3:0.5"],
                    help="LR:REPLAY_SHARE of each run")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = bits_per_byte(args.workdir, "results/base_model", Path(tmp, "base.json"))
        runs = [sft_run(args.workdir, float(lr), float(share), args.steps, Path(tmp))
                for lr, share in (run.split(":") for run in args.runs)]
    for run in runs:
        run["increase"] = run["bits_per_byte"] / base - 1
    report = {**provenance(), "base_bits_per_byte": base, "runs": runs}
    rows = "".join(f"| {r['lr']:g} | {r['replay_share']:.0%} | {r['steps']} | {r['bits_per_byte']:.3f} | "
                   f"{r['increase']:+.1%} | {r['sft_first_loss']:.2f} → {r['sft_final_loss']:.2f} | "
                   f"{r['sft_validation_loss']:.2f} |\n"
                   for r in runs)
    save("sft_forgetting", report,
         f"# SFT forgetting on the demo\n\n{report['machine']}. Base model: {base:.3f} bits per byte on the "
         "validation split.\n\n| SFT lr | replayed text | steps | bits per byte after SFT | vs base | "
         "SFT train loss | SFT validation loss |\n|---:|---:|---:|---:|---:|---|---:|\n" + rows)


if __name__ == "__main__":
    main()

"""What SFT costs the base model: validation bits per byte and the demo's facts after chat
fine-tuning, by learning rate and share of replayed pretraining text, on every seed given.

    python benchmarks/sft_forgetting.py --workdir /tmp/demo --runs 1e-3:0.6 3e-3:0.6 1e-3:0 3e-3:0 --seeds 0 1 2

--workdir is a copy of this workflow in which `snakemake --cores all sft_model` has run on the
demo (results/base_model, results/tokens, results/chat_data/sft.jsonl, results/corpus/). Each
run (LR:REPLAY_SHARE) fine-tunes the base model on the demo chats with the sft stage (full
fine-tuning, 60 steps, the demo's other SFT settings) once per --seeds (the data order and mix),
and the bits_per_byte stage scores the result on the validation split beside the base model's own
score: the relative increase is what the chat model forgot of the corpus. The knowledge stage's
fact probe (the demo's facts in their corpus phrasing) gives the share of the base model's facts
the chat model keeps, and the samples stage the share of its greedy answers to the demo's prompts
that end the turn with <|im_end|> (what SFT is for). The SFT validation loss (on held-out chats)
shows what it learnt instead. Each setting is quoted at its worst seed. Writes
benchmarks/results/sft_forgetting.{json,md}.
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


def corpus_facts(workdir, model, style, out):
    """The fact probe's accuracy in the corpus phrasing."""
    stage(workdir, "eval.knowledge", "--model", model, "--facts", "demo/eval/facts.jsonl", "--style", style,
          "--out", out, "--markdown", out.with_suffix(".md"), "--log", out.with_suffix(".log"))
    return json.loads(out.read_text())["overall"]["corpus"]["accuracy"]


def answers_end(workdir, model, out):
    """The share of the chat model's greedy answers to the demo prompts that end its turn (<|im_end|>)."""
    stage(workdir, "eval.samples", "--model", model, "--prompts", "demo/eval/prompts.txt", "--style", "chat",
          "--out", out, "--markdown", out.with_suffix(".md"), "--log", out.with_suffix(".log"))
    return json.loads(out.read_text())["chat_format"]["ends_with_im_end"]


def sft_run(workdir, lr, share, seed, steps, tmp: Path):
    out = tmp / f"lr{lr}-replay{share}-seed{seed}"
    stage(workdir, "training.sft", "--model", "results/base_model", "--data", "results/chat_data/sft.jsonl:1",
          "--lr", lr, "--replay-tokens", "results/tokens", "--replay-share", share, "--seed", seed,
          "--max-steps", steps, "--checkpoint-root", out / "ckpt", "--out", out / "model",
          "--metrics", out / "m.jsonl", "--plot", out / "p.png", "--summary", out / "s.json", "--log", out / "log")
    summary = json.loads((out / "s.json").read_text())
    return {"lr": lr, "replay_share": share, "seed": seed, "steps": steps,
            "bits_per_byte": bits_per_byte(workdir, out / "model", out / "bpb.json"),
            "corpus_facts": corpus_facts(workdir, out / "model", "chat", out / "facts.json"),
            "answers_end": answers_end(workdir, out / "model", out / "samples.json"),
            "sft_first_loss": summary["first_loss"], "sft_final_loss": summary["final_loss"],
            "sft_validation_loss": summary["val_loss"]}


def worst_seeds(runs, base_bits, base_facts):
    """One row per setting: the largest bits-per-byte increase and the smallest share of facts kept
    over its seeds, and the seeds' range of both."""
    rows = {}
    for run in runs:
        rows.setdefault((run["lr"], run["replay_share"]), []).append(run)
    return [{"lr": lr, "replay_share": share, "seeds": [r["seed"] for r in seeds], "steps": seeds[0]["steps"],
             "bpb_increase_worst": max(r["bits_per_byte"] for r in seeds) / base_bits - 1,
             "bpb_increase_best": min(r["bits_per_byte"] for r in seeds) / base_bits - 1,
             "facts_kept_worst": min(r["corpus_facts"] for r in seeds) / base_facts,
             "facts_kept_best": max(r["corpus_facts"] for r in seeds) / base_facts,
             "answers_end_worst": min(r["answers_end"] for r in seeds),
             "sft_validation_loss_worst": max(r["sft_validation_loss"] for r in seeds)}
            for (lr, share), seeds in rows.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--runs", nargs="+", default=["1e-3:0.6", "3e-3:0.6", "1e-3:0", "3e-3:0"],
                    help="LR:REPLAY_SHARE of each setting")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SFT seeds of each setting")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = bits_per_byte(args.workdir, "results/base_model", Path(tmp, "base.json"))
        base_facts = corpus_facts(args.workdir, "results/base_model", "completion", Path(tmp, "base-facts.json"))
        runs = [sft_run(args.workdir, float(lr), float(share), seed, args.steps, Path(tmp))
                for lr, share in (run.split(":") for run in args.runs) for seed in args.seeds]
    settings = worst_seeds(runs, base, base_facts)
    report = {**provenance(), "base_bits_per_byte": base, "base_corpus_facts": base_facts, "settings": settings,
              "runs": runs}
    rows = "".join(f"| {r['lr']:g} | {r['replay_share']:.0%} | {r['steps']} | {r['bpb_increase_worst']:+.1%} "
                   f"({r['bpb_increase_best']:+.1%}) | {r['facts_kept_worst']:.0%} ({r['facts_kept_best']:.0%}) | "
                   f"{r['answers_end_worst']:.0%} | {r['sft_validation_loss_worst']:.2f} |\n" for r in settings)
    save("sft_forgetting", report,
         f"# SFT forgetting on the demo\n\n{report['machine']}. Base model: {base:.3f} bits per byte on the "
         f"validation split, {base_facts:.1%} of the fact probe's facts in the corpus phrasing. Each setting ran "
         f"with SFT seeds {', '.join(map(str, args.seeds))}; the worst seed is shown, the best in brackets.\n\n"
         "| SFT lr | replayed text | steps | bits per byte vs base | facts kept | answers that end the turn | "
         "SFT validation loss |\n|---:|---:|---:|---:|---:|---:|---:|\n" + rows)


if __name__ == "__main__":
    main()

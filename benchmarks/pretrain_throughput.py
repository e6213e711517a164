"""Pretraining throughput: this workflow's pretrain stage against a plain `transformers` Trainer.

    snakemake --cores all tokens            # the demo's tokenizer and token shards, once
    python benchmarks/pretrain_throughput.py --preset demo --steps 30

Same model (built by workflow_scripts.training.pretrain.build_model), same token windows in the same order,
same batch (micro-batch x sequence length x accumulation), same optimizer settings, one process
each, run one after the other in fresh processes with the same number of threads. Throughput is
training tokens per second over steps 2 to N-1 (the first step warms up, the last one evaluates);
the two take turns in --repeats rounds (the order rotating from round to round), since a shared
machine's speed drifts by several per cent between runs: each one's figure is the median over the
rounds with its interval (results_io.median_interval), the ratio the median of the two's ratios
round by round, with its interval (results_io.paired_ratio).
On a GPU machine `--preset 0.1b` also records MFU and peak memory of our stage.
Writes benchmarks/results/pretrain_throughput{-PRESET}.{json,md}.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from results_io import median_interval, paired_ratio, provenance, rotated_rounds, save  # noqa: E402


def ours(args, work: Path):
    command = [sys.executable, "-m", "workflow_scripts.training.pretrain", "--tokens", str(args.tokens),
               "--tokenizer", str(args.tokenizer), "--preset", args.preset, "--seq-len", str(args.seq_len),
               "--micro-batch", str(args.micro_batch), "--global-batch-tokens", str(args.batch_tokens),
               "--max-steps", str(args.steps), "--eval-every", str(args.steps), "--eval-windows", "8",
               "--checkpoint-every", str(args.steps + 1), "--checkpoint-root", str(work / "ckpt"),
               "--out", str(work / "model"), "--metrics", str(work / "m.jsonl"), "--plot", str(work / "p.png"),
               "--summary", str(work / "s.json"), "--log", str(work / "log")]
    if args.compile:
        command.append("--compile")
    subprocess.run(command, cwd=REPO, check=True)
    records = [json.loads(line) for line in (work / "m.jsonl").read_text().splitlines()]
    tokens_per_step = records[0]["tokens"]
    # Step end to step end, as the Trainer's are timed (the metrics' own tokens/s leaves out what
    # happens between steps).
    seconds = [b["time"] - a["time"] for a, b in zip(records[:-2], records[1:-1])]
    result = {"tokens_per_s": round(len(seconds) * tokens_per_step / sum(seconds)),
              "final_loss": statistics.mean(r["loss"] for r in records[-10:])}
    summary = json.loads((work / "s.json").read_text())
    result.update({k: summary[k] for k in ("mfu", "peak_memory_gb") if k in summary})
    return result


def trainer(args, work: Path):
    """The baseline, run in this process (started by main in a fresh one)."""
    import torch
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from workflow_scripts.lib.training.model_presets import build_model
    from workflow_scripts.lib.training.token_data import Sampler, TokenWindows
    from workflow_scripts.lib.training.training import set_seed

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    windows = TokenWindows(args.tokens, "train", args.seq_len)
    accumulation = args.batch_tokens // (args.micro_batch * args.seq_len)
    sampler = Sampler(windows.count, 0, 0, 1, args.micro_batch)
    # The windows our stage reads; the Trainer shuffles them in its own order (same work per step).
    order = [i for step in range(args.steps * accumulation) for i in sampler.indices(step)]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(order)

        def __getitem__(self, n):
            window = windows.read(order[n])[:-1]
            return {"input_ids": window, "labels": window}

    class StepTimes(TrainerCallback):
        times = []

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter())

    model = build_model(args.preset, tokenizer, args.seq_len, True, "sdpa")
    training_args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=accumulation, max_steps=args.steps, learning_rate=3e-3, weight_decay=0.1,
        adam_beta2=0.95, warmup_steps=10, lr_scheduler_type="cosine", max_grad_norm=1.0,
        logging_steps=min(10, args.steps),
        save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), torch_compile=args.compile, disable_tqdm=True)
    run = Trainer(model=model, args=training_args, train_dataset=Windows(), callbacks=[StepTimes()])
    run.train()
    seconds = [b - a for a, b in zip(StepTimes.times[:-2], StepTimes.times[1:-1])]
    return {"tokens_per_s": round(len(seconds) * args.batch_tokens / sum(seconds)),
            "final_loss": next(h["loss"] for h in reversed(run.state.log_history) if "loss" in h)}


def summarised(results):
    """One run's rounds: tokens/s as a median with its interval, the median round's loss."""
    ranked = sorted(results, key=lambda r: r["tokens_per_s"])
    return {**ranked[len(ranked) // 2], "tokens_per_s": median_interval([r["tokens_per_s"] for r in results]),
            "every_round": results}


def markdown(report):
    ours_row, trainer_row = report["ours"], report["trainer"]
    lines = [f"# Pretraining throughput ({report['preset']}, {report['machine']})", "", f"`{report['command']}`", "",
             f"Batch: {report['micro_batch']} sequences x {report['seq_len']} tokens, {report['batch_tokens']:,} "
             f"tokens per step, {report['steps']} steps, one process.", "",
             f"| run | tokens/s, median ({ours_row['tokens_per_s']['coverage']:.1%} interval) | train loss, "
             "last 10 steps |", "|---|---:|---:|",
             *(f"| {name} | {row['tokens_per_s']['median']:,.0f} ({row['tokens_per_s']['interval'][0]:,.0f}–"
               f"{row['tokens_per_s']['interval'][1]:,.0f}) | {row['final_loss']:.3f} |"
               for name, row in (("zhwiki-llm pretrain", ours_row), ("transformers Trainer", trainer_row))),
             "", f"Ratio ours / Trainer, round by round: **{report['ratio']['median']:.2f}×** "
             f"({report['ratio']['coverage']:.1%} interval {report['ratio']['interval'][0]:.2f}–"
             f"{report['ratio']['interval'][1]:.2f}, {report['ratio']['rounds']} rounds)"]
    if "mfu" in ours_row:
        lines += ["", f"MFU {ours_row['mfu']:.1%}, peak memory {ours_row['peak_memory_gb']} GiB."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=Path, default=REPO / "results" / "tokens")
    ap.add_argument("--tokenizer", type=Path, default=REPO / "results" / "tokenizer")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
    ap.add_argument("--trainer-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trainer_only:
        print(json.dumps(trainer(args, args.trainer_only)))
        return
    def baseline(tmp):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--trainer-only", tmp], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    runs = {"ours": [], "trainer": []}
    for number, in_order in rotated_rounds([("ours", lambda tmp: ours(args, Path(tmp))), ("trainer", baseline)],
                                           args.repeats):
        for name, run in in_order:
            with tempfile.TemporaryDirectory() as tmp:
                runs[name].append(run(tmp))
        print(f"round {number}", {name: results[-1]["tokens_per_s"] for name, results in runs.items()}, flush=True)
    ours_result, trainer_result = (summarised(runs[name]) for name in ("ours", "trainer"))
    report = {"preset": args.preset, **provenance(), "seq_len": args.seq_len, "micro_batch": args.micro_batch,
              "batch_tokens": args.batch_tokens, "steps": args.steps, "ours": ours_result, "trainer": trainer_result,
              "ratio": paired_ratio([r["tokens_per_s"] for r in runs["ours"]],
                                    [r["tokens_per_s"] for r in runs["trainer"]]), "rounds": args.repeats}
    suffix = "" if args.preset == "demo" else f"-{args.preset}"
    save(f"pretrain_throughput{suffix}", report, markdown(report))


if __name__ == "__main__":
    main()

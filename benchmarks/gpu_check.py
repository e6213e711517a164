"""What to measure the day a GPU is lent, in one run: pretraining throughput and MFU of the 0.1b
preset, the demo chain at 20 times the CPU's pretraining tokens with its fact probe and multiple
choice, and SFT and decoding throughput. Started by benchmarks/gpu_check.sh:

    snakemake --cores all tokens chat_data        # here: the demo's tokenizer, tokens and chat data
    bash benchmarks/gpu_check.sh                  # there (about 10 minutes on one H100 or H200)
    bash benchmarks/gpu_check.sh --smoke          # anywhere, in tiny sizes (tests/test_gpu_check.py)

Every step runs a stage's own CLI (workflow_scripts.training.pretrain, sft, knowledge, multiple_choice), as
the rules do, with the settings' defaults for what it does not name, so a GPU day checks the code
users run; Snakemake itself need not be installed there.
1. Throughput: the pretrain stage on the 0.1b preset (bf16 on a GPU) with sdpa, with sdpa and
   torch.compile, with flash_attention_2 where flash_attn imports, and with DeepSpeed ZeRO-2 where
   deepspeed imports (under the rules' launcher): tokens/s, MFU and peak memory from each run's
   summary.
2. The chain: the 26m preset pretrained on the demo tokens for 20 times the tokens the demo
   config's CPU run sees, then SFT on the demo chat data, then the fact probe (qa_accuracy beside
   chance, and generated_accuracy: the questions answered right by greedy generation) and the demo
   multiple choice for both models.
3. SFT tokens/s from its summary, and the server's decode step (lib.serving.continuous_batching) with 1 and
   16 rows on the SFT model.
4. A sweep step that extends the committed CPU scaling sweep (benchmarks/results/scaling.md, up to
   4e12 FLOPs) with depths 4, 6 and 8 at 10 and 25 times its largest budget, each point trained with
   the settings rule sweep_point gives it (lib.workflow.workflow_config.sweep_settings: steps from the
   budget, one evaluation at the end) on the sweep's own tokens (--sweep-data: the novels' tokenizer/
   and tokens/ that benchmarks/scaling_fit.py built, 2.1 M training tokens, which no point sees more
   than twice). Its points go to OUT/sweep_points.jsonl through the sweep's own table stage
   (scaling.sweep_points), which the fit takes beside the sweep's (config scaling.extra_points).
A variant or sweep point that fails is recorded with its log's last line and the check goes on, so
one missing library does not cost the rest of a lent GPU's minutes. Writes OUT/gpu_check.json and
OUT/gpu_check.md, and says what to change next where MFU falls short of 45 %.
"""
import argparse
import importlib.util
import json
import shlex
import subprocess
from collections import Counter
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from results_io import provenance  # noqa: E402
from serve_throughput import decode_steps, prompts  # noqa: E402

from workflow_scripts.lib.settings import definitions  # noqa: E402
from workflow_scripts.lib.workflow.workflow_config import cli_options, sweep_points, sweep_settings  # noqa: E402

MFU_TARGET = 0.45
# Times the tokens of the demo config's pretraining: 49 M tokens, 750 steps of 65,536 (100 times the
# demo's 0.49 M before it trained 30 epochs of a smaller country, 2.5 M; the same GPU minutes).
CHAIN_TOKENS = 20
SIZES = {
    "gpu": {"throughput": {"preset": "0.1b", "seq_len": 1024, "micro_batch": 32, "batch_tokens": 65536, "steps": 30},
            "chain": {"preset": "26m", "seq_len": 256, "micro_batch": 64, "batch_tokens": 65536, "lr": 1e-3},
            "sweep": {"depths": [4, 6, 8], "flops": [4e13, 1e14], "lrs": [0.003], "batch_tokens": [16384],
                      "seeds": [0], "micro_batch": 64},
            "sft_steps": 0, "facts_per_relation": 0, "requests": 64, "new_tokens": 64},
    "smoke": {"throughput": {"preset": "demo", "seq_len": 64, "micro_batch": 2, "batch_tokens": 256, "steps": 4},
              "chain": {"preset": "demo", "seq_len": 64, "micro_batch": 4, "batch_tokens": 256, "lr": 3e-3,
                        "steps": 4},
              "sweep": {"depths": [1], "flops": [4e10], "lrs": [0.003], "batch_tokens": [2048], "seeds": [0],
                        "micro_batch": 8},
              "sft_steps": 3, "facts_per_relation": 3, "requests": 4, "new_tokens": 4},
}
# On a CPU the ZeRO-2 run goes without torch.compile: its cold compile of a second graph cost 35 s of
# the smoke test's 190 s on 2 cores, and the sdpa run already compiles.
ZERO_COMPILE = ("--compile",) if torch.cuda.is_available() else ("--no-compile",)
def stage(name, *args, log, launcher=(sys.executable, "-m")):
    """Runs workflow_scripts.<name> with these arguments; its seconds. A failure stops the check."""
    command = [*launcher, f"workflow_scripts.{name}", *map(str, args), "--log", str(log)]
    started = time.perf_counter()
    if subprocess.run(command, cwd=REPO).returncode:
        last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        raise StageFailed(f"{name} failed ({log}): {''.join(last)[-300:]}")
    return round(time.perf_counter() - started, 1)


class StageFailed(Exception):
    """A stage's CLI exited with an error; the message names its log and gives its last line."""


def pretrain(work, name, sizes, data, *options, launcher=(sys.executable, "-m")):
    """The pretrain stage's summary (tokens/s, loss, and MFU and peak memory on a GPU) and seconds."""
    folder = work / name
    steps = sizes["steps"]
    seconds = stage("training.pretrain", "--tokens", data / "tokens", "--tokenizer", data / "tokenizer",
                    "--preset", sizes["preset"], "--seq-len", sizes["seq_len"], "--micro-batch", sizes["micro_batch"],
                    "--global-batch-tokens", sizes["batch_tokens"], "--max-steps", steps,
                    "--eval-every", steps, "--eval-windows", 8, "--checkpoint-every", steps + 1,
                    "--checkpoint-root", folder / "checkpoints", "--out", folder / "model",
                    "--metrics", folder / "metrics.jsonl", "--plot", folder / "loss.png",
                    "--summary", folder / "summary.json", *options, log=folder.with_suffix(".log"), launcher=launcher)
    return {"run": name, "seconds": seconds, **json.loads((folder / "summary.json").read_text())}


def throughput_runs(work, sizes, data):
    """The pretrain variants this machine can run, each one's summary."""
    variants = [("sdpa", "--attention", "sdpa", "--no-compile"), ("sdpa + compile", "--attention", "sdpa", "--compile")]
    if importlib.util.find_spec("flash_attn"):
        variants.append(("flash_attention_2 + compile", "--attention", "flash_attention_2", "--compile"))
    runs = [attempted(pretrain, work, name, sizes, data, *options) for name, *options in variants]
    if importlib.util.find_spec("deepspeed"):
        name = "ZeRO-2" + (" + compile" if "--compile" in ZERO_COMPILE else "")
        runs.append(attempted(pretrain, work, name, sizes, data, "--engine", "deepspeed", "--zero-stage", 2,
                              *ZERO_COMPILE, launcher=workflow_launcher()))
    return runs


def attempted(run, work, name, *args, **kwargs):
    """run(work, name, ...), or {"run": name, "error": ...} where it failed."""
    try:
        return run(work, name, *args, **kwargs)
    except StageFailed as failure:
        return {"run": name, "error": str(failure)}


def workflow_launcher():
    """The rules' launcher (workflow_scripts.training.launch: accelerate launch) for one process, on the GPU
    where there is one."""
    return (sys.executable, "-m", "workflow_scripts.training.launch", "--gpus", str(int(torch.cuda.is_available())),
            "--processes", "1", "--nodes", "1", "--", "-m")


def cpu_tokens():
    """The tokens the demo config's pretraining sees."""
    demo = definitions("pretrain")
    return demo["max_steps"]["default"] * demo["global_batch_tokens"]["default"]


def chain_steps(sizes):
    """Steps that give the chain CHAIN_TOKENS times the demo config's pretraining tokens."""
    return sizes.get("steps", CHAIN_TOKENS * cpu_tokens() // sizes["batch_tokens"])


def facts_file(work, per_relation):
    """The demo's facts, or their first `per_relation` facts of each relation."""
    source = REPO / "demo/eval/facts.jsonl"
    if not per_relation:
        return source
    taken, lines = Counter(), []
    for line in source.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "subject" not in record or taken[record["relation"]] < per_relation:
            lines.append(line)
            taken[record["relation"]] += "subject" in record
    (work / "facts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work / "facts.jsonl"


def evaluated(work, model, style, facts):
    """The fact probe's overall figures and the demo multiple choice's accuracy of one model."""
    folder = work / f"{model.parent.name}-eval"
    folder.mkdir()
    stage("eval.knowledge", "--model", model, "--facts", facts, "--style", style, "--out", folder / "knowledge.json",
          "--markdown", folder / "knowledge.md", log=folder / "knowledge.log")
    stage("eval.multiple_choice", "--model", model, "--data", REPO / "demo/eval", "--name", "demo",
          "--out", folder / "mc.json", "--markdown", folder / "mc.md", log=folder / "mc.log")
    probe = json.loads((folder / "knowledge.json").read_text())
    choice = json.loads((folder / "mc.json").read_text())
    return {"probe": {key: probe[key] for key in ("overall", "qa_accuracy", "qa_chance", "generated_accuracy")},
            "multiple_choice": {f"{r['shots']}-shot {r['scoring']}": round(r["overall"], 4) for r in choice["results"]}}


def chain(work, sizes, data, sft_steps, facts):
    """Base model, SFT model, and what each learnt."""
    steps = chain_steps(sizes)
    base = pretrain(work, "chain", {**sizes, "steps": steps}, data, "--lr", sizes["lr"],
                    "--warmup-steps", max(1, steps // 20))
    sft = work / "sft"
    seconds = stage("training.sft", "--model", work / "chain/model", "--data", f"{data / 'chat_data/sft.jsonl'}:1",
                    "--replay-tokens", data / "tokens",
                    *(("--max-steps", sft_steps) if sft_steps else ()), "--checkpoint-root", sft / "checkpoints",
                    "--out", sft / "model", "--metrics", sft / "metrics.jsonl", "--plot", sft / "loss.png",
                    "--summary", sft / "summary.json", log=work / "sft.log")
    summary = json.loads((sft / "summary.json").read_text())
    return {"preset": sizes["preset"], "batch_tokens": sizes["batch_tokens"],
            "base": {**base, **evaluated(work, work / "chain/model", "completion", facts)},
            "sft": {"seconds": seconds, **summary, **evaluated(work, sft / "model", "chat", facts)}}


def sweep(work, out, grid, data):
    """The sweep step: each point of `grid` pretrained with the settings rule sweep_point gives it,
    then the sweep's table stage over those that finished; its rows and the points that failed."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["tokenizer"]["vocab_size"] = json.loads((data / "tokens/index.json").read_text())["vocab_size"]
    cfg["scaling"].update(grid)
    root, timings = work / "sweep", work / "sweep-benchmarks"
    timings.mkdir(parents=True)
    finished, failed = [], []
    for name in sweep_points(cfg["scaling"]):
        settings = {**sweep_settings(cfg, name), "micro_batch": grid["micro_batch"]}
        folder = root / name
        try:
            seconds = stage("training.pretrain", "--tokens", data / "tokens", "--tokenizer", data / "tokenizer",
                            *shlex.split(cli_options(settings, skip=("processes", "gpus", "nodes"))),
                            "--checkpoint-root", work / "sweep-checkpoints" / name, "--out", folder / "model",
                            "--metrics", folder / "metrics.jsonl", "--plot", folder / "loss.png",
                            "--summary", folder / "summary.json", log=folder.with_suffix(".log"))
        except StageFailed as failure:
            failed.append({"point": name, "error": str(failure)})
            continue
        # The table stage reads each point's wall time from its Snakemake benchmark file (column s).
        (timings / f"{name}.tsv").write_text(f"s\n{seconds}\n")
        finished.append(name)
    if not finished:
        return {"points": [], "failed": failed}
    table = out / "sweep_points.jsonl"
    stage("scaling.sweep_points", "--root", root, "--points", *finished, "--benchmarks", timings,
          "--tokens", data / "tokens", "--out", table, "--markdown", out / "sweep_points.md", log=work / "sweep.log")
    return {"points": [json.loads(line) for line in table.read_text().splitlines()], "failed": failed}


def decoding(model, requests, new_tokens):
    """The server's decode step with 1 and with 16 rows (serve_throughput.decode_steps)."""
    questions = prompts(requests)
    return [decode_steps(model, questions, new_tokens, rows, torch.get_num_threads()) for rows in (1, 16)]


def advice(runs, card_gib):
    """What to change next where the best MFU falls short of MFU_TARGET (nothing on a CPU)."""
    measured = [run for run in runs if "mfu" in run]
    best = max(measured, key=lambda run: run["mfu"], default=None)
    if best is None or best["mfu"] >= MFU_TARGET:
        return []
    steps = []
    if best["peak_memory_gb"] < card_gib / 2:
        steps.append(f"peak memory {best['peak_memory_gb']} of {card_gib:.0f} GiB: raise pretrain.micro_batch "
                     "(and global_batch_tokens with it) until it nears the card's")
    if not importlib.util.find_spec("flash_attn"):
        steps.append("flash-attn is not installed: install it for this CUDA and rerun, to compare "
                     "flash_attention_2 with sdpa")
    if not any("compile" in run["run"] and run["mfu"] > 1.05 * measured[0]["mfu"] for run in measured):
        steps.append("torch.compile gained under 5 %: profile one step (torch.profiler) for the kernels "
                     "outside the matrix products")
    steps.append("the Trainer reached the same MFU on 0.1b (benchmarks/results/pretrain_throughput-0.1b.md): "
                 "hidden 768 keeps the matrix products small; compare the 0.5b preset (hidden 1024)")
    return steps


def card_memory_gib():
    return torch.cuda.get_device_properties(0).total_memory / 2 ** 30 if torch.cuda.is_available() else 0


def markdown(report):
    lines = [f"# GPU check ({report['machine']}{', smoke sizes' if report['smoke'] else ''})", "",
             f"`{report['command']}`", "", "## Pretraining throughput", "",
             "| run | tokens/s | MFU | peak GiB | seconds |", "|---|---:|---:|---:|---:|"]
    for run in report["throughput"]:
        if "error" in run:
            lines.append(f"| {run['run']} | {run['error']} | | | |")
            continue
        mfu = f"{run['mfu']:.1%}" if "mfu" in run else "—"
        lines.append(f"| {run['run']} | {run['tokens_per_s']:,} | {mfu} | {run.get('peak_memory_gb', '—')} | "
                     f"{run['seconds']} |")
    base, sft = report["chain"]["base"], report["chain"]["sft"]
    tokens = base["steps"] * report["chain"]["batch_tokens"]
    lines += ["", f"## The demo chain ({base['steps']} pretraining steps, {tokens:,} tokens: "
              f"{tokens / cpu_tokens():.3g}x the demo config's CPU run)", "",
              "| model | fact probe by phrasing | qa_accuracy (chance) | generated_accuracy | multiple choice |",
              "|---|---|---:|---:|---|"]
    for name, model in (("base", base), ("sft", sft)):
        probe = ", ".join(f"{phrasing} {s['accuracy']:.1%}" for phrasing, s in model["probe"]["overall"].items())
        qa = f"{model['probe']['qa_accuracy']:.1%} ({model['probe']['qa_chance']:.1%})"
        choice = ", ".join(f"{k} {v:.1%}" for k, v in model["multiple_choice"].items())
        lines.append(f"| {name} | {probe} | {qa} | {model['probe']['generated_accuracy']:.1%} | {choice} |")
    lines += ["", "## SFT and decoding", "", f"SFT: {sft['tokens_per_s']:,} tokens/s over {sft['seconds']} s.", "",
              "| run | tokens/s |", "|---|---:|"]
    lines += [f"| {row['run']} | {row['tokens_per_s']:,} |" for row in report["decoding"]]
    lines += ["", "## Sweep points (OUT/sweep_points.jsonl, for config scaling.extra_points)", ""]
    if "skipped" in report["sweep"]:
        lines.append(report["sweep"]["skipped"])
    else:
        lines += ["| point | FLOPs | tokens | validation loss | seconds |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {p['point']} | {p['compute']:.3g} | {p['tokens']:,} | {p['val_loss']:.4f} | {p['seconds']} |"
                  for p in report["sweep"]["points"]]
        lines += [f"| {p['point']} | {p['error']} | | | |" for p in report["sweep"]["failed"]]
    if report["next"]:
        lines += ["", f"## MFU under {MFU_TARGET:.0%}: what to change next", ""] + [f"- {s}" for s in report["next"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="where gpu_check.json and .md go")
    ap.add_argument("--data", type=Path, default=REPO / "results",
                    help="holds tokenizer/, tokens/ and chat_data/sft.jsonl (the demo's, by default)")
    ap.add_argument("--work", type=Path, required=True, help="a folder for the models, which does not exist yet")
    ap.add_argument("--sweep-data", type=Path,
                    help="tokenizer/ and tokens/ of the sweep to extend (default: results/sweep_data; --data with "
                         "--smoke); without them the sweep step is left out")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script anywhere")
    args = ap.parse_args()
    sizes = SIZES["smoke" if args.smoke else "gpu"]
    sweep_data = args.sweep_data or (args.data if args.smoke else REPO / "results/sweep_data")
    args.work.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        runs = throughput_runs(args.work, sizes["throughput"], args.data)
        chained = chain(args.work, sizes["chain"], args.data, sizes["sft_steps"],
                        facts_file(args.work, sizes["facts_per_relation"]))
        swept = (sweep(args.work, args.out, sizes["sweep"], sweep_data) if (sweep_data / "tokens/index.json").exists()
                 else {"skipped": f"Left out: no {sweep_data}/tokens/index.json (gpu_check.sh says how to carry it)."})
    except StageFailed as failure:
        raise SystemExit(str(failure)) from None
    measured = [run for run in runs if "error" not in run]
    report = {**provenance(), "smoke": args.smoke, "throughput": runs, "chain": chained,
              "decoding": decoding(args.work / "sft/model", sizes["requests"], sizes["new_tokens"]),
              "sweep": swept, "next": advice(measured, card_memory_gib())}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

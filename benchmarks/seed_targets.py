"""The demo's four learning targets (eval.fact_targets) on each pretraining seed, quoted at the worst.

    python benchmarks/seed_targets.py --workdir /tmp/seeds --seeds 0 1 2
    python benchmarks/seed_targets.py --workdir /tmp/seeds --overlay trial.yaml --name seed_targets-trial

--workdir holds a copy of this workflow (made there from the tracked files when it is missing). For
each seed, `snakemake --cores all eval --config pretrain="{seed: N}"` pretrains the base model again
and reruns everything after it (the corpus, tokenizer and token shards are built once), and the
knowledge and samples stages' results are read: the base model's fact probe in the corpus's
phrasing and in the held-out one, the share of those facts the chat model keeps, and the share of
its answers to the demo prompts that end with <|im_end|>. Each target is quoted at its worst seed,
as README quotes it. --overlay lays a YAML of settings under trial over config.yaml (each seed's
run adds its pretrain.seed to it); the report records it. Writes benchmarks/results/NAME.{json,md}
(NAME: seed_targets).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from results_io import provenance, save, workflow_copy

TARGETS = {"base_corpus": "base model, facts in the corpus's phrasing",
           "base_held_out": "base model, facts in a held-out phrasing",
           "sft_keeps": "chat model keeps, share of the base model's corpus facts",
           "sft_ends_turn": "chat answers ending with the end-of-turn token"}


def measured(workdir: Path, seed, overlay):
    settings = {**overlay, "pretrain": {**overlay.get("pretrain", {}), "seed": seed}}
    (workdir / "seed_overlay.yaml").write_text(yaml.safe_dump(settings))
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "eval", "--configfile", "config.yaml",
                          "seed_overlay.yaml"], cwd=workdir, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"seed {seed}: snakemake failed in {workdir}:\n{run.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    probe = {model: json.loads((workdir / f"results/eval/{model}/knowledge.json").read_text())["overall"]
             for model in ("base_model", "sft_model")}
    samples = json.loads((workdir / "results/eval/sft_model/samples.json").read_text())["chat_format"]
    base = probe["base_model"]["corpus"]["accuracy"]
    return {"seed": seed, "minutes": round(seconds / 60, 1),
            "base_corpus": base, "base_held_out": probe["base_model"]["held_out"]["accuracy"],
            "sft_keeps": round(probe["sft_model"]["corpus"]["accuracy"] / base, 4),
            "sft_ends_turn": samples["ends_with_im_end"]}


def markdown(report):
    seeds = report["runs"]
    lines = [f"# The demo's learning targets on every pretraining seed ({report['machine']})", "",
             f"`{report['command']}`", "",
             "Each seed pretrains the demo's base model again and reruns SFT and the evaluation on it; "
             "the targets are config.yaml's `eval.fact_targets`." +
             (f" Settings laid over config.yaml: `{json.dumps(report['overlay'])}`." if report["overlay"] else ""), "",
             "| target | " + " | ".join(f"seed {r['seed']}" for r in seeds) +
             " | worst | needed | holds on every seed |",
             "|---|" + "---:|" * (len(seeds) + 2) + "---|"]
    for key, name in TARGETS.items():
        values = [r[key] for r in seeds]
        needed = report["targets"][key]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1%}" for v in values) +
                     f" | **{min(values):.1%}** | {needed:.0%} | {'yes' if min(values) >= needed else 'no'} |")
    lines += ["", "Minutes per seed (pretraining and what follows): " +
              ", ".join(f"{r['minutes']}" for r in seeds) + "."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--overlay", type=Path, help="YAML settings laid over config.yaml for every seed")
    ap.add_argument("--name", default="seed_targets", help="the results' file name in benchmarks/results")
    args = ap.parse_args()
    overlay = yaml.safe_load(args.overlay.read_text()) if args.overlay else {}
    workdir = workflow_copy(args.workdir.resolve())
    targets = yaml.safe_load((workdir / "config.yaml").read_text())["eval"]["fact_targets"]
    runs = []
    for seed in args.seeds:
        runs.append(measured(workdir, seed, overlay))
        print(runs[-1], flush=True)
    report = {**provenance(), "overlay": overlay, "targets": targets, "runs": runs,
              "worst": {key: min(r[key] for r in runs) for key in TARGETS},
              "every_target_holds": all(min(r[key] for r in runs) >= targets[key] for key in TARGETS)}
    save(args.name, report, markdown(report))


if __name__ == "__main__":
    main()

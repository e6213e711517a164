"""Preference tuning (DPO, with trl) of the SFT model on chosen/rejected answer pairs.

    python -m workflow_scripts.training.dpo --model results/sft_model --data demo/dpo/demo_pairs.jsonl \
        --checkpoint-root results/checkpoints/dpo_model --out results/dpo_model \
        --metrics dpo/metrics.jsonl --plot dpo/loss.png --summary dpo/summary.json

Pairs are JSON arrays or JSONL of {conversations: [{from, value}], chosen, rejected}, chosen and
rejected each a string or a {from, value} turn (the layouts of ../shared/data/dpo/); the
conversation must end on the user's turn. A malformed record stops the stage with its file,
line and field, unless --skip-bad-records. The frozen reference is the starting model itself
(trl's default). Checkpoints go to a run directory named by the settings, outside the rule's
outputs; rerunning resumes from the last one.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from workflow_scripts.lib.atomic_files import file_digest, write_json, write_text
from workflow_scripts.lib.plots import training_curves
from workflow_scripts.lib.settings import add_settings, identity_settings, typed
from workflow_scripts.lib.stage_cli import log, stage_cli
from workflow_scripts.lib.training.checkpoints import run_id
from workflow_scripts.lib.training.metrics import tenth_mean
from workflow_scripts.lib.training.models import model_fingerprint, save_trained
from workflow_scripts.lib.training.sft_data import ReadStats, converted_records, to_pair
from workflow_scripts.lib.training.stop_signals import StopRequests, run_trainer
from workflow_scripts.lib.training.training import add_optimisation_arguments


def read_pairs(paths, skip_bad):
    """(pairs in trl's conversational preference format, {path: {pairs, skipped_bad}})."""
    pairs, counts = [], {}
    for path in paths:
        stats = ReadStats()
        pairs += converted_records(Path(path), to_pair, skip_bad, stats, setting="dpo.skip_bad_records")
        counts[str(path)] = {"pairs": stats.records, "skipped_bad": stats.skipped}
    return pairs, counts


def plot(records, path):
    logged = [r for r in records if "rewards/margins" in r]
    steps = [r["step"] for r in logged]
    training_curves(path, "DPO", "step", [("DPO loss", [(steps, [r["loss"] for r in logged], {})]),
                                          ("reward margin (chosen - rejected)",
                                           [(steps, [r["rewards/margins"] for r in logged], {"color": "tab:green"})])])


def summarise(records, counts, beta):
    logged = [r for r in records if "rewards/margins" in r]
    return {"pairs": sum(c["pairs"] for c in counts.values()), "data": counts, "steps": logged[-1]["step"],
            "beta": beta, "first_loss": logged[0]["loss"], "final_loss": tenth_mean(logged, "loss"),
            "first_margin": tenth_mean(logged, "rewards/margins", last=False),
            "final_margin": tenth_mean(logged, "rewards/margins"),
            "final_reward_accuracy": tenth_mean(logged, "rewards/accuracies")}


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True, help="the SFT model directory")
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="preference files")
    add_settings(ap, "dpo", "skip_bad_records", "beta", "batch_size", "max_len")
    add_optimisation_arguments(ap, "dpo")


@dataclass(frozen=True)
class DpoRun:
    """What trl's DPOConfig takes of the stage's options."""
    max_steps: int
    batch_size: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    clip: float
    beta: float
    max_len: int
    checkpoint_every: int
    keep_checkpoints: int
    seed: int


def trainer(model_dir, run, pairs, run_dir):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = DPOConfig(output_dir=str(run_dir), max_steps=run.max_steps, per_device_train_batch_size=run.batch_size,
                       learning_rate=run.lr, lr_scheduler_type="cosine_with_min_lr",
                       lr_scheduler_kwargs={"min_lr_rate": run.min_lr_ratio}, warmup_steps=run.warmup_steps,
                       weight_decay=run.weight_decay, max_grad_norm=run.clip, beta=run.beta,
                       max_length=run.max_len, logging_steps=1, save_steps=run.checkpoint_every,
                       save_total_limit=run.keep_checkpoints, report_to=[], seed=run.seed, data_seed=run.seed,
                       bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available())
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)


def run(args, progress_stream):
    pairs, counts = read_pairs(args.data, args.skip_bad_records)
    data_hash = "".join(file_digest(p) for p in args.data)
    settings = identity_settings(vars(args), "dpo")
    run_dir = args.checkpoint_root / run_id(settings, model=model_fingerprint(args.model), data=data_hash)
    stop = StopRequests()
    dpo = trainer(args.model, typed(DpoRun, vars(args)), pairs, run_dir)
    run_trainer(dpo, stop, run_dir, args.max_steps, args.backends, settings)
    save_trained(dpo, args.model, args.out)
    records = [r for r in dpo.state.log_history if "loss" in r]
    write_text(args.metrics, "".join(json.dumps(r) + "\n" for r in records))
    plot(records, args.plot)
    summary = summarise(records, counts, args.beta)
    write_json(args.summary, summary)
    log.info("%s", summary)


if __name__ == "__main__":
    stage_cli("dpo", __doc__, add_arguments, run)

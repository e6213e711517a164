"""Reinforcement learning with verifiable rewards (GRPO, with trl) of the chat model on questions
whose answers can be checked.

    python -m workflow_scripts.training.grpo --model results/sft_model --data results/chat_data/grpo.jsonl \
        --rewards exact_answer chat_format answer_length --reward-weights 1 0.5 0.5 \
        --checkpoint-root results/checkpoints/grpo_model --out results/grpo_model \
        --metrics grpo/metrics.jsonl --plot grpo/reward.png --summary grpo/summary.json

The questions are JSONL of {prompt: [{role, content}], answer, ...} as rule chat_data writes them.
For each question the model samples grpo.generations replies; each reply's reward is the weighted
sum of the reward functions (workflow_scripts/lib/training/rewards.py: built-ins, or FILE.py:FUNCTION
of the user's own), and the policy moves towards the replies that beat their group's mean, held
to the starting model by a KL penalty (grpo.beta). Full fine-tuning or LoRA (merged into the saved
model). Checkpoints go to a run directory named by the settings, the starting model, the data and
the user's reward files, outside the rule's outputs; rerunning resumes from the last one.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from workflow_scripts.lib.atomic_files import file_digest, write_json, write_text
from workflow_scripts.lib.chatml import IM_END
from workflow_scripts.lib.plots import training_curves
from workflow_scripts.lib.settings import add_settings, identity_settings, typed
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.checkpoints import run_id
from workflow_scripts.lib.training.metrics import tenth_mean
from workflow_scripts.lib.training.models import (Lora, add_method_arguments, model_fingerprint, save_trained,
                                                  with_lora)
from workflow_scripts.lib.training.rewards import checked_rewards, reward_functions
from workflow_scripts.lib.training.stop_signals import StopRequests, run_trainer
from workflow_scripts.lib.training.training import add_optimisation_arguments
from workflow_scripts.lib.user_files import read_utf8
from workflow_scripts.lib.workflow.workflow_config import user_reward_files


def read_questions(path: Path):
    """The records of chat_data's grpo.jsonl, every one with the same fields (datasets needs columns)."""
    records = [json.loads(line) for line in read_utf8(path).splitlines() if line.strip()]
    fields = sorted({key for record in records for key in record})
    return [{key: record.get(key) for key in fields} for record in records]


def trl_reward(name, function, tokenizer, end_id, fields):
    """A reward as trl's GRPOTrainer calls it (prompts, completions, completion_ids and the dataset's
    columns), given to `function` as the replies' text, whether each ended its turn, and the record."""
    def reward(prompts, completions, completion_ids, **columns):
        ended = [bool(ids) and ids[-1] == end_id for ids in completion_ids]
        replies = [tokenizer.decode(ids[:-1] if done else ids) for ids, done in zip(completion_ids, ended)]
        record = {key: columns[key] for key in fields if key in columns}
        return checked_rewards(name, function, replies, ended, record)
    reward.__name__ = name  # trl logs each reward as rewards/<name>/mean
    return reward


def plot(records, path):
    steps = [r["step"] for r in records]
    rewards = [(steps, [r["reward"] for r in records], {"label": "total", "color": "black"})]
    rewards += [(steps, [r[key] for r in records], {"label": key.split("/")[1]})
                for key in sorted(records[0]) if key.startswith("rewards/") and key.endswith("/mean")]
    training_curves(path, "GRPO", "step", [("reward (mean of the sampled replies)", rewards),
                                           ("KL to the starting model", [(steps, [r["kl"] for r in records],
                                                                          {"color": "tab:red"})])])


def summarise(records, counts, rewards):
    per_reward = {name: {"first": tenth_mean(records, f"rewards/{name}/mean", last=False),
                         "final": tenth_mean(records, f"rewards/{name}/mean")} for name in rewards}
    return {"questions": counts["questions"], "data": counts["file"], "steps": records[-1]["step"],
            "first_reward": tenth_mean(records, "reward", last=False), "final_reward": tenth_mean(records, "reward"),
            "rewards": per_reward, "final_kl": tenth_mean(records, "kl"), "max_kl": max(r["kl"] for r in records),
            "final_reply_tokens": tenth_mean(records, "completions/mean_length")}


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True, help="the chat model to start from (SFT or DPO)")
    ap.add_argument("--data", type=Path, required=True, help="questions as rule chat_data writes them")
    add_settings(ap, "grpo", "rewards", "reward_weights", "max_answer_chars", "generations", "prompts_per_step",
                 "max_new_tokens", "temperature", "beta")
    add_method_arguments(ap, "grpo")
    add_optimisation_arguments(ap, "grpo")


@dataclass(frozen=True)
class GrpoRun:
    """What trl's GRPOConfig takes of the stage's options."""
    max_steps: int
    generations: int
    prompts_per_step: int
    max_new_tokens: int
    temperature: float
    beta: float
    reward_weights: list
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    clip: float
    checkpoint_every: int
    keep_checkpoints: int
    seed: int


def trainer(model_dir, run, lora, rewards, questions, run_dir):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = GRPOConfig(output_dir=str(run_dir), max_steps=run.max_steps, num_generations=run.generations,
                        per_device_train_batch_size=run.prompts_per_step * run.generations,
                        max_completion_length=run.max_new_tokens, temperature=run.temperature, beta=run.beta,
                        reward_weights=run.reward_weights, learning_rate=run.lr,
                        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": run.min_lr_ratio},
                        warmup_steps=run.warmup_steps, weight_decay=run.weight_decay, max_grad_norm=run.clip,
                        logging_steps=1, save_steps=run.checkpoint_every, save_total_limit=run.keep_checkpoints,
                        report_to=[], seed=run.seed, data_seed=run.seed, bf16=torch.cuda.is_available(),
                        use_cpu=not torch.cuda.is_available())
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if lora:
        model = with_lora(model, lora)
    end_id = tokenizer.convert_tokens_to_ids(IM_END)
    fields = [key for key in questions[0] if key != "prompt"]
    functions = [trl_reward(name, function, tokenizer, end_id, fields) for name, function in rewards.items()]
    return GRPOTrainer(model=model, reward_funcs=functions, args=config, train_dataset=Dataset.from_list(questions),
                       processing_class=tokenizer)


def run(args, progress_stream):
    if len(args.reward_weights) != len(args.rewards):
        raise StageError(f"grpo.reward_weights has {len(args.reward_weights)} weights for {len(args.rewards)} "
                         "rewards; give one weight per reward")
    rewards = reward_functions(args.rewards, args.max_answer_chars)
    questions = read_questions(args.data)
    user_code = "".join(file_digest(Path(f)) for f in user_reward_files(args.rewards))
    settings = identity_settings(vars(args), "grpo")
    run_dir = args.checkpoint_root / run_id(settings, model=model_fingerprint(args.model), data=file_digest(args.data),
                                            rewards=user_code)
    lora = typed(Lora, vars(args)) if args.method == "lora" else None
    stop = StopRequests()
    grpo = trainer(args.model, typed(GrpoRun, vars(args)), lora, rewards, questions, run_dir)
    run_trainer(grpo, stop, run_dir, args.max_steps, args.backends, settings)
    save_trained(grpo, args.model, args.out, lora=bool(lora))
    records = [r for r in grpo.state.log_history if "reward" in r]
    write_text(args.metrics, "".join(json.dumps(r) + "\n" for r in records))
    plot(records, args.plot)
    summary = summarise(records, {"questions": len(questions), "file": str(args.data)}, args.rewards)
    write_json(args.summary, summary)
    log.info("%s", summary)


if __name__ == "__main__":
    stage_cli("grpo", __doc__, add_arguments, run)

# Snakemake glue that the rules share: the config checked (lib/workflow/workflow_config.py), the input
# functions, and the names of a run's shards, models and fetched files (their wildcards' patterns
# are in the Snakefile, before the rules).
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import strip_wildcard_constraints

from workflow_scripts.lib.workflow.code_fingerprint import code_fingerprint
from workflow_scripts.lib.report_words import in_languages
from workflow_scripts.lib.workflow.command_line import snakemake_args
from workflow_scripts.lib.workflow.workflow_config import (CONTINUED_EXPANSION_KEYS, INGEST_KEYS, ConfigError,
                                                           answer_style, as_entries, chat_sources, cli_options,
                                                           corpus_files, corpus_weights, data_sources, extra_corpora,
                                                           fetched_key, launcher, mirrored, multiple_choice_inputs,
                                                           part_settings, run_fetches, run_models, sample_files,
                                                           source_input, source_path, sweep_points, sweep_settings,
                                                           threads_per_process, training_allocation, url_key,
                                                           user_reward_files, validate_config)


def all_cores():
    """Every core the run was given (--cores): the threads of training and tokenizer jobs. Commands
    that run no job, such as `snakemake --report`, give no --cores; for them the value is unused."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def report_category(number, english):
    """A report category in the report's languages (eval.report_languages), numbered: the report
    lists its categories by name."""
    return f"{number}. {in_languages(english, config['eval']['report_languages'])}"


def report_labels(**labels):
    """A report item's labels, their names and values in the report's languages."""
    languages = config["eval"]["report_languages"]
    return {in_languages(name, languages): in_languages(value, languages) for name, value in labels.items()}


def sft_base():
    """The model SFT starts from: this workflow's base model unless sft.base names another."""
    return config["sft"]["base"] or rules.base_model.output.model


def part_corpus(wildcards):
    return part_settings(config, EXTRA_CORPORA, wildcards.part)


def convert_input(wildcards):
    if wildcards.part.startswith("zhwiki-"):
        return rules.extract_shard.output.docs.format(shard=wildcards.part[-3:])
    return rules.ingest_part.output.docs.format(part=wildcards.part)


def grpo_start():
    """The model GRPO starts from: the last chat model before it (DPO's when DPO is on)."""
    return rules.dpo_model.output.model if "dpo_model" in MODELS else rules.sft_model.output.model


def sft_replay_input():
    """The token shards SFT replays (their index), when it replays pretraining text."""
    return [rules.tokens_index.output.index.format(tokens="tokens")] if config["sft"]["replay_share"] else []


def stage_benchmarks(wildcards):
    """The benchmark TSV of every job run_summary depends on: its wall time per stage."""
    paths = set()
    # export comes after the run (target gguf); the sweep and its fit are runs of their own (target scaling)
    not_in_run = {"run_summary", "gguf_file", "ollama_modelfile", "sweep_point", "sweep", "scaling", "budget_preset"}
    not_in_run |= {rule for rule in ("dpo_model", "grpo_model", "continued_model") if rule not in MODELS}
    not_in_run |= {"expand_vocab"} if "continued_model" not in MODELS else set()
    not_in_run |= {"knowledge_model"} if not FACTS else set()
    for stage in workflow.rules:
        if stage.benchmark is None or stage.name in not_in_run:
            continue
        shards = TOKEN_SHARDS if stage.name == "token_shard" else SHARDS
        parts = EXTRA_PARTS if stage.name == "ingest_part" else PARTS
        pattern = strip_wildcard_constraints(str(stage.benchmark))
        paths.update(expand(pattern, shard=shards, part=parts, split=SPLITS, model=MODELS, set=list(MC_SETS),
                            tokens=list(TOKENIZERS), kind=CHAT_KINDS, fetched=RUN_FETCHES, group=BAND_GROUPS,
                            key_group=KEY_GROUPS, join_part=JOIN_PARTS))
    return sorted(paths)


SNAKEMAKE_ARGS = snakemake_args()
try:
    validate_config(config, Path(workflow.basedir, "config", "schema.yaml"),
                    set(SNAKEMAKE_ARGS.targets) if SNAKEMAKE_ARGS else set())
except ConfigError as err:
    sys.exit(f"invalid config: {err}")

ALL_CORES = all_cores()
SHARDS = [f"{i:03d}" for i in range(config["extract"]["shards"])]
TOKEN_SHARDS = [f"{i:03d}" for i in range(config["tokens"]["shards"])]
EXTRA_CORPORA = extra_corpora(config)
EXTRA_PARTS = [f"{c['name']}-{i:03d}" for c in EXTRA_CORPORA for i in range(c["shards"])]
PARTS = [f"zhwiki-{shard}" for shard in SHARDS] + EXTRA_PARTS
BAND_GROUPS = [str(group) for group in range(config["dedup"]["band_jobs"])]
# dedup.join_jobs sets both how many dedup_exact jobs share the exact keys and how many dedup_join
# parts share the visiting order
KEY_GROUPS = [str(group) for group in range(config["dedup"]["join_jobs"])]
JOIN_PARTS = KEY_GROUPS
SPLITS = ["train", "validation"]
FETCHED = "results/fetched"
# Relative to the working directory, so that a run moved or copied elsewhere (a cluster's other
# mount point) does not see download's params change and rerun every stage.
SAMPLE_DIR = os.path.relpath(Path(workflow.basedir, "demo", "zhwiki"))
CONTINUED = config["continued_pretrain"]["enabled"]
MODELS = run_models(config)
TOKENIZERS = {"tokens": "results/tokenizer", **({"expanded_tokens": "results/expanded_base"} if CONTINUED else {})}
MC_ENTRIES = {entry["name"]: entry for entry in config["eval"]["multiple_choice"]}
MC_SETS = {name: source_path(entry, FETCHED) for name, entry in MC_ENTRIES.items()}
FACTS = config["eval"]["facts"]
FETCHES = {fetched_key(entry): entry for entry in data_sources(config) if "url" in entry}
CHAT_KINDS = ["sft"] + [kind for kind in ("dpo", "grpo") if f"{kind}_model" in MODELS]
RUN_FETCHES = run_fetches(config, CHAT_KINDS)
SWEEP_POINTS = sweep_points(config["scaling"])
EXPORT_MODELS = [model for model in config["export"]["models"] if model in MODELS]
# the last stage's chat model among those exported, else SFT's
EXPORT_CHAT_MODEL = next((m for m in ("grpo_model", "dpo_model") if m in EXPORT_MODELS), "sft_model")
# every training rule's trackers (config tracking)
TRACKING_OPTIONS = cli_options(config["tracking"])
EXPORT_CHAT_TYPE = "q8_0" if "q8_0" in config["export"]["types"] else "f16"

# Config validation and helpers shared by every rule file.
import glob
import hashlib
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.io import strip_wildcard_constraints


def validate_config(cfg, schema_path):
    """One line per problem, naming the key: an unknown key, a wrong type, a value out of range."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        sys.exit(f"invalid config: {'; '.join(map(describe_error, errors))}")
    for section in ("pretrain", "continued_pretrain"):
        settings = cfg[section]
        world = (settings["gpus"] or settings["processes"]) * settings.get("nodes", 1)
        per_micro_step = settings["micro_batch"] * settings["seq_len"] * world
        if settings["global_batch_tokens"] % per_micro_step:
            sys.exit(f"invalid config: {section}.global_batch_tokens: {settings['global_batch_tokens']} is not a "
                     f"multiple of micro_batch x seq_len x processes (or gpus) x nodes = {per_micro_step}")
    check_multiple_choice_sets(cfg["eval"]["multiple_choice"])
    continued = cfg["continued_pretrain"]
    if continued["enabled"] and not (continued["base"] and Path(continued["base"], "config.json").is_file()):
        sys.exit(f"invalid config: continued_pretrain.base: {continued['base']!r} is not a Hugging Face model "
                 "directory (no config.json); point it at the model to expand")
    check_extra_corpora(cfg["corpora"]["extra"])


def check_multiple_choice_sets(sets):
    names = [entry["name"] for entry in sets]
    if len(set(names)) < len(names):
        sys.exit(f"invalid config: eval.multiple_choice: names {names} repeat; give each set its own name")
    for entry in sets:
        folder = Path(entry["path"])
        if not any((folder / split).is_dir() for split in ("test", "val")):
            sys.exit(f"invalid config: eval.multiple_choice: {entry['name']}: {folder} has no test/ or val/ folder "
                     "of subject CSVs (CMMLU or C-Eval layout)")


def check_extra_corpora(corpora):
    names = [entry["name"] for entry in corpora]
    if len(set(names)) < len(names):
        sys.exit(f"invalid config: corpora.extra: names {names} repeat; give each corpus its own name")
    for entry in corpora:
        files = corpus_files(entry)
        if not files:
            sys.exit(f"invalid config: corpora.extra: {entry['name']}: no file matches {entry['path']}")
        unknown = [f for f in files if Path(f).suffix not in (".txt", ".jsonl", ".parquet")]
        if unknown:
            sys.exit(f"invalid config: corpora.extra: {entry['name']}: {unknown[0]} is not .txt, .jsonl or .parquet")


def corpus_files(entry):
    """A corpus's files: its path, a glob (sorted) or a folder (every file in it, sorted)."""
    path = Path(entry["path"])
    pattern = str(path / "*") if path.is_dir() else entry["path"]
    return sorted(f for f in glob.glob(pattern) if Path(f).is_file())


def describe_error(error):
    key = ".".join(map(str, error.absolute_path)) or "(top level)"
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{key}: unknown key {', '.join(unknown)} (allowed: {', '.join(error.schema['properties'])})"
    return f"{key}: {error.message}"


def code_version(*modules):
    """Hash of a stage's modules (and the shared helpers): a params value, so code edits rerun it."""
    digest = hashlib.sha1()
    for module in ("common", *modules):
        digest.update(Path(workflow.basedir, "workflow_scripts", f"{module}.py").read_bytes())
    return digest.hexdigest()[:16]


def all_cores():
    """Every core the run was given (--cores): the threads of training and tokenizer jobs. Commands
    that run no job, such as `snakemake --report`, give no --cores; for them the value is unused."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def sample_files(wildcards):
    """The bundled dump is an input only when it is the source, so regenerating it reruns download."""
    if config["download"]["source"] != "sample":
        return []
    return sorted(str(p) for p in Path(SAMPLE_DIR).iterdir())


def local_dump_args():
    paths = {"--local-dump": config["download"]["local_dump"], "--local-index": config["download"]["local_index"]}
    return " ".join(f"{option} {path}" for option, path in paths.items() if path)


def flag(enabled, name):
    return name if enabled else ""


def cli_options(settings, skip=()):
    """A config section as command-line options: --key value, --flag / --no-flag for booleans.
    Sorted by key, so reordering config.yaml changes no params and reruns nothing."""
    options = []
    for key, value in sorted(settings.items()):
        if key in skip:
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            options.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            options.append(f"--{name} {' '.join(map(str, value))}")
        else:
            options.append(f"--{name} {value}")
    return " ".join(options)


def sft_base():
    """The model SFT starts from: this workflow's base model unless sft.base names another."""
    return config["sft"]["base"] or rules.base_model.output.model


def sft_data_args():
    return " ".join(f"{entry['path']}:{entry['weight']}" for entry in config["sft"]["data"])


def threads_per_process(section):
    """The rule's threads split among its processes (Snakemake pins a job to `threads` via OMP_NUM_THREADS)."""
    return lambda wildcards, threads: max(1, threads // (config[section]["gpus"] or config[section]["processes"]))


def launcher(section):
    """The training launcher (workflow_scripts/launch.py: accelerate launch, GPUs claimed per job);
    across nodes, srun starts one launcher on each node of the job's allocation."""
    settings = config[section]
    nodes = settings.get("nodes", 1)
    srun = f"srun --overlap --nodes={nodes} --ntasks-per-node=1 " if nodes > 1 else ""
    processes = settings.get("processes", 1)
    return (f"{srun}python -m workflow_scripts.launch --gpus {settings['gpus']} --processes {processes}"
            f" --nodes {nodes} --")


def extra_corpora():
    """config corpora.extra with every default filled in: the zhwiki settings for conversion and
    cleaning, overridden key by key by the corpus's own."""
    defaults = {"text_field": "text", "title_field": "title", "txt_document": "file", "shards": 1, "weight": 1.0,
                "opencc_config": config["convert"]["opencc_config"]}
    return [{**defaults, **entry, "clean": {**config["clean"], **entry.get("clean", {})}}
            for entry in config["corpora"]["extra"]]


def part_corpus(wildcards):
    """The settings of the corpus a {part} belongs to (zhwiki's for zhwiki-NNN)."""
    name = wildcards.part[:-4]
    if name == "zhwiki":
        return {"name": name, "opencc_config": config["convert"]["opencc_config"], "clean": config["clean"]}
    return next(entry for entry in EXTRA_CORPORA if entry["name"] == name)


def extra_corpus_files(wildcards):
    return corpus_files(part_corpus(wildcards))


def ingest_options(wildcards):
    corpus = part_corpus(wildcards)
    return cli_options({key: corpus[key] for key in ("text_field", "title_field", "txt_document", "shards")})


def convert_input(wildcards):
    if wildcards.part.startswith("zhwiki-"):
        return rules.extract.output.docs.format(shard=wildcards.part[-3:])
    return rules.ingest.output.docs.format(part=wildcards.part)


def corpus_weights():
    return {"zhwiki": config["corpora"]["zhwiki_weight"], **{c["name"]: c["weight"] for c in EXTRA_CORPORA}}


def multiple_choice_files(wildcards):
    """A multiple-choice set's CSVs, so editing or adding one reruns its evaluation."""
    return sorted(str(p) for p in Path(MC_SETS[wildcards.set]).glob("*/*.csv"))


def stage_benchmarks(wildcards):
    """The benchmark TSV of every job run_summary depends on: its wall time per stage."""
    paths = set()
    not_in_run = {"run_summary"} | {rule for rule in ("dpo_model", "continued_model") if rule not in MODELS}
    not_in_run |= {"expand_vocab"} if "continued_model" not in MODELS else set()
    for stage in workflow.rules:
        if stage.benchmark is None or stage.name in not_in_run:
            continue
        shards = TOKEN_SHARDS if stage.name == "token_shard" else SHARDS
        parts = EXTRA_PARTS if stage.name == "ingest" else PARTS
        pattern = strip_wildcard_constraints(str(stage.benchmark))
        paths.update(expand(pattern, shard=shards, part=parts, split=SPLITS, model=MODELS, set=list(MC_SETS),
                            tokens=list(TOKENIZERS)))
    return sorted(paths)


validate_config(config, Path(workflow.basedir, "config", "schema.yaml"))

ALL_CORES = all_cores()
SHARDS = [f"{i:03d}" for i in range(config["extract"]["shards"])]
TOKEN_SHARDS = [f"{i:03d}" for i in range(config["tokens"]["shards"])]
EXTRA_CORPORA = extra_corpora()
EXTRA_PARTS = [f"{c['name']}-{i:03d}" for c in EXTRA_CORPORA for i in range(c["shards"])]
PARTS = [f"zhwiki-{shard}" for shard in SHARDS] + EXTRA_PARTS
EXTRA_PART_PATTERN = "|".join(rf"{c['name']}-\d{{3}}" for c in EXTRA_CORPORA) or "(?!)"
SPLITS = ["train", "validation"]
DL = "results/download/zhwiki-pages-articles-multistream"
SAMPLE_DIR = str(Path(workflow.basedir, "demo", "zhwiki"))
CONTINUED = config["continued_pretrain"]["enabled"]
# Keys of continued_pretrain that are expand_vocab's (or the launcher's), not the training's.
CONTINUED_EXPANSION_KEYS = ("enabled", "base", "vocab_size", "max_chars", "init", "gpus", "processes")
MODELS = (["base_model", "sft_model"] + (["dpo_model"] if config["dpo"]["enabled"] else [])
          + (["continued_model"] if CONTINUED else []))
TOKENIZERS = {"tokens": "results/tokenizer", **({"expanded_tokens": "results/expanded_base"} if CONTINUED else {})}
MC_SETS = {entry["name"]: entry["path"] for entry in config["eval"]["multiple_choice"]}


wildcard_constraints:
    shard=r"\d{3}",
    part="(" + "|".join(["zhwiki"] + [c["name"] for c in EXTRA_CORPORA]) + r")-\d{3}",
    split="train|validation",
    model="base_model|sft_model|dpo_model|continued_model",
    tokens="tokens|expanded_tokens",
    set="|".join(MC_SETS) or "(?!)",

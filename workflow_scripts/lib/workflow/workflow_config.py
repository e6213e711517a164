"""The workflow's config checked before any job runs, one line per problem naming the key, and
the helpers the rules build their commands and paths with. Plain Python, for rules/common.smk
(and tests/test_workflow_config.py)."""
import contextlib
import glob
import hashlib
import itertools
import json
import re
import shlex
from pathlib import Path

import jsonschema
import yaml

from workflow_scripts.lib.http_fetch import is_archive, url_file_name
from workflow_scripts.lib.settings import definitions, resolved
from workflow_scripts.lib.model_shapes import flops_per_token, padded_vocab, shape


class ConfigError(Exception):
    """A config the workflow cannot run: reported as one line, `invalid config: ...`."""


def validate_config(cfg, schema_path, targets):
    """One line per problem, naming the key: an unknown key, a wrong type, a value out of range.
    Values given as text on the command line (--config, which reads nested values as strings) are
    first read as the numbers or booleans the schema asks for."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    cfg.update(coerced(cfg, schema))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        raise ConfigError("; ".join(map(describe_error, errors)))
    for section in ("pretrain", "continued_pretrain"):
        settings = cfg[section]
        world = (settings["gpus"] or settings["processes"]) * settings.get("nodes", 1)
        per_micro_step = settings["micro_batch"] * settings["seq_len"] * world
        if settings["global_batch_tokens"] % per_micro_step:
            raise ConfigError(f"{section}.global_batch_tokens: {settings['global_batch_tokens']} is not a "
                              f"multiple of micro_batch x seq_len x processes (or gpus) x nodes = {per_micro_step}")
    check_multiple_choice_sets(cfg["eval"]["multiple_choice"])
    if cfg["sft"]["replay_share"] and cfg["sft"]["base"]:
        raise ConfigError("sft.replay_share: replaying pretraining text needs this workflow's base model, "
                          "whose tokenizer made results/tokens; set sft.replay_share: 0 to fine-tune sft.base")
    continued = cfg["continued_pretrain"]
    if continued["enabled"] and not (continued["base"] and Path(continued["base"], "config.json").is_file()):
        raise ConfigError(f"continued_pretrain.base: {continued['base']!r} is not a Hugging Face model "
                          "directory (no config.json); point it at the model to expand")
    check_extra_corpora(cfg["corpora"]["extra"])
    check_rewards(cfg["grpo"])
    check_fetched_checksums(data_sources(cfg))
    check_context_lengths(cfg)
    check_targets_have_their_preset(cfg, targets)
    if any(target in SWEEP_TARGETS or target.startswith(("results/sweep/", "results/scaling/")) for target in targets):
        check_sweep(cfg)


def user_reward_files(specs):
    """The files of the user's own reward functions: grpo.rewards entries FILE.py:FUNCTION."""
    return [spec.rpartition(":")[0] for spec in specs if ":" in spec]


def check_rewards(grpo):
    """One weight per reward, and each user reward's file present."""
    if len(grpo["reward_weights"]) != len(grpo["rewards"]):
        raise ConfigError(f"grpo.reward_weights: {len(grpo['reward_weights'])} weights for {len(grpo['rewards'])} "
                          "rewards; give one weight per entry of grpo.rewards")
    for path in user_reward_files(grpo["rewards"]):
        if not Path(path).is_file():
            raise ConfigError(f"grpo.rewards: {path} does not exist; name a FILE.py:FUNCTION whose file is there")


def check_targets_have_their_preset(cfg, targets):
    """Targets of an optional recipe, named without the preset that turns it on: one line naming it."""
    if not cfg["continued_pretrain"]["enabled"] and set(targets) & {"continued_model", "expand_vocab"}:
        raise ConfigError("continued_model needs continued_pretrain.enabled and a base model: copy one to "
                          "existing_base, then run snakemake --cores all continued_model --configfile config.yaml "
                          "config/presets/continued.yaml")


def check_context_lengths(cfg):
    """Lengths beyond the context a model was trained for: SFT, DPO and evaluation would otherwise
    run on positions the model never saw (or cut prompts without a word)."""
    chat_context, chat_context_key = model_context(cfg["sft"]["base"], cfg["pretrain"]["seq_len"])
    lengths = [("sft.max_len", cfg["sft"]["max_len"]), ("eval.max_prompt_tokens", cfg["eval"]["max_prompt_tokens"]),
               ("eval.seq_len", cfg["eval"]["seq_len"])]
    if cfg["dpo"]["enabled"]:
        lengths.append(("dpo.max_len", cfg["dpo"]["max_len"]))
    for key, length in lengths:
        if length > chat_context:
            raise ConfigError(f"{key}: {length} is longer than the model's context, {chat_context_key} = "
                              f"{chat_context}; lower {key} or raise {chat_context_key}")


def model_context(base, pretrain_seq_len):
    """(context length, what sets it) of the model SFT starts from: this workflow's pretraining
    seq_len, or a given model's max_position_embeddings (unknown while that model is yet to be built)."""
    if not base:
        return pretrain_seq_len, "pretrain.seq_len"
    config_file = Path(base, "config.json")
    if not config_file.is_file():
        return float("inf"), ""
    return json.loads(config_file.read_text()).get("max_position_embeddings", float("inf")), \
        f"max_position_embeddings of {config_file}"


def coerced(value, schema):
    """value with every string that stands where the schema wants a number, a boolean or an enum
    of them read as YAML (`"0.001"` -> 0.001); anything else as it is, for the validator to judge.
    A definition's `$ref` is read as the shared definition under its own keys (settings.resolved)."""
    schema = resolved(schema)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: coerced(item, properties.get(key, {})) for key, item in value.items()}
    if isinstance(value, list):
        return [coerced(item, schema.get("items", {})) for item in value]
    scalar = schema.get("type") in ("number", "integer", "boolean") or (
        "enum" in schema and not any(isinstance(option, str) for option in schema["enum"]))
    if not (scalar and isinstance(value, str)):
        return value
    parsed = yaml.safe_load(value)
    with contextlib.suppress(ValueError):
        parsed = float(value) if isinstance(parsed, str) else parsed  # YAML 1.1 reads 1e-3 as text
    return parsed


def data_sources(cfg):
    """Every entry of sft.data, dpo.data, grpo.data and eval.multiple_choice, as {path} or {url, sha256, member}."""
    return as_entries(cfg["sft"]["data"] + cfg["dpo"]["data"] + cfg["grpo"]["data"] + cfg["eval"]["multiple_choice"])


def as_entries(entries):
    """Data entries as dicts: dpo.data and grpo.data may list plain paths."""
    return [{"path": entry} if isinstance(entry, str) else entry for entry in entries]


def check_fetched_checksums(sources):
    pinned = {}
    for entry in filter(lambda entry: "url" in entry, sources):
        sha256 = pinned.setdefault(entry["url"], entry.get("sha256", ""))
        if sha256 != entry.get("sha256", ""):
            raise ConfigError(f"{entry['url']} is given twice with different sha256; give it one")


def check_multiple_choice_sets(sets):
    names = [entry["name"] for entry in sets]
    if len(set(names)) < len(names):
        raise ConfigError(f"eval.multiple_choice: names {names} repeat; give each set its own name")
    for entry in filter(lambda entry: "path" in entry, sets):
        folder = Path(entry["path"])
        if not any((folder / split).is_dir() for split in ("test", "val")):
            raise ConfigError(f"eval.multiple_choice: {entry['name']}: {folder} has no test/ or val/ folder "
                              "of subject CSVs (CMMLU or C-Eval layout)")


def check_extra_corpora(corpora):
    names = [entry["name"] for entry in corpora]
    if len(set(names)) < len(names):
        raise ConfigError(f"corpora.extra: names {names} repeat; give each corpus its own name")
    for entry in corpora:
        files = corpus_files(entry)
        if not files:
            raise ConfigError(f"corpora.extra: {entry['name']}: no file matches {entry['path']}")
        unknown = [f for f in files if Path(f).suffix not in (".txt", ".jsonl", ".parquet")]
        if unknown:
            raise ConfigError(f"corpora.extra: {entry['name']}: {unknown[0]} is not .txt, .jsonl or .parquet")


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
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return f"{key}: give exactly one of path (a local file or folder) or url"
    return f"{key}: {error.message}"


def cli_options(settings, skip=(), only=None):
    """A config section (the keys in `only`, or all but `skip`) as command-line options: --key value,
    --flag / --no-flag for booleans, each value quoted for the shell (an empty path is ''). Sorted by
    key, so reordering config.yaml changes no params and reruns nothing."""
    options = []
    for key, value in sorted(settings.items()):
        if key in skip or (only is not None and key not in only):
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            options.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            options.append(f"--{name} {' '.join(shlex.quote(str(item)) for item in value)}")
        else:
            options.append(f"--{name} {shlex.quote(str(value))}")
    return " ".join(options)


def url_key(url):
    return hashlib.sha1(url.encode()).hexdigest()[:10]


def fetched_key(entry):
    """The folder name of a fetched entry: its file name (readable) and a hash of the URL and the
    sha256 (unique; a new pin fetches into a new folder and leaves the one fetched before)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", url_file_name(entry["url"]))
    return f"{name}-{url_key(entry['url'] + entry.get('sha256', '').lower())}"


def extra_corpora(cfg):
    """config corpora.extra with every default filled in: the entry's own (config/schema.yaml) and
    the zhwiki settings for conversion and cleaning, overridden key by key by the corpus's own."""
    defaults = {key: definition["default"] for key, definition in definitions("corpora.extra").items()
                if "default" in definition}
    defaults["opencc_config"] = cfg["convert"]["opencc_config"]
    return [{**defaults, **entry, "clean": {**cfg["clean"], **entry.get("clean", {})}}
            for entry in cfg["corpora"]["extra"]]


def mirrored(url, mirrors):
    """url with the first matching prefix of fetch.mirrors replaced by its mirror."""
    for prefix, mirror in mirrors.items():
        if url.startswith(prefix):
            return mirror + url[len(prefix):]
    return url


def source_input(entry, fetched_dir):
    """The input a data entry adds: a local file or folder, or the fetch_data output of a URL."""
    if "path" in entry:
        return entry["path"]
    return f"{fetched_dir}/{fetched_key(entry)}"


def source_path(entry, fetched_dir):
    """The file or folder a data entry names: its path, or where fetch_data put its URL (the
    downloaded file, or the unpacked archive's root or `member`)."""
    if "path" in entry:
        return entry["path"]
    name = url_file_name(entry["url"])
    inside = entry.get("member") or ("" if is_archive(name) else name)
    return str(Path(source_input(entry, fetched_dir), inside)) if inside else source_input(entry, fetched_dir)


def chat_sources(entries, fetched_dir):
    """The --sources JSON of chat_data: each file's local path, weight and declared layout."""
    keys = ("weight", "formatting", "columns", "tags")
    return json.dumps([{"path": source_path(entry, fetched_dir), **{key: entry[key] for key in keys if key in entry}}
                       for entry in entries], ensure_ascii=False, sort_keys=True)


def training_allocation(settings):
    """A training job's resources for SLURM. Across nodes: one task per node (srun starts a launcher
    on each), GPUs per node (gres; `gpu` is the whole job's), and `mpi`, without which the plugin runs
    the job's command inside a one-node `srun -n1` step, where srun cannot reach the other node
    ("Only allocated 1 nodes asked for 2" on the CI's two-node partition). tasks_per_gpu 0 keeps the
    plugin from turning `tasks` into --ntasks-per-gpu."""
    nodes = settings.get("nodes", 1)
    if nodes == 1:
        return {"gpu": settings["gpus"], "nodes": 1}
    gpus = {"gres": f"gpu:{settings['gpus']}", "tasks_per_gpu": 0} if settings["gpus"] else {}
    return {"nodes": nodes, "mpi": "srun", "tasks": nodes, **gpus}


def launcher(settings):
    """The training launcher (workflow_scripts/training/launch.py: accelerate launch, GPUs claimed per job);
    across nodes, srun starts one launcher on each node of the job's allocation."""
    nodes = settings.get("nodes", 1)
    # --ntasks: the job step Snakemake runs the command in sets SLURM_NTASKS=1, which srun would take.
    srun = f"srun --overlap --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 " if nodes > 1 else ""
    processes = settings.get("processes", 1)
    return (f"{srun}python -m workflow_scripts.training.launch --gpus {settings['gpus']} --processes {processes}"
            f" --nodes {nodes} --")


def part_settings(cfg, extra, part):
    """The settings of the corpus a part (`zhwiki-000`, `<extra corpus>-001`) belongs to."""
    name = part[:-4]
    if name == "zhwiki":
        return {"name": name, "opencc_config": cfg["convert"]["opencc_config"], "clean": cfg["clean"]}
    return next(entry for entry in extra if entry["name"] == name)


# The keys of a corpora.extra entry that ingest reads (the others act in later stages).
INGEST_KEYS = ("text_field", "title_field", "txt_document", "shards")


def corpus_weights(cfg, extra):
    """{corpus: train weight}, zhwiki first: the order dedup keeps copies in."""
    return {"zhwiki": cfg["corpora"]["zhwiki_weight"], **{entry["name"]: entry["weight"] for entry in extra}}


# Keys of continued_pretrain that are expand_vocab's (or the launcher's), not the training's.
CONTINUED_EXPANSION_KEYS = ("enabled", "base", "vocab_size", "max_chars", "init", "gpus", "processes")


def sample_files(download, sample_dir):
    """The bundled dump's files when it is the source (so regenerating it reruns download), else none."""
    return sorted(str(path) for path in Path(sample_dir).iterdir()) if download["source"] == "sample" else []


def threads_per_process(settings):
    """A training rule's threads split among its processes (Snakemake pins a job to `threads` through
    OMP_NUM_THREADS)."""
    return lambda wildcards, threads: max(1, threads // (settings["gpus"] or settings.get("processes", 1)))


def multiple_choice_inputs(entry, fetched_dir):
    """A multiple-choice set's CSVs (so editing or adding one reruns its evaluation), or its fetch."""
    if "url" in entry:
        return source_input(entry, fetched_dir)
    return sorted(str(path) for path in Path(entry["path"]).glob("*/*.csv"))


def answer_style(model):
    """How a model is prompted: a base model continues text; the SFT, DPO and GRPO models answer chat turns."""
    return "completion" if model in ("base_model", "continued_model") else "chat"


def run_models(cfg):
    """The models a run trains, by rule: the base and SFT models, and DPO's, GRPO's and the continued one
    when on."""
    return (["base_model", "sft_model"] + (["dpo_model"] if cfg["dpo"]["enabled"] else [])
            + (["grpo_model"] if cfg["grpo"]["enabled"] else [])
            + (["continued_model"] if cfg["continued_pretrain"]["enabled"] else []))


def run_fetches(cfg, chat_kinds):
    """The fetched folders a run needs: the chat data of its kinds (dpo.data and grpo.data only when on) and
    the multiple-choice sets given by URL."""
    entries = [entry for kind in chat_kinds for entry in as_entries(cfg[kind]["data"])]
    return sorted({fetched_key(entry) for entry in entries + cfg["eval"]["multiple_choice"] if "url" in entry})


SWEEP_POINT = re.compile(r"d(\d+)-c([0-9.e]+)-lr([0-9.e-]+)-b(\d+)-s(\d+)")
MIN_SWEEP_STEPS = 4  # below this a point is mostly warm-up, and its loss says little
# The targets that plan the sweep: only they check its grid, which a run's other presets (a GPU
# batch, a larger vocabulary) need not fit.
SWEEP_TARGETS = {"sweep", "scaling", "budget_preset", "sweep_point"}


def number_label(value):
    """A number as part of a path: 1e+11 as 1e11, 1e-05 as 1e-5, 0.003 as 0.003."""
    mantissa, _, exponent = f"{value:.6g}".partition("e")
    return mantissa + (f"e{int(exponent)}" if exponent else "")


def sweep_points(scaling):
    """The names of the grid's points (results/sweep/<name>/): every depth, FLOP budget, learning
    rate, batch and seed of the `scaling` section."""
    grid = itertools.product(scaling["depths"], scaling["flops"], scaling["lrs"], scaling["batch_tokens"],
                             scaling["seeds"])
    return [f"d{depth}-c{number_label(flops)}-lr{number_label(lr)}-b{batch}-s{seed}"
            for depth, flops, lr, batch, seed in grid]


def sweep_point(name):
    """A point's depth, FLOP budget, learning rate, batch tokens and seed, from its name."""
    depth, flops, lr, batch, seed = SWEEP_POINT.fullmatch(name).groups()
    return {"depth": int(depth), "budget_flops": float(flops), "lr": float(lr), "batch_tokens": int(batch),
            "seed": int(seed)}


def sweep_settings(cfg, name):
    """The pretrain section as one point of the sweep trains: its depth, learning rate, batch and
    seed, as many whole steps as its FLOP budget buys at the tokenizer's vocabulary size, warm-up
    for a share of them, and one evaluation, at the end."""
    point, settings = sweep_point(name), dict(cfg["pretrain"])
    per_token = flops_per_token(**shape(f"d{point['depth']}"), vocab_size=padded_vocab(cfg["tokenizer"]["vocab_size"]),
                                seq_len=settings["seq_len"])
    steps = int(point["budget_flops"] // (per_token * point["batch_tokens"]))
    settings.update(preset=f"d{point['depth']}", lr=point["lr"], global_batch_tokens=point["batch_tokens"],
                    seed=point["seed"], max_steps=steps, eval_every=max(steps, 1),
                    warmup_steps=round(cfg["scaling"]["warmup_share"] * steps))
    return settings


def check_sweep(cfg):
    """Every point of the grid trains whole batches for a few steps at least."""
    world = (cfg["pretrain"]["gpus"] or cfg["pretrain"]["processes"]) * cfg["pretrain"]["nodes"]
    per_micro_step = cfg["pretrain"]["micro_batch"] * cfg["pretrain"]["seq_len"] * world
    for batch in cfg["scaling"]["batch_tokens"]:
        if batch % per_micro_step:
            raise ConfigError(f"scaling.batch_tokens: {batch} is not a multiple of pretrain.micro_batch x seq_len x "
                              f"processes (or gpus) x nodes = {per_micro_step}")
    for name in sweep_points(cfg["scaling"]):
        if sweep_settings(cfg, name)["max_steps"] < MIN_SWEEP_STEPS:
            raise ConfigError(f"scaling.flops: point {name} buys fewer than {MIN_SWEEP_STEPS} steps of its batch; "
                              "raise its budget or lower its depth or batch")


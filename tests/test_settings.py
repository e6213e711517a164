"""Each setting's one definition (config/schema.yaml, read by lib/settings.py) and what is held
equal to it: config.yaml, the stages' options, the README tables and a training run's identity."""
import argparse
import ast
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, copy_workflow, run_ok, snakemake
from workflow_scripts.data.convert import OPENCC_CONFIGS
from workflow_scripts.eval.multiple_choice import SCORINGS
from workflow_scripts.export.export_gguf import FILE_TYPES, WEIGHT_TYPES
from workflow_scripts.lib import settings
from workflow_scripts.lib.bpe_training import PRE_TOKENIZATIONS
from workflow_scripts.lib.model_shapes import PRESETS
from workflow_scripts.lib.workflow import settings_tables

SCHEMA = settings.schema()["properties"]
# A job's place among its rule's jobs, not a setting: one shard of N is one shard's output, alone or not.
JOB_COORDINATES = {"shard", "shards"}


def test_config_yaml_holds_each_setting_at_its_definitions_default():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(config) == set(SCHEMA)
    for section, keys in SCHEMA.items():
        assert {key: spec.get("default", "no default") for key, spec in keys["properties"].items()} == config[section]


def walk_definitions(node, key="(top level)"):
    """(dotted key, definition) of every setting, section, list entry and nested key of the schema."""
    for name, definition in node.get("properties", {}).items():
        yield f"{key}.{name}", definition
        resolved = settings.resolved(definition)
        yield from walk_definitions(resolved, f"{key}.{name}")
        for entry in [resolved.get("items", {}), *resolved.get("items", {}).get("oneOf", [])]:
            yield from walk_definitions(entry, f"{key}.{name}[]")


def test_every_key_of_the_schema_is_described():
    described = {key: "description" in settings.resolved(d) for key, d in walk_definitions(settings.schema())}
    assert len(described) > 200 and [key for key, has in described.items() if not has] == []


def test_the_config_readme_tables_are_the_definitions():
    """Every table of config/README.md is what settings_tables writes from the schema, and every
    section and list of entries has one."""
    page = (REPO / "config" / "README.md").read_text()
    assert settings_tables.rewritten(page) == page
    tabled = {marker.group(1) for marker in map(settings_tables.MARKER.match, page.splitlines()) if marker}
    assert tabled == set(SCHEMA) | {"corpora.extra", "sft.data"}


def test_a_stages_help_explains_every_option_from_its_definition():
    help_text = subprocess.run([sys.executable, "-m", "workflow_scripts.training.sft", "--help"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    words = " ".join(help_text.split())
    assert "Peak learning rate. Models of real size" in words and "(config.yaml sft.replay_share)" in words


def stage_commands(workdir, *options):
    """(stage, its words) of each job `snakemake -n all` plans, the launcher's stage included."""
    out = snakemake(workdir, "-n", "-p", "--forceall", "all", *options).stdout
    for line in out.splitlines():
        command = re.match(r".*\s-m workflow_scripts\.(\w+\.\w+) (.*)$", line)
        if command and command.group(1) != "training.launch":
            yield command.group(1), shlex.split(re.sub(r"\$\(dirname ([^)]*)\)", r"\1", command.group(2)))


def stage_parser(stage):
    parser = argparse.ArgumentParser()
    importlib.import_module(f"workflow_scripts.{stage}").add_arguments(parser)
    parser.add_argument("--log")
    return parser


def test_a_stage_run_alone_defaults_to_what_its_rule_passes(tmp_path):
    """Every setting a rule passes its stage, on the demo config (with DPO and continued
    pretraining switched on), equals the stage's own default: run alone, as its docstring shows,
    a stage gives the rule's result."""
    workdir = copy_workflow(tmp_path)
    (workdir / "existing_base").mkdir()
    (workdir / "existing_base" / "config.json").write_text("{}")
    (workdir / "on.yaml").write_text("dpo: {enabled: true}\ncontinued_pretrain: {enabled: true, base: existing_base}\n")
    setting_names = {key for keys in SCHEMA.values() for key in keys["properties"]} - JOB_COORDINATES
    checked, differing = set(), []
    for stage, words in stage_commands(workdir, "--configfile", "config.yaml", "on.yaml"):
        parser = stage_parser(stage)
        given = parser.parse_args(words)
        for action in parser._actions:
            given_by_rule = set(action.option_strings) & set(words)
            # input files (a rule's inputs, required or lists of paths) are not settings
            if action.dest in setting_names and given_by_rule and not action.required and action.type is not Path:
                checked.add((stage, action.dest))
                if getattr(given, action.dest) != action.default:
                    differing.append((stage, action.dest, action.default, getattr(given, action.dest)))
    assert differing == [], "\n".join(map(str, differing))
    assert {("data.clean", "min_chars"), ("tokenizer.tokenizer", "vocab_size"), ("training.sft", "lr"),
            ("training.sft", "replay_share"), ("training.dpo", "max_len"), ("continued.continued_pretrain", "method"),
            ("continued.expand_vocab", "vocab_size"), ("eval.multiple_choice", "shots"),
            ("data.download", "source")} <= checked
    assert len(checked) > 100


@pytest.mark.slow
def test_clean_and_the_tokenizer_run_alone_give_their_rules_output(built, tmp_path):
    run_ok("data.clean", "--input", built / "results/convert/zhwiki-000.parquet", "--out", tmp_path / "clean.parquet",
           "--stats", tmp_path / "clean.json")
    assert pq.read_table(tmp_path / "clean.parquet").equals(pq.read_table(built / "results/clean/zhwiki-000.parquet"))
    run_ok("tokenizer.tokenizer", "--train", built / "results/corpus/train.parquet", "--validation",
           built / "results/corpus/validation.parquet", "--out", tmp_path / "tokenizer", "--report",
           tmp_path / "report.json")
    assert ((tmp_path / "tokenizer/tokenizer.json").read_text()
            == (built / "results/tokenizer/tokenizer.json").read_text())


def test_a_stage_option_refuses_a_value_out_of_its_definitions_range(capsys):
    parser = stage_parser("data.clean")
    with pytest.raises(SystemExit):
        parser.parse_args(["--input", "x", "--out", "y", "--stats", "z", "--min-han-fraction", "1.5"])
    assert "--min-han-fraction 1.5 is out of range" in capsys.readouterr().err


def test_the_run_identity_takes_every_setting_that_changes_results(monkeypatch):
    """A new setting enters the identity by its definition alone; eval_every and the checkpoint
    settings, which change no result, never do."""
    values = dict(settings.definitions("sft"))
    values["label_smoothing"] = {"type": "number", "minimum": 0, "default": 0.0}
    monkeypatch.setattr(settings, "definitions", lambda section: values)
    chosen = {key: spec["default"] for key, spec in values.items()}
    identity = settings.identity_settings(chosen, "sft")
    assert identity["label_smoothing"] == 0.0 and identity["lr"] == chosen["lr"]
    assert not {"eval_every", "checkpoint_every", "keep_checkpoints"} & set(identity)


def test_the_readmes_worked_example_adds_a_setting_everywhere_from_one_line(tmp_path):
    """README's "Where a new setting goes", done on a copy: one line in the schema (and the user's
    value in config.yaml) gives the stage's option and the rule's flag, and the check refuses a
    value out of range."""
    workdir = copy_workflow(tmp_path)
    schema = workdir / "config" / "schema.yaml"
    text = schema.read_text()
    text = text.replace("max_repeated_ngram_fraction]", "max_repeated_ngram_fraction, max_line_chars]", 1)
    text = text.replace("      max_repeated_ngram_fraction: {",
                        '      max_line_chars: {type: integer, minimum: 1, default: 5000, description: "Drop documents '
                        'with a longer line."}\n      max_repeated_ngram_fraction: {', 1)
    schema.write_text(text)
    config = workdir / "config.yaml"
    config.write_text(config.read_text().replace("  max_repeated_ngram_fraction: 0.3\n",
                                                 "  max_repeated_ngram_fraction: 0.3\n  max_line_chars: 5000\n"))
    help_text = subprocess.run([sys.executable, "-m", "workflow_scripts.data.clean", "--help"], cwd=workdir,
                               capture_output=True, text=True, check=True).stdout
    assert "--max-line-chars MAX_LINE_CHARS" in help_text
    assert "Drop documents with a longer line. (config.yaml clean.max_line_chars)" in " ".join(help_text.split())
    subprocess.run([sys.executable, "-m", "workflow_scripts.lib.workflow.settings_tables", "config/README.md"],
                   cwd=workdir, check=True)
    assert ("| `max_line_chars` | integer ≥ 1 | `5000` | Drop documents with a longer line. |"
            in (workdir / "config" / "README.md").read_text())
    planned = snakemake(workdir, "-n", "-p", "--forceall", "corpus").stdout
    assert "--max-line-chars 5000" in planned
    (workdir / "zero.yaml").write_text("clean: {max_line_chars: 0}\n")
    refused = snakemake(workdir, "-n", "corpus", "--configfile", "config.yaml", "zero.yaml", check=False)
    assert refused.returncode == 1 and "clean.max_line_chars" in refused.stderr + refused.stdout


def test_below_a_stages_run_no_function_takes_the_argparse_namespace():
    """A stage's run turns its options into typed settings (settings.typed) for everything it
    calls, in lib/ and in its own module (every module of workflow_scripts/)."""
    root = REPO / "workflow_scripts"
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "run":
                names = {arg.arg for arg in node.args.args + node.args.kwonlyargs}
                assert not names & {"args", "namespace"}, f"{path.name}: {node.name}"


def test_the_choices_the_code_knows_are_the_definitions_choices():
    """A stage's choices now come from the schema: the code's own tables must hold the same names."""
    assert list(PRE_TOKENIZATIONS) == settings.definitions("tokenizer")["pre_tokenization"]["enum"]
    preset = re.compile(settings.definitions("pretrain")["preset"]["pattern"])
    assert all(preset.search(name) for name in PRESETS) and not preset.search("d0") and not preset.search("1b")
    assert sorted(SCORINGS) == sorted(settings.definitions("eval")["scoring"]["items"]["enum"])
    assert list(FILE_TYPES) == list(WEIGHT_TYPES) == settings.definitions("export")["types"]["items"]["enum"]
    assert list(OPENCC_CONFIGS) == SCHEMA["corpora"]["properties"]["extra"]["items"]["properties"]["opencc_config"][
        "enum"]

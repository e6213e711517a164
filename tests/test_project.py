"""The project's own promises: reproducible demo data, documented config, pins kept in step, lint."""
import ast
import bz2
import json
import os
import random
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import opencc
import pytest
import yaml

from conftest import DEMO_DUMP, REPO, run_ok
from workflow_scripts.demo_data.make_demo_dump import World
from workflow_scripts.lib.workflow.code_fingerprint import module_file

# Every stage (a rule's command), the launcher and the serving tools
STAGES = sorted(f"{path.parent.name}.{path.stem}" for path in (REPO / "workflow_scripts").glob("*/*.py")
                if path.parent.name not in ("lib", "demo_data") and path.stem != "__init__")


def schema_keys(schema, prefix=""):
    for key, sub in schema.get("properties", {}).items():
        yield prefix + key
        yield from schema_keys(sub, prefix + key + ".")


@pytest.mark.parametrize("generator, folder", [("demo_data.make_demo_dump", "zhwiki"),
                                               ("demo_data.make_demo_sft", "sft"),
                                               ("demo_data.make_demo_eval", "eval"),
                                               ("demo_data.make_demo_dpo", "dpo"),
                                               ("demo_data.make_demo_grpo", "grpo"),
                                               ("demo_data.make_demo_corpora", "corpora")])
def test_demo_data_is_reproduced_byte_for_byte(tmp_path, generator, folder):
    run_ok(generator, tmp_path)
    demo = REPO / "demo" / folder
    committed = sorted(p.relative_to(demo) for p in demo.rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == committed
    for path in committed:
        assert (tmp_path / path).read_bytes() == (demo / path).read_bytes(), path


def test_every_config_key_is_documented_and_in_the_demo_config():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    documented = (REPO / "config" / "README.md").read_text()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for key in schema_keys(schema):
        section, _, name = key.partition(".")
        if name:
            assert f"| `{name}` |" in documented.split(f"## `{section}`")[1].split("\n## ")[0], key
            assert name in config[section], key
        else:
            assert f"## `{section}`" in documented, key


def pins(lines):
    return dict(re.fullmatch(r"\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;.*)?", line).groups() for line in lines
                if "==" in line)


def test_conda_envs_pin_what_pyproject_pins():
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    for env_file in (REPO / "envs").glob("*.yaml"):
        env = yaml.safe_load(env_file.read_text())
        pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
        env_pins = pins([line for pip in pip_lists for line in pip])
        assert env_pins, env_file
        for name, version in env_pins.items():
            assert project.get(name.lower()) == version, f"{env_file.name}: {name}=={version}"


# Import names whose pip distribution is named differently.
DISTRIBUTIONS = {"yaml": "pyyaml"}


def rule_envs_and_modules():
    """{env file: modules its rules run}, read from the rule files' conda: and shell: directives."""
    uses = {}
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text())[1:]:
            if "shell:" not in block:  # a stage's target (rules/stage_targets.smk) runs nothing itself
                continue
            env = re.search(r'conda:\s*"\.\./envs/(\w+\.yaml)"', block).group(1)
            uses.setdefault(env, set()).update(re.findall(r"workflow_scripts\.([\w.]+)", block))
    return uses


def third_party_imports(module, seen=None):
    """Top-level names of the non-stdlib modules a stage imports: anywhere in its own file, and at
    module level in the workflow_scripts modules it imports (their function-level imports only
    run when that function is used)."""
    own = seen is None
    seen = set() if seen is None else seen
    if module in seen:
        return set()
    seen.add(module)
    names = set()
    tree = ast.parse(module_file(module).read_text())
    for node in ast.walk(tree) if own else tree.body:
        imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in imported:
            if name.startswith("workflow_scripts."):
                names |= third_party_imports(name.removeprefix("workflow_scripts."), seen)
            elif name.split(".")[0] not in sys.stdlib_module_names:
                names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize("env, modules", sorted(rule_envs_and_modules().items()))
def test_each_conda_env_has_what_its_rules_import(env, modules):
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    installed = set(pins([line for d in spec["dependencies"] if isinstance(d, dict) for line in d["pip"]]))
    needed = {DISTRIBUTIONS.get(name, name) for module in modules for name in third_party_imports(module)}
    assert needed - {"workflow_scripts"} <= installed, f"{env} lacks {sorted(needed - installed)}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_a_cli(stage):
    assert f"python -m workflow_scripts.{stage}" in run_ok(stage, "--help").stdout


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_python_code_passes_ruff():
    """pyproject's [tool.ruff]: pycodestyle errors and warnings (120 columns) and pyflakes."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


DOCS = sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))


@pytest.mark.parametrize("document", ["README.md", "config/README.md", *DOCS])
def test_every_relative_link_is_a_file_git_tracks(document):
    """A fresh clone has only what git tracks: a link to an ignored file (benchmark results were
    once ignored by a `results/` pattern) would point nowhere there."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    folder = Path(document).parent
    links = re.findall(r"\]\(([^)#\s]+)\)", (REPO / document).read_text())
    relative = [link for link in links if "://" not in link]
    assert relative or document in DOCS
    for link in relative:
        target = os.path.normpath(folder / link)  # config/../benchmarks/x.md is benchmarks/x.md
        assert target in tracked, f"{document} links to {link}, which git does not track"


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert {page for page in DOCS if f"]({page})" not in readme} == set()


def chat_questions():
    """Every user turn, Alpaca instruction and input, and DPO prompt of the demo chat data."""
    chats = [json.loads(line) for line in (REPO / "demo/sft/demo_chat.jsonl").read_text(encoding="utf-8").splitlines()]
    alpaca = json.loads((REPO / "demo/sft/demo_alpaca.json").read_text(encoding="utf-8"))
    pairs = [json.loads(line) for line in (REPO / "demo/dpo/demo_pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    return ([m["content"] for c in chats for m in c["messages"] if m["role"] == "user"]
            + [r["instruction"] + r["input"] for r in alpaca]
            + [turn["value"] for p in pairs for turn in p["conversations"]])


def test_the_demo_evaluation_asks_nothing_the_demo_chat_data_answers():
    """Scores must measure what pretraining taught: no demo chat question (SFT or DPO) is about a
    city or person that a demo multiple-choice question, prompt or fact is about."""
    world = World(random.Random(20261101))
    names = [c["name"] for c in world.cities] + [p["name"] for p in world.people]
    lines = [line for path in (REPO / "demo/eval").rglob("*.*") if path.suffix != ".jsonl"
             for line in path.read_text(encoding="utf-8").splitlines()]
    facts = [json.loads(line) for line in (REPO / "demo/eval/facts.jsonl").read_text(encoding="utf-8").splitlines()]

    def subject(text):  # 高超国, not 高超
        return max((name for name in names if name in text), key=len, default=None)
    # a fact's candidates name other cities and people; only its subject is asked about
    asked = {subject(line) for line in lines} | {fact["subject"] for fact in facts if "subject" in fact}
    asked -= {None}
    questions = chat_questions()
    assert len(asked) >= 80 and len(questions) > 800
    subjects = [subject(q) for q in questions]
    assert not set(subjects) & asked


def test_the_demo_dump_states_each_probed_fact_in_its_corpus_phrasing_and_never_in_its_held_out_one():
    """The probe's held-out phrasing must be one pretraining never read: the words between its subject
    and object appear nowhere in the demo dump's text (simplified, without the links, bold and
    language templates that extraction drops)."""
    wikitext = opencc.OpenCC("t2s").convert(bz2.decompress(DEMO_DUMP.read_bytes()).decode())
    dump = re.sub(r"\[\[|\]\]|'''|（\{\{lang-[^}]*\}\}）", "", wikitext)
    lines = [json.loads(line) for line in (REPO / "demo/eval/facts.jsonl").read_text(encoding="utf-8").splitlines()]
    templates = {line["relation"]: line["templates"] for line in lines if "templates" in line}
    facts = [line for line in lines if "subject" in line]
    assert len(facts) == 240
    for fact in facts:
        assert templates[fact["relation"]]["corpus"].format(subject=fact["subject"], object=fact["object"]) in dump
    for relation in templates.values():
        words = relation["held_out"].split("{subject}")[1].split("{object}")[0]
        assert len(words) >= 3 and words not in dump


# Preset files whose revision or digest could not be looked up where the presets were written (no
# route to the Hugging Face Hub): each preset says so beside its url. Pinning one fails this test
# until it leaves the list, so the list only shrinks.
NOT_PINNED_HERE = {
    "alpaca_gpt4_data_zh.json": "neither its commit nor its sha256 could be looked up",
    "Belle_open_source_0.5M.json": "neither its commit nor its sha256 could be looked up",
    "cmmlu_v1_0_1.zip": "neither its commit nor its sha256 could be looked up",
    "ceval-exam.zip": "its commit is pinned; its sha256 could not be computed",
}


def preset_data_entries():
    for path in sorted((REPO / "config" / "presets").glob("*.yaml")):
        preset = yaml.safe_load(path.read_text()) or {}
        entries = [entry for section, key in (("sft", "data"), ("dpo", "data"), ("eval", "multiple_choice"))
                   for entry in preset.get(section, {}).get(key, [])]
        yield from ((path, entry) for entry in entries if isinstance(entry, dict) and "url" in entry)


def test_preset_urls_name_a_commit_and_a_sha256_or_say_why_not():
    entries = list(preset_data_entries())
    assert len(entries) == 4
    for path, entry in entries:
        name = entry["url"].rsplit("/", 1)[1]
        pinned = bool(re.search(r"/resolve/[0-9a-f]{40}/", entry["url"]) and entry.get("sha256"))
        assert pinned != (name in NOT_PINNED_HERE), f"{path.name}: {entry['url']}"
        if not pinned:
            assert f"not pinned: {name}" in path.read_text(), f"{path.name} does not say that {name} is not pinned"

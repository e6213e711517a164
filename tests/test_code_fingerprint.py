"""Code fingerprints: the definitions a stage really reaches, and only changes to what runs count."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEMO_DUMP, DEMO_INDEX, REPO
from workflow_scripts.lib.code_fingerprint import (ON_IMPORT, PACKAGE_CODE, ROOT, WHOLE, Package, bound_names,
                                                    module_file)

STAGES = sorted(path.stem for path in ROOT.glob("*.py") if 'stage_cli("' in path.read_text()) + ["launch"]
MODULES = sorted(".".join(path.relative_to(ROOT).with_suffix("").parts) for path in ROOT.rglob("*.py")
                 if path.stem != "__init__")


def source(module):
    return module_file(module).read_text(encoding="utf-8")


def changed_definition(module, name):
    """The module's source with what runs in one definition changed (or, for ON_IMPORT, a statement
    added that runs on import)."""
    tree = ast.parse(source(module))
    if name == ON_IMPORT:
        tree.body.append(ast.Expr(ast.Constant(None)))
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and statement.name == name:
            statement.body.append(ast.Expr(ast.Constant(0)))
        elif isinstance(statement, (ast.Import, ast.ImportFrom)) and name in bound(statement):
            statement.names.append(ast.alias("sys"))
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and name in bound(statement):
            statement.value = ast.Tuple([statement.value, ast.Constant(1)], ast.Load())
    return ast.unparse(ast.fix_missing_locations(tree))


def bound(statement):
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return [(alias.asname or alias.name).split(".")[0] for alias in statement.names]
    return bound_names(statement)


def test_a_stage_reaches_the_modules_it_imports_transitively():
    def modules(stage):
        return {module for module, _ in PACKAGE_CODE.reached(stage) if not module.endswith("__init__")}
    # multiple_choice loads its model through lib.models, which needs no training code: a change to
    # the training loop does not rerun evaluations. Training stages reach the loop's modules through it.
    assert modules("multiple_choice") == {"multiple_choice", "lib.stage_cli", "lib.atomic_files", "lib.summary_tables",
                                          "lib.models", "lib.exam_subjects", "lib.user_files", "lib.settings"}
    assert modules("download") == {"download", "lib.stage_cli", "lib.atomic_files", "lib.http_fetch", "lib.settings"}
    assert "lib.documents" not in modules("download") | modules("multiple_choice")
    assert {"lib.training", "lib.engines", "lib.checkpoints", "lib.metrics", "lib.plots", "lib.token_data",
            "lib.token_training"} < modules("pretrain")
    assert not any(name == WHOLE for stage in STAGES for _, name in PACKAGE_CODE.reached(stage))


def test_every_definition_a_stage_reaches_changes_its_fingerprint():
    """Each definition each stage reaches, changed one at a time (in memory), changes the
    fingerprint of every stage that reaches it."""
    reached = {stage: PACKAGE_CODE.reached(stage) for stage in STAGES}
    before = {stage: PACKAGE_CODE.fingerprint(stage) for stage in STAGES}
    items = set().union(*reached.values())
    unchanged = []
    for module, name in sorted(items):
        edited = Package(sources={module: changed_definition(module, name)})
        unchanged += [(stage, module, name) for stage in STAGES
                      if (module, name) in reached[stage] and edited.fingerprint(stage) == before[stage]]
    assert len(items) > 600 and unchanged == []


def test_an_unused_definition_anywhere_changes_no_fingerprint():
    """A function and a constant nobody uses, added to every module at once, rerun nothing."""
    unused = "\n\ndef unused_helper(text):\n    return text.strip()\n\n\nUNUSED_LIMIT = 3\n"
    edited = Package(sources={module: source(module) + unused for module in MODULES})
    assert {stage: edited.fingerprint(stage) for stage in STAGES} == {
        stage: PACKAGE_CODE.fingerprint(stage) for stage in STAGES}


def test_a_function_only_evaluation_reaches_changes_evaluation_never_training():
    """lib.models is shared by sft (merging LoRA, the model's fingerprint) and the evaluations; only
    these load a model for inference through load_causal_lm."""
    edited = Package(sources={"lib.models": changed_definition("lib.models", "load_causal_lm")})
    changed = {stage for stage in STAGES if edited.fingerprint(stage) != PACKAGE_CODE.fingerprint(stage)}
    assert {"multiple_choice", "bits_per_byte", "samples"} <= changed
    assert not changed & {"pretrain", "sft", "continued_pretrain", "dpo", "tokenizer", "launch"}
    assert "lib.models" in {module for module, _ in PACKAGE_CODE.reached("sft")}


@pytest.mark.parametrize("edit", [
    lambda s: s.replace('"""A problem with the user\'s input', '"""A problem (reworded) with the user\'s input'),
    lambda s: s.replace("class StageError(Exception):", "# a comment\n\n\nclass StageError(Exception):  # why"),
    lambda s: s.replace('log = logging.getLogger("zhwiki_llm")', 'log = logging.getLogger(\n    "zhwiki_llm"\n)'),
], ids=["docstring", "comments-and-blank-lines", "formatting"])
def test_comments_docstrings_and_formatting_count_for_nothing(edit):
    edited_source = edit(source("lib.stage_cli"))
    assert edited_source != source("lib.stage_cli")
    assert Package(sources={"lib.stage_cli": edited_source}).fingerprint("clean") == PACKAGE_CODE.fingerprint("clean")


TRACE = """
import json, runpy, sys, threading
calls = set()
def record(frame, event, arg):
    if event == "call":
        calls.add((frame.f_code.co_filename, frame.f_code.co_qualname))
stage, out = sys.argv[1], sys.argv[2]
sys.argv = [stage, *sys.argv[3:]]
sys.setprofile(record)
threading.setprofile(record)
try:
    runpy.run_module(f"workflow_scripts.{stage}", run_name="__main__", alter_sys=True)
finally:
    sys.setprofile(None)
    json.dump(sorted(calls), open(out, "w"))
"""


def traced_items(stage, tmp_path, *args):
    """The items (module, top-level definition) of the workflow_scripts functions a stage really
    called, run under a profiler."""
    out = tmp_path / f"{stage}-calls.json"
    subprocess.run([sys.executable, "-c", TRACE, stage, out, *map(str, args)], cwd=REPO, check=True,
                   capture_output=True)
    items = set()
    for filename, qualname in json.loads(out.read_text()):
        if filename.startswith(str(ROOT)):
            module = ".".join(Path(filename).relative_to(ROOT).with_suffix("").parts)
            top = qualname.split(".")[0]
            items.add((module, ON_IMPORT if top.startswith("<") else top))
    return items


def test_what_a_stage_really_runs_is_within_what_its_fingerprint_reaches(tmp_path):
    """The static reach, checked against the functions extract, convert and clean call on the demo."""
    extract, convert = tmp_path / "extract.parquet", tmp_path / "convert.parquet"
    runs = {"extract": ["--dump", DEMO_DUMP, "--index", DEMO_INDEX, "--shard", 0, "--shards", 8, "--out", extract,
                        "--stats", tmp_path / "e.json"],
            "convert": ["--input", extract, "--out", convert, "--stats", tmp_path / "c.json"],
            "clean": ["--input", convert, "--out", tmp_path / "clean.parquet", "--stats", tmp_path / "k.json"]}
    for stage, args in runs.items():
        called = traced_items(stage, tmp_path, *args)
        assert len(called) > 5
        assert called - PACKAGE_CODE.reached(stage) == set(), stage


def test_folders_show_what_each_module_is():
    """Stages (a CLI each) at the top of workflow_scripts/, libraries in lib/, demo-data generators in
    demo_data/; no stage imports another stage, and libraries import only libraries."""
    def modules(folder):
        return {path.stem: path.read_text(encoding="utf-8") for path in (ROOT / folder).glob("*.py")
                if path.stem != "__init__"}
    top, libraries, generators = modules("."), modules("lib"), modules("demo_data")
    stages = {name for name, text in top.items() if 'stage_cli("' in text}
    assert {"extract", "pretrain", "sft", "chat_data", "fetch_data", "run_summary"} <= stages
    assert set(top) - stages == {"launch"}  # the multi-process launcher (the terminal chat is a CLI like them)
    assert not any('stage_cli("' in text for text in libraries.values())
    assert set(generators) == {f"make_demo_{name}" for name in ("dump", "sft", "eval", "dpo", "corpora")}
    crossing = {stage: sorted(PACKAGE_CODE.imported_modules(stage) & stages - {stage}) for stage in stages}
    assert {stage: others for stage, others in crossing.items() if others} == {}
    assert all(imported.startswith("lib.") for name in libraries
               for imported in PACKAGE_CODE.imported_modules(f"lib.{name}"))


def test_benchmarks_use_libraries_never_stages():
    """A benchmark measures what the stages share from lib/ (a stage's own code stays its own)."""
    stages = {path.stem for path in (REPO / "workflow_scripts").glob("*.py") if 'stage_cli("' in path.read_text()}
    for path in (REPO / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        imported = set(re.findall(r"(?:from|import) workflow_scripts(?:\.| import )(\w+)", text))
        assert not imported & stages, f"{path.name} imports the stages {sorted(imported & stages)}"

"""Code fingerprints: the definitions a stage really reaches, and only changes to what runs count."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DEMO_DUMP, DEMO_INDEX, REPO
from workflow_scripts.lib.workflow.code_fingerprint import (ON_IMPORT, PACKAGE_CODE, ROOT, WHOLE, Package, bound_names,
                                                            module_file)

# The phases of rules/*.smk, each a folder of stage modules (one per rule), and the serving tools
PHASES = ("data", "tokenizer", "fetch", "training", "continued", "eval", "export", "scaling")
STAGES = sorted(f"{path.parent.name}.{path.stem}" for phase in PHASES for path in (ROOT / phase).glob("*.py")
                if 'stage_cli("' in path.read_text()) + ["training.launch"]
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
    # multiple_choice loads its model through lib.training.models, which needs no training loop: a change to
    # the training loop does not rerun evaluations. Training stages reach the loop's modules through it.
    assert modules("eval.multiple_choice") == {
        "eval.multiple_choice", "lib.stage_cli", "lib.atomic_files", "lib.summary_tables", "lib.training.models",
        "lib.exam_subjects", "lib.user_files", "lib.settings"}
    assert modules("data.download") == {"data.download", "lib.stage_cli", "lib.atomic_files", "lib.http_fetch",
                                        "lib.settings"}
    assert "lib.corpus.documents" not in modules("data.download") | modules("eval.multiple_choice")
    assert {"lib.training." + name for name in ("training", "engines", "checkpoints", "metrics", "token_data",
                                                "token_training")} | {"lib.plots"} < modules("training.pretrain")
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
    """lib.training.models is shared by sft (merging LoRA, the model's fingerprint) and the evaluations; only
    these load a model for inference through load_causal_lm."""
    models = "lib.training.models"
    edited = Package(sources={models: changed_definition(models, "load_causal_lm")})
    changed = {stage for stage in STAGES if edited.fingerprint(stage) != PACKAGE_CODE.fingerprint(stage)}
    assert {"eval.multiple_choice", "eval.bits_per_byte", "eval.samples"} <= changed
    assert not changed & {"training.pretrain", "training.sft", "continued.continued_pretrain", "training.dpo",
                          "tokenizer.tokenizer", "training.launch"}
    assert models in {module for module, _ in PACKAGE_CODE.reached("training.sft")}


@pytest.mark.parametrize("edit", [
    lambda s: s.replace('"""A problem with the user\'s input', '"""A problem (reworded) with the user\'s input'),
    lambda s: s.replace("class StageError(Exception):", "# a comment\n\n\nclass StageError(Exception):  # why"),
    lambda s: s.replace('log = logging.getLogger("zhwiki_llm")', 'log = logging.getLogger(\n    "zhwiki_llm"\n)'),
], ids=["docstring", "comments-and-blank-lines", "formatting"])
def test_comments_docstrings_and_formatting_count_for_nothing(edit):
    edited_source = edit(source("lib.stage_cli"))
    assert edited_source != source("lib.stage_cli")
    edited = Package(sources={"lib.stage_cli": edited_source})
    assert edited.fingerprint("data.clean") == PACKAGE_CODE.fingerprint("data.clean")


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
    runs = {"data.extract": ["--dump", DEMO_DUMP, "--index", DEMO_INDEX, "--shard", 0, "--shards", 8, "--out",
                             extract, "--stats", tmp_path / "e.json"],
            "data.convert": ["--input", extract, "--out", convert, "--stats", tmp_path / "c.json"],
            "data.clean": ["--input", convert, "--out", tmp_path / "clean.parquet", "--stats", tmp_path / "k.json"]}
    for stage, args in runs.items():
        called = traced_items(stage, tmp_path, *args)
        assert len(called) > 5
        assert called - PACKAGE_CODE.reached(stage) == set(), stage


def modules_in(folder):
    """{module name under workflow_scripts: its text} of a folder's modules (not its subfolders')."""
    return {".".join(path.relative_to(ROOT).with_suffix("").parts): path.read_text(encoding="utf-8")
            for path in (ROOT / folder).glob("*.py") if path.stem != "__init__"}


def test_each_stage_sits_in_the_folder_named_like_its_rules_file():
    """A rule in rules/data.smk runs a module of workflow_scripts/data/, and every module there is
    the command of a rule in that file (training/launch.py starts the training rules' commands)."""
    run_by = {}
    for rules_file in (REPO / "rules").glob("*.smk"):
        for module in re.findall(r"-m workflow_scripts\.([\w.]+)", rules_file.read_text(encoding="utf-8")):
            run_by.setdefault(module, set()).add(rules_file.stem)
    assert {module: files for module, files in run_by.items() if files != {module.split(".")[0]}} == {}
    assert set(run_by) | {"training.launch"} == set(STAGES)
    assert all(path.stem == "__init__" for path in ROOT.glob("*.py"))  # nothing loose at the top


def test_libraries_are_in_wings_and_no_import_climbs_back_up():
    """lib/ holds the base every wing may use and a few wings by concern; a stage imports libraries
    only, a library never imports a stage, the base never imports a wing, a wing no other wing."""
    wings = {path.name for path in (ROOT / "lib").iterdir() if (path / "__init__.py").is_file()}
    assert wings == {"workflow", "corpus", "training", "serving"}
    base = modules_in("lib")
    assert len(base) <= 12 and all(len(modules_in(f"lib/{wing}")) <= 12 for wing in wings)
    tools = {**modules_in("serving"), **modules_in("demo_data")}
    assert set(modules_in("serving")) == {"serving.serve", "serving.chat"}
    for module in [*STAGES, *tools]:
        others = {imported for imported in PACKAGE_CODE.imported_modules(module) if not imported.startswith("lib.")}
        assert others <= ({"demo_data.make_demo_dump", "demo_data.make_demo_sft", "demo_data.make_demo_eval"}
                          if "demo_data" in module else set())
    for module in base:
        assert all(imported in base for imported in PACKAGE_CODE.imported_modules(module)), module
    for wing in wings:
        for module in modules_in(f"lib/{wing}"):
            allowed = set(base) | set(modules_in(f"lib/{wing}"))
            assert PACKAGE_CODE.imported_modules(module) <= allowed, module


def test_benchmarks_use_libraries_never_stages():
    """A benchmark measures what the stages share from lib/ (a stage's own code stays its own)."""
    for path in (REPO / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        imported = set(re.findall(r"(?:from|import) workflow_scripts\.([\w.]+)", text))
        assert all(module.startswith("lib.") for module in imported), f"{path.name} imports {sorted(imported)}"

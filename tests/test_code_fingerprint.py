"""Code fingerprints: the modules a stage really imports, and only changes to what runs count."""
import importlib.util
import re
import shutil

import pytest

from conftest import REPO


@pytest.fixture
def package(tmp_path):
    """A copy of workflow_scripts/ with its own code_fingerprint module reading that copy."""
    copy = tmp_path / "workflow_scripts"
    shutil.copytree(REPO / "workflow_scripts", copy, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("copied_fingerprint", copy / "lib" / "code_fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return copy, module


def test_a_stage_covers_what_it_imports_transitively(package):
    _, fingerprint = package
    # multiple_choice loads its model through lib.models, which needs no training code: a change to
    # the training loop does not rerun evaluations. Training stages reach the loop's modules through it.
    assert fingerprint.closure("multiple_choice") == {"multiple_choice", "lib.stage_cli", "lib.atomic_files",
                                                      "lib.summary_tables", "lib.models", "lib.exam_subjects",
                                                      "lib.user_files"}
    assert fingerprint.closure("chat_data") == {"chat_data", "lib.stage_cli", "lib.atomic_files", "lib.loss_labels",
                                                "lib.sft_data", "lib.user_files"}
    assert fingerprint.closure("download") == {"download", "lib.stage_cli", "lib.atomic_files", "lib.http_fetch"}
    # lib/common.py was one module for documents, atomic writes, the CLI and JSON: split by concern,
    # a change to how documents are read no longer reruns the stages that read none.
    assert "lib.documents" not in fingerprint.closure("download") | fingerprint.closure("multiple_choice")
    assert {"lib.training", "lib.engines", "lib.checkpoints", "lib.metrics", "lib.plots", "lib.token_data",
            "lib.token_training"} < fingerprint.closure("pretrain")


@pytest.mark.parametrize("edit", [
    lambda s: s.replace('"""A problem with the user\'s input', '"""A problem (reworded) with the user\'s input'),
    lambda s: s.replace("class StageError(Exception):", "# a comment\n\n\nclass StageError(Exception):  # why"),
    lambda s: s.replace('log = logging.getLogger("zhwiki_llm")', 'log = logging.getLogger(\n    "zhwiki_llm"\n)'),
], ids=["docstring", "comments-and-blank-lines", "formatting"])
def test_comments_docstrings_and_formatting_count_for_nothing(package, edit):
    copy, fingerprint = package
    before = fingerprint.code_fingerprint("clean")
    stage_cli = copy / "lib" / "stage_cli.py"
    stage_cli.write_text(edit(stage_cli.read_text()))
    assert stage_cli.read_text() != (REPO / "workflow_scripts/lib/stage_cli.py").read_text()
    fingerprint.module_code.cache_clear()
    assert fingerprint.code_fingerprint("clean") == before


def test_a_change_to_what_runs_changes_the_stages_that_import_it(package):
    copy, fingerprint = package
    before = {stage: fingerprint.code_fingerprint(stage) for stage in ("multiple_choice", "extract", "sft")}
    models = copy / "lib" / "models.py"
    returned = "    return model, tokenizer"
    models.write_text(models.read_text().replace(returned, "    model.train(False)\n" + returned))
    fingerprint.module_code.cache_clear()
    after = {stage: fingerprint.code_fingerprint(stage) for stage in before}
    assert after["multiple_choice"] != before["multiple_choice"] and after["sft"] != before["sft"]
    assert after["extract"] == before["extract"]


def test_folders_show_what_each_module_is():
    """Stages (a CLI each) at the top of workflow_scripts/, libraries in lib/, demo-data generators in
    demo_data/; no stage imports another stage, and libraries import only libraries."""
    from workflow_scripts.lib.code_fingerprint import ROOT, module_code

    def modules(folder):
        return {path.stem: path.read_text(encoding="utf-8") for path in (ROOT / folder).glob("*.py")
                if path.stem != "__init__"}
    top, libraries, generators = modules("."), modules("lib"), modules("demo_data")
    stages = {name for name, text in top.items() if 'stage_cli("' in text}
    assert {"extract", "pretrain", "sft", "chat_data", "fetch_data", "run_summary"} <= stages
    assert set(top) - stages == {"launch"}  # the multi-process launcher (the terminal chat is a CLI like them)
    assert not any('stage_cli("' in text for text in libraries.values())
    assert set(generators) == {f"make_demo_{name}" for name in ("dump", "sft", "eval", "dpo", "corpora")}
    crossing = {stage: sorted(module_code(stage)[0] & stages - {stage}) for stage in stages}
    assert {stage: others for stage, others in crossing.items() if others} == {}
    assert all(imported.startswith("lib.") for name in libraries for imported in module_code(f"lib.{name}")[0])


def test_benchmarks_use_libraries_never_stages():
    """A benchmark measures what the stages share from lib/ (a stage's own code stays its own)."""
    stages = {path.stem for path in (REPO / "workflow_scripts").glob("*.py") if 'stage_cli("' in path.read_text()}
    for path in (REPO / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        imported = set(re.findall(r"(?:from|import) workflow_scripts(?:\.| import )(\w+)", text))
        assert not imported & stages, f"{path.name} imports the stages {sorted(imported & stages)}"

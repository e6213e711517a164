"""Code fingerprints: the modules a stage really imports, and only changes to what runs count."""
import importlib.util
import shutil

import pytest

from conftest import REPO


@pytest.fixture
def package(tmp_path):
    """A copy of workflow_scripts/ with its own code_fingerprint module reading that copy."""
    copy = tmp_path / "workflow_scripts"
    shutil.copytree(REPO / "workflow_scripts", copy, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("copied_fingerprint", copy / "code_fingerprint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return copy, module


def test_a_stage_covers_what_it_imports_transitively(package):
    _, fingerprint = package
    # multiple_choice loads its model through training.load_causal_lm; training draws with plots.
    assert fingerprint.closure("multiple_choice") == {"multiple_choice", "common", "training", "plots"}
    assert fingerprint.closure("chat_data") == {"chat_data", "common", "sft_data"}
    assert fingerprint.closure("download") == {"download", "common", "http_fetch"}


@pytest.mark.parametrize("edit", [
    lambda s: s.replace('"""A problem with the user\'s input', '"""A problem (reworded) with the user\'s input'),
    lambda s: s.replace("class StageError(Exception):", "# a comment\n\n\nclass StageError(Exception):  # why"),
    lambda s: s.replace("IGNORE_INDEX = -100", "IGNORE_INDEX = (\n    -100\n)"),
], ids=["docstring", "comments-and-blank-lines", "formatting"])
def test_comments_docstrings_and_formatting_count_for_nothing(package, edit):
    copy, fingerprint = package
    before = fingerprint.code_fingerprint("clean")
    common = copy / "common.py"
    common.write_text(edit(common.read_text()))
    assert common.read_text() != (REPO / "workflow_scripts/common.py").read_text()
    fingerprint.module_code.cache_clear()
    assert fingerprint.code_fingerprint("clean") == before


def test_a_change_to_what_runs_changes_the_stages_that_import_it(package):
    copy, fingerprint = package
    before = {stage: fingerprint.code_fingerprint(stage) for stage in ("multiple_choice", "extract", "sft")}
    training = copy / "training.py"
    returned = "    return model, tokenizer"
    training.write_text(training.read_text().replace(returned, "    model.train(False)\n" + returned))
    fingerprint.module_code.cache_clear()
    after = {stage: fingerprint.code_fingerprint(stage) for stage in before}
    assert after["multiple_choice"] != before["multiple_choice"] and after["sft"] != before["sft"]
    assert after["extract"] == before["extract"]


def test_no_stage_imports_another_stage():
    """What two stages share lives in a library module, so a stage's code is its own and the libraries'."""
    from workflow_scripts.code_fingerprint import ROOT, module_code
    stages = {path.stem for path in ROOT.glob("*.py") if 'stage_cli("' in path.read_text(encoding="utf-8")}
    assert {"extract", "pretrain", "sft", "chat_data", "fetch_data", "run_summary"} <= stages
    crossing = {stage: sorted(module_code(stage)[0] & stages - {stage}) for stage in stages}
    assert {stage: others for stage, others in crossing.items() if others} == {}

"""The project's own promises: reproducible demo data, documented config, pins kept in step, lint."""
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import REPO, run_ok

STAGES = ["download", "extract", "convert", "clean", "minhash", "dedup", "split", "corpus_summary", "tokenizer",
          "tokens", "tokens_index", "pretrain", "sft", "chat", "multiple_choice"]


def schema_keys(schema, prefix=""):
    for key, sub in schema.get("properties", {}).items():
        yield prefix + key
        yield from schema_keys(sub, prefix + key + ".")


@pytest.mark.parametrize("generator, folder", [("make_demo_dump", "zhwiki"), ("make_demo_sft", "sft"),
                                               ("make_demo_eval", "eval")])
def test_demo_data_is_reproduced_byte_for_byte(tmp_path, generator, folder):
    run_ok(generator, tmp_path)
    committed = sorted(p.relative_to(REPO / "demo" / folder) for p in (REPO / "demo" / folder).rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == committed
    for path in committed:
        assert (tmp_path / path).read_bytes() == (REPO / "demo" / folder / path).read_bytes(), path


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
    return dict(re.fullmatch(r"\s*-?\s*([A-Za-z0-9_.\-]+)==(\S+)\s*", line).groups() for line in lines
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


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_a_cli(stage):
    assert f"python -m workflow_scripts.{stage}" in run_ok(stage, "--help").stdout


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr

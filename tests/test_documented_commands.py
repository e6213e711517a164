"""Every `snakemake` command the docs show, dry-run exactly as typed: README.md, config/README.md,
docs/, the Snakefile's header and the comments of config/presets and profiles. A command with `…`
is a fragment of prose and is exempt; `--report` needs a finished run and is run as typed by
test_workflow.py's report test."""
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, copy_workflow

MARKDOWN = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMENTED = [REPO / "Snakefile", *sorted((REPO / "config" / "presets").glob("*.yaml")),
             *sorted((REPO / "profiles").glob("*/config.yaml")), *sorted((REPO / "profiles").glob("*/*.example.yaml"))]
# Files a command names that the user brings: a second config file, the cluster's (the example the
# profile ships, as its header says to copy it), an existing model copied
# aside as the continued preset's header says (`cp -r results/base_model existing_base`), and the
# preset budget_preset writes (docs/scaling.md).
USER_FILES = {"mine.yaml": "sft:\n  lr: 0.001\n",
              "mycluster.yaml": (REPO / "profiles/slurm/mycluster.example.yaml").read_text(),
              "existing_base/config.json": '{"model_type": "llama", "max_position_embeddings": 256}\n',
              "results/scaling/budget.yaml": "pretrain:\n  preset: d4\n  lr: 0.002\n"}


def joined_lines(text, comment):
    """Lines with a trailing backslash joined to the next; comment markers (#) dropped."""
    lines = [line.strip().removeprefix("#").strip() if comment else line for line in text.splitlines()]
    return re.sub(r"\\\n\s*(#\s*)?", " ", "\n".join(lines)).splitlines()


def commands_in(path):
    found = []
    comment = path.suffix != ".md"
    for line in joined_lines(path.read_text(encoding="utf-8"), comment):
        pieces = re.findall(r"`(snakemake [^`]+)`", line) or ([line.strip()] if comment or line.startswith("    ")
                                                                else [])
        for piece in pieces:
            for part in re.split(r"&&|;", piece):
                part = re.sub(r"\s+#.*$", "", part.strip())
                if part.startswith("snakemake ") and "…" not in part and "--report" not in part:
                    found.append(part)
    return found


def documented_commands():
    """{command: the files that show it}."""
    commands = {}
    for path in MARKDOWN + COMMENTED:
        for command in commands_in(path):
            commands.setdefault(" ".join(command.split()), []).append(str(path.relative_to(REPO)))
    return dict(sorted(commands.items()))


DOCUMENTED = documented_commands()


def test_the_docs_show_commands():
    assert len(DOCUMENTED) > 20
    assert "README.md" in DOCUMENTED["snakemake --cores all all"]
    assert "config/presets/gpu-0.1b.yaml" in DOCUMENTED[
        "snakemake --cores all base_model --resources gpu=8 --configfile config.yaml config/presets/zhwiki.yaml "
        "config/presets/gpu-0.1b.yaml"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("docs"))
    for name, text in USER_FILES.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text)
    return workdir


@pytest.mark.parametrize("command", DOCUMENTED)
def test_a_documented_command_dry_runs_as_typed(workdir, command):
    words = shlex.split(command)
    where = f"{', '.join(DOCUMENTED[command])}: {command}"
    assert {"--cores", "-c", "--profile"} & set(words), f"{where}: says neither --cores nor --profile"
    result = subprocess.run([sys.executable, "-m", *words, "--dry-run"], cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, f"{where}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"


def readme_stage_targets():
    """The targets README's stage table names (its second column, without the parenthesised job rules)."""
    rows = [line.split(" | ")[1] for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and " | `" in line and ".py`" in line]
    return sorted({name for cell in rows for name in re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cell))})


def test_every_stage_of_the_readme_table_is_a_target(workdir):
    targets = readme_stage_targets()
    assert {"extract", "clean", "minhash", "tokens", "chat_data", "multiple_choice", "samples"} <= set(targets)
    continued = {"expand_vocab", "continued_model"}  # they need the continued preset, as its header says
    for names, options in ((set(targets) - continued, []),
                           (continued, ["--configfile", "config.yaml", "config/presets/continued.yaml"])):
        result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", *names, *options],
                                cwd=workdir, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

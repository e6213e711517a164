"""Preference data for DPO: both layouts of the real sets, and clear errors for bad records."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA
from workflow_scripts.lib.stage_cli import StageError
from workflow_scripts.training.dpo import read_pairs

DPO_DATA = SHARED_DATA / "dpo"


def test_real_sets_in_both_layouts_are_read():
    pairs, counts = read_pairs([DPO_DATA / "dpo_zh_500.jsonl", DPO_DATA / "dpo_zh_demo.json"], skip_bad=False)
    assert [c["pairs"] for c in counts.values()] == [500, 300] and len(pairs) == 800
    first = json.loads((DPO_DATA / "dpo_zh_500.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert pairs[0]["prompt"] == [{"role": "user", "content": first["conversations"][0]["value"]}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": first["chosen"]}]
    second_layout = json.loads((DPO_DATA / "dpo_zh_demo.json").read_text(encoding="utf-8"))[0]
    assert pairs[500]["rejected"][0]["content"] == second_layout["rejected"]["value"]
    assert all(p["prompt"][-1]["role"] == "user" for p in pairs)


def test_trl_conversational_pairs_are_read_as_written(tmp_path):
    """The layout chat_data writes: trl's {prompt, chosen, rejected} message lists."""
    pair = {"prompt": [{"role": "user", "content": "问"}], "chosen": [{"role": "assistant", "content": "对"}],
            "rejected": [{"role": "assistant", "content": "错"}]}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pair, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_pairs([path], skip_bad=False)[0] == [pair]


def test_bundled_demo_pairs_differ():
    pairs, _ = read_pairs([REPO / "demo/dpo/demo_pairs.jsonl"], skip_bad=False)
    assert len(pairs) > 250 and all(p["chosen"] != p["rejected"] for p in pairs)


@pytest.mark.parametrize("record, message", [
    ({"conversations": [{"from": "human", "value": "问"}], "chosen": "好"}, "line 2: field 'rejected' must be"),
    ({"conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}], "chosen": "a",
      "rejected": "b"}, "line 2: field 'conversations' must end with the user's turn"),
    ({"chosen": "a", "rejected": "b"}, r"line 2: has no 'conversations' \(or trl 'prompt'\) list"),
    ({"prompt": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}], "chosen": "a",
      "rejected": "b"}, "line 2: field 'prompt' must end with the user's turn"),
    ({"conversations": [{"from": "robot", "value": "问"}], "chosen": "a", "rejected": "b"},
     r"line 2: field conversations\[0\].from must be one of"),
])
def test_bad_record_is_one_line_naming_file_line_and_field(tmp_path, record, message):
    good = {"conversations": [{"from": "human", "value": "问"}], "chosen": "对", "rejected": "错"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(StageError, match=f"pairs.jsonl: {message}"):
        read_pairs([path], skip_bad=False)
    pairs, counts = read_pairs([path], skip_bad=True)
    assert len(pairs) == 1 and counts[str(path)] == {"pairs": 1, "skipped_bad": 1}


def dpo_command(built, out, steps):
    """The DPO stage as its rule starts it (through the launcher), on the built demo's SFT model."""
    return [sys.executable, "-m", "workflow_scripts.training.launch", "--", "-m", "workflow_scripts.training.dpo",
            "--model", str(built / "results/sft_model"), "--data", str(REPO / "demo/dpo/demo_pairs.jsonl"),
            "--max-steps", str(steps), "--batch-size", "2", "--checkpoint-every", "2",
            "--checkpoint-root", str(out / "checkpoints"), "--out", str(out / "model"),
            "--metrics", str(out / "metrics.jsonl"), "--plot", str(out / "plot.png"),
            "--summary", str(out / "summary.json"), "--log", str(out / "log")]


@pytest.mark.slow
def test_ctrl_c_during_dpo_saves_the_trainers_checkpoint_and_the_rerun_resumes(built, tmp_path):
    """trl's trainer stops as our loop does: after the step in flight, with its checkpoint."""
    process = subprocess.Popen(dpo_command(built, tmp_path, 40), cwd=REPO, text=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("checkpoints/*/checkpoint-2")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in stderr, stderr[-3000:]
    stopped = re.search(r"^dpo: stopped by SIGINT at step (\d+) of 40, checkpoint (\S+) saved", stderr, re.M)
    assert stopped and Path(stopped.group(2)).name == f"checkpoint-{stopped.group(1)}", stderr[-3000:]
    assert Path(stopped.group(2), "trainer_state.json").exists() and not (tmp_path / "model").exists()
    rerun = subprocess.run(dpo_command(built, tmp_path, 40), cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from the last checkpoint" in (tmp_path / "log").read_text()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 41))  # the stopped run's steps, then the rest

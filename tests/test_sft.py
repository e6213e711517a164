"""SFT on CPU: full and LoRA fine-tuning train and save loadable chat models; the chat CLI answers;
a killed run resumes to the same losses; bad data fails with the file, line and field."""
import json
import math
import os
import shutil
import signal
import subprocess
import time

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from conftest import REPO, run_stage
from workflow_scripts.lib.serving.utf8_guard import utf8_processors
from workflow_scripts.lib.training.sft_data import IGNORE_INDEX
from workflow_scripts.lib.training.sft_data import encode, read_conversations

pytestmark = pytest.mark.slow
DATA = [f"{REPO}/demo/sft/demo_chat.jsonl:1.0", f"{REPO}/demo/sft/demo_alpaca.json:0.5"]
# Without pretraining replay (the demo config's replay_share, 0.6, needs the token shards).
SMALL = ["--max-len", "128", "--batch-tokens", "1024", "--validation-fraction", "0.05", "--eval-every", "4",
         "--replay-share", "0"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, trained, demo_docs):
    """A tiny base model pretrained by this workflow's own stage on the demo."""
    tmp = tmp_path_factory.mktemp("base")
    tokens = tmp / "tokens"
    shutil.copy(demo_docs, tmp / "validation.parquet")
    for split, docs in (("train", demo_docs), ("validation", tmp / "validation.parquet")):
        result = run_stage("tokenizer.tokens", "--tokenizer", trained[0], "--input", docs, "--shards", 1, "--out",
                           tokens / f"{split}-000.bin", "--index", tokens / f"{split}-000.json")
        assert result.returncode == 0, result.stderr
    assert run_stage("tokenizer.tokens_index", "--shards", tokens / "train-000.json", tokens / "validation-000.json",
                     "--out", tokens / "index.json").returncode == 0
    result = run_stage("training.pretrain", "--tokens", tokens, "--tokenizer", trained[0], "--seq-len", 64,
                       "--micro-batch", 8, "--global-batch-tokens", 512, "--max-steps", 20, "--eval-every", 20,
                       "--eval-windows", 8, "--checkpoint-every", 100, "--checkpoint-root", tmp / "ckpt",
                       "--out", tmp / "model", "--metrics", tmp / "m.jsonl", "--plot", tmp / "p.png",
                       "--summary", tmp / "s.json")
    assert result.returncode == 0, result.stderr
    return tmp / "model"


def sft_command(model, out, *options, data=DATA):
    return ["python", "-m", "workflow_scripts.training.sft", "--model", str(model), "--data", *data,
            "--checkpoint-root", str(out / "ckpt"), "--out", str(out / "model"), "--metrics", str(out / "m.jsonl"),
            "--plot", str(out / "p.png"), "--summary", str(out / "s.json"), "--log", str(out / "log"),
            *map(str, options)]


def sft(model, out, *options, **kwargs):
    result = subprocess.run(sft_command(model, out, *options, **kwargs), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (out / "m.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full(base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, sft(base_model, out, *SMALL, "--max-steps", 12, "--checkpoint-every", 4, "--lr", "3e-3")


def test_full_fine_tuning_trains_and_saves_a_chat_model(full):
    out, records = full
    assert records[-1]["loss"] < records[0]["loss"] and "val_loss" in records[-1]
    summary = json.loads((out / "s.json").read_text())
    assert summary["method"] == "full" and summary["data"][DATA[1].rsplit(":", 1)[0]]["weight"] == 0.5
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert tokenizer.chat_template
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id


def test_lora_trains_only_adapters_and_merges_them(base_model, tmp_path):
    records = sft(base_model, tmp_path, *SMALL, "--max-steps", 8, "--checkpoint-every", 100, "--method", "lora",
                  "--lora-rank", 4, "--lr", "5e-3")
    summary = json.loads((tmp_path / "s.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(base_model)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert 0 < summary["trainable_parameters"] < base.num_parameters() / 5
    assert merged.num_parameters() == base.num_parameters()
    assert not any("lora" in name for name in merged.state_dict())
    changed = [n for n, p in merged.state_dict().items() if not p.equal(base.state_dict()[n])]
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert changed and all(n.endswith(tuple(f"{t}.weight" for t in targets)) for n in changed)
    evaluations = [r["val_loss"] for r in records if "val_loss" in r]  # held-out chats: steady, unlike one batch
    assert len(evaluations) == 2 and evaluations[-1] < evaluations[0]


def test_chat_cli_answers_a_prompt(full):
    out, _ = full
    result = run_stage("serving.chat", out / "model", "--prompt", "安宁市位于哪个省？", "--temperature", "0",
                       "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "安宁市位于哪个省？"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    guard = LogitsProcessorList(utf8_processors(tokenizer, model.config.vocab_size))
    greedy = model.generate(**prompt, max_new_tokens=12, do_sample=False, repetition_penalty=1.1,
                            pad_token_id=tokenizer.pad_token_id, logits_processor=guard)
    reply = greedy[0, prompt["input_ids"].shape[1]:]
    assert result.stdout == tokenizer.decode(reply, skip_special_tokens=True) + "\n"


def test_chat_cli_holds_a_multi_turn_conversation(full):
    out, _ = full
    result = subprocess.run(["python", "-m", "workflow_scripts.serving.chat", str(out / "model"),
                             "--max-new-tokens", "6"],
                            cwd=REPO, input="你好\n再说一遍\n/exit\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("助手: ") == 2


def test_sigkill_then_rerun_resumes_to_the_same_losses(base_model, full, tmp_path):
    options = [*SMALL, "--max-steps", 12, "--checkpoint-every", 4, "--lr", "3e-3"]
    process = subprocess.Popen(sft_command(base_model, tmp_path, *options), cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list((tmp_path / "ckpt").glob("*/step-0000004")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "model").exists()
    records = sft(base_model, tmp_path, *options)
    assert "resuming from" in (tmp_path / "log").read_text()
    assert [r["loss"] for r in records] == [r["loss"] for r in full[1]]


def test_bad_record_fails_naming_file_line_and_field(base_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}\n'
                   '{"messages": [{"role": "user", "content": "问"}, {"role": "assistent", "content": "答"}]}\n')
    result = subprocess.run(sft_command(base_model, tmp_path, *SMALL, "--max-steps", 1, data=[f"{bad}:1"]),
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"sft: error: {bad}: line 2: field messages[1].role must be one of "
                                     "['assistant', 'system', 'user']; fix the record or set skip_bad_records")


def test_replay_mixes_pretraining_windows_by_their_share_of_trained_tokens(base_model, tmp_path):
    chat_file = REPO / "demo/sft/demo_chat.jsonl"
    sft(base_model, tmp_path, *SMALL, "--max-steps", 2, "--checkpoint-every", 100, "--replay-tokens",
        base_model.parent / "tokens", "--replay-share", 0.25, data=[f"{chat_file}:1"])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    chat_tokens = sum(label != IGNORE_INDEX for messages in read_conversations(chat_file)
                      for label in encode(tokenizer, messages, 128)[1])
    windows = json.loads((tmp_path / "s.json").read_text())["replay_windows"]
    assert windows == math.ceil(0.25 / 0.75 * chat_tokens / 128)  # windows of max_len (128) tokens
    result = subprocess.run(sft_command(base_model, tmp_path / "no-tokens", *SMALL[:-2], "--replay-share", 0.5),
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip() == (
        "sft: error: --replay-share needs --replay-tokens (the token shards the base model was trained on); "
        "give them, or --replay-share 0 to fine-tune without replay")

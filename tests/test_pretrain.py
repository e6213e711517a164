"""Pretraining on CPU: loss falls, the model loads and generates; DDP and DeepSpeed ranks share
gradients and split the data; a SIGKILLed run resumes to bitwise the same losses."""
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import DEMO_DUMP, DEMO_INDEX, REPO, run_ok, tensorboard_curve
from workflow_scripts.lib.stage_cli import STOP_REPORT_ENV, StageStopped, stage_cli
from workflow_scripts.lib.training.engines import causal_lm_loss, lr_lambda
from workflow_scripts.lib.training.stop_signals import StopRequests
from workflow_scripts.lib.training.token_data import Sampler, TokenWindows

pytestmark = pytest.mark.slow
SMALL = ["--preset", "demo", "--seq-len", "64", "--micro-batch", "4", "--global-batch-tokens", "1024",
         "--eval-windows", "16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tokenizer and train/validation token shards made from two shards of the demo dump."""
    tmp = tmp_path_factory.mktemp("data")
    for shard, split in ((0, "train"), (1, "validation")):
        run_ok("data.extract", "--dump", DEMO_DUMP, "--index", DEMO_INDEX, "--shard", shard, "--shards", 4,
               "--out", tmp / f"e{shard}.parquet", "--stats", tmp / "e.json")
        run_ok("data.convert", "--input", tmp / f"e{shard}.parquet", "--out", tmp / f"{split}.parquet",
               "--stats", tmp / "c.json")
    run_ok("tokenizer.tokenizer", "--train", tmp / "train.parquet", "--validation", tmp / "validation.parquet",
           "--vocab-size", 1000, "--out", tmp / "tokenizer", "--report", tmp / "report.json")
    for split in ("train", "validation"):
        run_ok("tokenizer.tokens", "--tokenizer", tmp / "tokenizer", "--input", tmp / f"{split}.parquet", "--shards", 1,
               "--out", tmp / "tokens" / f"{split}-000.bin", "--index", tmp / "tokens" / f"{split}-000.json")
    run_ok("tokenizer.tokens_index", "--shards", *sorted((tmp / "tokens").glob("*.json")), "--out",
           tmp / "tokens" / "index.json")
    return tmp


def pretrain_command(data, out, processes=1):
    """What the rule runs: the launcher, then the stage."""
    launch = [sys.executable, "-m", "workflow_scripts.training.launch", "--processes", str(processes), "--"]
    return launch + ["-m", "workflow_scripts.training.pretrain", "--tokens", str(data / "tokens"),
                     "--tokenizer", str(data / "tokenizer"), "--checkpoint-root", str(out / "checkpoints"),
                     "--out", str(out / "model"), "--metrics", str(out / "metrics.jsonl"), "--plot",
                     str(out / "loss.png"), "--summary", str(out / "summary.json"), "--log", str(out / "log")]


def pretrain(data, out, *options, processes=1):
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // processes)}
    result = subprocess.run(pretrain_command(data, out, processes) + [str(o) for o in options], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (out / "log").read_text()[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return out, pretrain(data, out, *SMALL, "--max-steps", 8, "--eval-every", 4, "--checkpoint-every", 4)


def test_loss_falls_and_metrics_are_complete(one_process):
    out, records = one_process
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    assert records[-1]["tokens"] == 8 * 1024
    assert all({"loss", "lr", "grad_norm", "tokens_per_s", "time"} <= set(r) for r in records)
    evals = [r for r in records if "val_bpb" in r]
    assert [r["step"] for r in evals] == [4, 8] and evals[-1]["val_loss"] < evals[0]["val_loss"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gradient_accumulation"] == 4 and summary["processes"] == 1
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_loads_and_generates(one_process, data):
    out, _ = one_process
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert (out / "model" / "model.safetensors").exists()
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tokenizer)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    inputs = tokenizer("安宁市", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 8


def test_bits_per_byte_matches_the_validation_loss(one_process, data):
    """bpb = nats per token / ln 2 / bytes per token, with bytes counted from the text of the
    evaluated windows (SMALL's 16) as the tokenizer decodes it."""
    _, records = one_process
    final = records[-1]
    ratio = final["val_loss"] / (np.log(2) * final["val_bpb"])
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    _, targets = TokenWindows(data / "tokens", "validation", 64).batch(range(16))
    text_bytes = sum(len(tokenizer.decode(row, skip_special_tokens=True).encode()) for row in targets.tolist())
    assert ratio == pytest.approx(text_bytes / targets.numel(), rel=0.02)


def test_checkpoints_are_kept_outside_the_output(one_process):
    out, _ = one_process
    (run_dir,) = (out / "checkpoints").iterdir()
    assert [p.name for p in sorted(run_dir.glob("step-*"))] == ["step-0000004"]
    assert not list(run_dir.glob("*.tmp"))


def test_sampler_gives_ranks_disjoint_windows():
    seen = [set() for _ in range(3)]
    for rank in range(3):
        sampler = Sampler(count=600, seed=1, rank=rank, world=3, micro_batch=4)
        for step in range(50):
            seen[rank].update(sampler.indices(step))
    assert all(len(s) == 200 for s in seen)
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert Sampler(600, 1, 0, 1, 4).indices(7) == Sampler(600, 1, 0, 1, 4).indices(7)
    assert Sampler(600, 1, 0, 1, 4).indices(7) != Sampler(600, 2, 0, 1, 4).indices(7)


def test_each_epoch_moves_the_window_grid_and_a_moved_window_wraps_round_the_split(tmp_path):
    """The first epoch reads the plain grid, later ones a grid moved by a seeded shift; a moved
    window past the last token goes on from the first, across shards, and an epoch still reads
    every token once."""
    (tmp_path / "train-000.bin").write_bytes(np.arange(37, dtype=np.uint16).tobytes())
    (tmp_path / "train-001.bin").write_bytes(np.arange(37, 100, dtype=np.uint16).tobytes())
    shards = [{"file": "train-000.bin", "tokens": 37}, {"file": "train-001.bin", "tokens": 63}]
    (tmp_path / "index.json").write_text(json.dumps({"dtype": "uint16", "splits": {"train": {"shards": shards}}}))
    windows = TokenWindows(tmp_path, "train", seq_len=9)
    assert windows.count == 10 and windows.read(3).tolist() == list(range(30, 40))
    assert windows.read(9, shift=4).tolist() == [*range(94, 100), *range(4)]
    shifts = [windows.grid_shift(seed=0, epoch=epoch) for epoch in range(8)]
    assert shifts[0] == 0 and len(set(shifts[1:])) > 2 and set(shifts) <= set(range(10))
    assert shifts == [windows.grid_shift(seed=0, epoch=epoch) for epoch in range(8)]
    assert sorted(t for i in range(10) for t in windows.read(i, shifts[1]).tolist()) == list(range(100))


def test_pretraining_reads_a_later_epoch_on_its_moved_grid(data):
    from workflow_scripts.lib.training.engines import RunShape
    from workflow_scripts.lib.training.token_training import TokenRun, pretraining_job

    run = TokenRun(tokens=data / "tokens", checkpoint_root=data, seq_len=64, micro_batch=4, global_batch_tokens=256,
                   compile=False, max_steps=1, eval_every=1, eval_windows=1, checkpoint_every=1, seed=3)
    job = pretraining_job(run, RunShape(4, 64, 1, 1), 0, 1, AutoTokenizer.from_pretrained(data / "tokenizer"))
    windows = TokenWindows(data / "tokens", "train", 64)
    step = windows.count // 4 + 1
    (epoch, index), *_ = Sampler(windows.count, 3, 0, 1, 4).draws(step)
    moved = windows.read(index, windows.grid_shift(3, epoch))[:-1].tolist()
    assert epoch == 1 and job.micro_batch(step)[0][0].tolist() == moved != windows.read(index)[:-1].tolist()


@pytest.mark.parametrize("preset", ["demo", "0.5b", "d3"])  # 0.5b: grouped-query attention
def test_flops_per_token_counts_every_matmul_weight_and_attention(preset):
    """MFU's numerator: 6 FLOPs per weight of every matmul (the output layer too, the input
    embedding, a lookup, not) and 12 per layer, width and position for attention scores."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workflow_scripts.lib.training.metrics import model_flops_per_token
    from workflow_scripts.lib.model_shapes import shape

    config = LlamaConfig(**shape(preset), vocab_size=8192, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    matmul_weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name)
    attention = 12 * config.num_hidden_layers * config.hidden_size * 512
    assert model_flops_per_token(config, 512) == 6 * matmul_weights + attention



def test_depth_is_one_knob_that_grows_width_and_depth_together():
    """d<N>: N layers of width 64 N, heads of 64, SwiGLU 8/3 as wide; d12 is the 0.1b preset, and the
    non-embedding parameters grow as 12 N^3 (the blocks' 12 width^2 per layer) plus the norms."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workflow_scripts.lib.training.model_presets import non_embedding_parameters
    from workflow_scripts.lib.model_shapes import PRESETS, shape

    assert shape("d12") == PRESETS["0.1b"]
    sizes = {}
    for depth in (2, 4, 8):
        config = LlamaConfig(**shape(f"d{depth}"), vocab_size=4096, tie_word_embeddings=True)
        assert config.hidden_size == 64 * depth and config.num_hidden_layers == depth
        assert config.hidden_size // config.num_attention_heads == 64
        with torch.device("meta"):
            sizes[depth] = non_embedding_parameters(LlamaForCausalLM(config))
        width = 64 * depth
        blocks = depth * (4 * width * width + 3 * width * config.intermediate_size)
        assert sizes[depth] == blocks + (2 * depth + 1) * width  # and the RMSNorm weights
    assert 7 < sizes[8] / sizes[4] < 8.5 and 7 < sizes[4] / sizes[2] < 9

def test_throughput_leaves_out_the_evaluations_between_steps(tmp_path):
    """Step 3 follows a 2-second evaluation; its tokens/s is the step's own, not the pause's."""
    from accelerate.state import AcceleratorState
    from transformers import LlamaConfig, LlamaForCausalLM

    from workflow_scripts.lib.training.checkpoints import Checkpoints
    from workflow_scripts.lib.training.engines import AccelerateEngine, make_optimizer
    from workflow_scripts.lib.training.metrics import Metrics
    from workflow_scripts.lib.training.training import Job, train

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    engine = AccelerateEngine(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                              clip=1.0, mixed_precision="no")
    ids = torch.randint(0, 64, (4, 17))

    def slow_evaluation(_engine):
        time.sleep(2)
        return {"val_loss": 0.0}

    job = Job(name="t", micro_batch=lambda _: (ids[:, :-1], ids[:, 1:]), evaluate=slow_evaluation, max_steps=4,
              eval_every=2, checkpoint_every=100, accumulation=1)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        train(engine, job, {"step": 0, "tokens": 0}, Checkpoints(tmp_path, keep=1),
              Metrics(tmp_path / "metrics.jsonl", rank=0, resume_step=0), progress_stream=io.StringIO(),
              stop=StopRequests())
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        for signum, handler in handlers.items():  # pytest's own Ctrl-C again
            signal.signal(signum, handler)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and "val_loss" in records[1]
    assert all(r["tokens"] / r["step"] / r["tokens_per_s"] < 1.0 for r in records)  # seconds per step


def test_warmup_then_cosine():
    factor = lr_lambda(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55) and factor(110) == pytest.approx(0.1)


def saved_model_val_loss(model_dir, data, windows=16):
    """The validation loss of the saved weights, on the windows the run evaluated."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    validation = TokenWindows(data / "tokens", "validation", 64)
    inputs, targets = validation.batch(range(windows))
    with torch.no_grad():
        return causal_lm_loss(model, inputs, targets).item()


@pytest.mark.parametrize("engine", [["--engine", "ddp"], ["--engine", "deepspeed", "--zero-stage", "2"],
                                    ["--engine", "deepspeed", "--zero-stage", "3"]],
                         ids=["ddp", "deepspeed-zero2", "deepspeed-zero3"])
def test_two_processes_train_as_one_with_the_same_global_batch(data, one_process, tmp_path, engine):
    """Two ranks at half the accumulation see, per step, exactly the windows one process sees; only
    if they split the data and average their gradients do the losses come out the same."""
    records = pretrain(data, tmp_path, *SMALL, "--max-steps", 4, "--eval-every", 4, "--checkpoint-every", 4,
                       *engine, processes=2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["gradient_accumulation"] == 2
    reference = one_process[1][:4]
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in reference], rel=1e-5)
    assert records[-1]["val_loss"] == pytest.approx(reference[-1]["val_loss"], rel=1e-5)
    assert saved_model_val_loss(tmp_path / "model", data) == pytest.approx(records[-1]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("ending", ["finished", "stopped"])
def test_a_stage_leaves_its_process_group_before_the_interpreter_exits(monkeypatch, ending):
    """A rank whose gloo group outlived it aborted at exit after a finished run (SIGABRT, "terminate
    called without an active exception": CI, ZeRO-3, once); a stopped run leaves it too."""
    def run(args, progress_stream):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        if ending == "stopped":
            raise StageStopped(128 + signal.SIGUSR1, "stopped at step 1 of 2")

    monkeypatch.setattr(sys, "argv", ["stage"])
    monkeypatch.delenv(STOP_REPORT_ENV, raising=False)
    try:
        stage_cli("stage", "", lambda parser: None, run)
    except SystemExit as stop:
        assert ending == "stopped" and stop.code == 128 + signal.SIGUSR1
    finally:
        initialized = torch.distributed.is_initialized()
        if initialized:
            torch.distributed.destroy_process_group()
    assert not initialized


def test_one_deepspeed_process_trains_as_one_ddp_process(data, one_process, tmp_path):
    """accelerate launch starts a lone process with no rendezvous; DeepSpeed then looked for MPI."""
    records = pretrain(data, tmp_path, *SMALL, "--max-steps", 2, "--eval-every", 2, "--checkpoint-every", 4,
                       "--engine", "deepspeed", "--zero-stage", "2")
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in one_process[1][:2]], rel=1e-5)


def test_sigkill_then_rerun_resumes_bitwise(data, one_process, tmp_path):
    options = [*SMALL, "--max-steps", 8, "--eval-every", 4, "--checkpoint-every", 2]
    process = started_until_checkpoint(data, tmp_path, options, 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    (run_dir,) = (tmp_path / "checkpoints").iterdir()
    killed_at = max(int(p.name.split("-")[1]) for p in run_dir.glob("step-???????"))
    assert 2 <= killed_at < 8 and not (tmp_path / "model").exists()
    records = pretrain(data, tmp_path, *options)
    assert f"resuming from {run_dir / f'step-{killed_at:07d}'}" in (tmp_path / "log").read_text()
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["loss"] for r in records] == [r["loss"] for r in one_process[1]]  # bitwise
    assert records[-1]["val_loss"] == one_process[1][-1]["val_loss"]
    # TensorBoard's curve holds each step once: what the killed run logged past its checkpoint is purged
    assert tensorboard_curve(run_dir, "loss") == [(r["step"], pytest.approx(r["loss"])) for r in records]


def started_until_checkpoint(data, out, options, step):
    """The launcher running pretraining in a process group of its own (as a terminal's foreground
    job), once the run has written its checkpoint of `step`."""
    command = pretrain_command(data, out, 1) + [str(o) for o in options]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "2"}, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob(f"*/step-{step:07d}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


def test_ctrl_c_checkpoints_the_step_in_flight_and_the_rerun_resumes_bitwise(data, one_process, tmp_path):
    """Ctrl-C (SIGINT to the launcher's process group): the step in flight finishes, its checkpoint
    is saved, one line says so, and the rerun ends as an uninterrupted run does, bit for bit."""
    options = [*SMALL, "--max-steps", 8, "--eval-every", 4, "--checkpoint-every", 2]
    process = started_until_checkpoint(data, tmp_path, options, 2)
    os.killpg(process.pid, signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGINT and "Traceback" not in stderr, stderr[-3000:]
    stopped = re.search(r"^pretrain: stopped by SIGINT at step (\d) of 8, checkpoint (\S+) saved; "
                        r"the next run resumes from it$", stderr, re.M)
    assert stopped, stderr[-3000:]
    (run_dir,) = (tmp_path / "checkpoints").iterdir()
    assert stopped.group(2) == str(run_dir / f"step-{int(stopped.group(1)):07d}")
    records = pretrain(data, tmp_path, *options)
    assert f"resuming from {stopped.group(2)}\n" in (tmp_path / "log").read_text()
    assert [r["loss"] for r in records] == [r["loss"] for r in one_process[1]]  # bitwise
    assert records[-1]["val_loss"] == one_process[1][-1]["val_loss"]


def test_a_second_ctrl_c_stops_the_run_at_once(data, tmp_path):
    """The first press comes while the stage is still importing (its stop would wait for a step),
    the second half a second later (two presses, not one signal sent twice, which the kernel merges)."""
    command = pretrain_command(data, tmp_path, 1) + [*SMALL, "--max-steps", "400"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    time.sleep(1)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    started = time.monotonic()
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGKILL and time.monotonic() - started < 5
    assert not list(tmp_path.glob("checkpoints/*/step-*")) and not (tmp_path / "model").exists()


def test_changed_settings_do_not_resume_an_old_run(data, one_process, tmp_path):
    shutil.copytree(one_process[0] / "checkpoints", tmp_path / "checkpoints")
    pretrain(data, tmp_path, *SMALL, "--max-steps", 2, "--eval-every", 2, "--checkpoint-every", 4, "--lr", "0.001")
    assert "resuming" not in (tmp_path / "log").read_text()
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2


def test_an_edited_preset_does_not_resume_the_old_shapes_run(data, one_process, tmp_path):
    shutil.copytree(one_process[0] / "checkpoints", tmp_path / "checkpoints")
    narrower = "import runpy, sys; from workflow_scripts.lib.model_shapes import PRESETS; " \
        "PRESETS['demo'].update(hidden_size=64, intermediate_size=176); " \
        "sys.argv[0] = 'pretrain'; runpy.run_module('workflow_scripts.training.pretrain', run_name='__main__')"
    command = [sys.executable, "-c", narrower] + pretrain_command(data, tmp_path)[8:] + \
        [str(o) for o in (*SMALL, "--max-steps", 8, "--eval-every", 4, "--checkpoint-every", 4)]  # as one_process ran
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" not in (tmp_path / "log").read_text()
    assert len(list((tmp_path / "checkpoints").iterdir())) == 2


def test_global_batch_that_does_not_divide_is_a_clear_error(data, tmp_path):
    command = pretrain_command(data, tmp_path) + [*SMALL[:-4], "--global-batch-tokens", "1000"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    launched, error = result.stderr.splitlines()[:2]
    assert launched.startswith("launch: accelerate launch --num_processes 1")
    assert error == "pretrain: error: pretrain.global_batch_tokens 1000 is not a multiple of micro_batch x seq_len " \
                    "x processes = 256"

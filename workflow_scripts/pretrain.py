"""Pretrain a LLaMA-style causal LM from scratch on the token shards; resumable, measured.

    accelerate launch --num_processes 1 -m workflow_scripts.pretrain --tokens results/tokens \
        --tokenizer results/tokenizer --preset demo --out results/base_model \
        --checkpoint-root results/checkpoints/base_model --metrics m.jsonl --plot loss.png --summary s.json

With N processes: `accelerate launch --multi_gpu --num_processes N -m workflow_scripts.pretrain ...`
(on a CPU-only machine this runs DDP over gloo). `--engine deepspeed --zero-stage 2|3` trains
with DeepSpeed ZeRO instead. Rerunning the same command after a crash or kill resumes from the
latest checkpoint of the same settings and data; the output is a Hugging Face model directory
(safetensors, config, tokenizer) for `AutoModelForCausalLM.from_pretrained`.
"""
import argparse
import hashlib
import json
import math
import os
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from workflow_scripts.common import atomic_dir, atomic_path, log, read_json, stage_cli, write_json
from workflow_scripts.training import (AccelerateEngine, Checkpoints, DeepSpeedEngine, Metrics, RunShape, Sampler,
                                       Throughput, TokenWindows, evaluate, lr_lambda, model_flops_per_token,
                                       peak_flops, plot_curves, set_seed, token_byte_lengths, use_deterministic_cpu)

# LLaMA shapes (RMSNorm, RoPE, SwiGLU). Sizes count the transformer blocks; embeddings come on top
# (32,000 x hidden). `demo` trains in about a minute on 2 CPU cores.
PRESETS = {
    "demo": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=352),
    "26m": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1408),
    "0.1b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                 intermediate_size=2048),
    "0.5b": dict(hidden_size=1280, num_hidden_layers=24, num_attention_heads=20, num_key_value_heads=4,
                 intermediate_size=3456),
}
VOCAB_MULTIPLE = 64
# Arguments that do not change what is trained; everything else names the checkpoint run directory.
NOT_IN_RUN_ID = {"out", "checkpoint_root", "metrics", "plot", "summary", "log", "eval_every", "checkpoint_every",
                 "keep_checkpoints", "tokenizer"}


def build_model(preset, tokenizer, seq_len, tie_embeddings, attention):
    config = LlamaConfig(**PRESETS[preset], vocab_size=math.ceil(len(tokenizer) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE,
                         max_position_embeddings=seq_len, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=tie_embeddings, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, attn_implementation=attention)
    return LlamaForCausalLM(config)


def make_optimizer(model, lr, weight_decay):
    """AdamW, decay on matrices only; fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=torch.cuda.is_available())


def run_id(args, tokens_index):
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in NOT_IN_RUN_ID}
    settings["data"] = tokens_index["tokenizer_sha1"] + json.dumps(tokens_index["splits"], sort_keys=True)
    settings["world"] = os.environ.get("WORLD_SIZE", "1")
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def make_engine(args, model, optimizer, scheduler, shape):
    mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if args.engine == "deepspeed":
        return DeepSpeedEngine(model, optimizer, scheduler, args.clip, mixed, args.zero_stage, shape)
    return AccelerateEngine(model, optimizer, scheduler, args.clip, mixed)


def train_loop(args, engine, data, shape, start_step, checkpoints, metrics, progress_stream):
    train, validation, token_bytes = data
    sampler = Sampler(train.count, args.seed, engine.rank, engine.world, shape.micro_batch)
    flops_per_token = model_flops_per_token(engine.module.config, shape.seq_len)
    peak = peak_flops(engine.world)
    clock = Throughput()
    bar = tqdm(total=args.max_steps, initial=start_step, desc="pretrain", unit="step", file=progress_stream,
               mininterval=5, disable=engine.rank != 0)
    for step in range(start_step, args.max_steps):
        first = step * shape.accumulation
        batches = [train.batch(sampler.indices(first + a)) for a in range(shape.accumulation)]
        lr = engine.scheduler.get_last_lr()[0]
        loss, grad_norm = engine.train_step(batches)
        done = step + 1
        tokens_per_s = clock.tick(shape.tokens_per_step)
        record = {"step": done, "tokens": done * shape.tokens_per_step,
                  "loss": engine.all_reduce_sum(loss.double()).item() / engine.world,
                  "lr": lr, "grad_norm": grad_norm, "tokens_per_s": round(tokens_per_s)}
        if peak:
            record["mfu"] = round(flops_per_token * tokens_per_s / peak, 4)
        if done % args.eval_every == 0 or done == args.max_steps:
            record["val_loss"], record["val_bpb"] = evaluate(engine, validation, args.eval_windows,
                                                             shape.micro_batch, token_bytes)
        metrics.write(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        bar.update()
        if done % args.checkpoint_every == 0 and done < args.max_steps:
            checkpoints.save(engine, done, {"step": done})
            clock = Throughput()  # the save's time is not training throughput
    bar.close()


def save_model(engine, tokenizer, out):
    model, state = engine.unwrapped_state()
    if engine.rank == 0:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp, save_jinja_files=False)
    engine.barrier()


def summarise(records, shape, engine, args):
    final = records[-1]
    evals = [r for r in records if "val_loss" in r]
    rates = [r["tokens_per_s"] for r in records[len(records) // 2:]]
    summary = {"preset": args.preset, "engine": engine.name, "processes": engine.world, "steps": final["step"],
               "tokens": final["tokens"], "tokens_per_step": shape.tokens_per_step,
               "gradient_accumulation": shape.accumulation, "parameters": engine.module.num_parameters(),
               "first_loss": records[0]["loss"], "final_loss": final["loss"],
               "val_loss": evals[-1]["val_loss"], "val_bpb": evals[-1]["val_bpb"],
               "tokens_per_s": round(sum(rates) / len(rates))}
    if "mfu" in final:
        summary["mfu"] = sum(r["mfu"] for r in records[len(records) // 2:]) / len(rates)
        summary["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return summary


def add_arguments(ap):
    ap.add_argument("--tokens", type=Path, required=True, help="directory with index.json and the token shards")
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--preset", choices=PRESETS, default="demo")
    ap.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--attention", choices=("sdpa", "eager", "flash_attention_2"), default="sdpa")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    ap.add_argument("--engine", choices=("ddp", "deepspeed"), default="ddp")
    ap.add_argument("--zero-stage", type=int, choices=(2, 3), default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per process per micro-step")
    ap.add_argument("--global-batch-tokens", type=int, default=8192, help="tokens per optimizer step, all ranks")
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-windows", type=int, default=64, help="validation windows per evaluation")
    ap.add_argument("--checkpoint-every", type=int, default=25)
    ap.add_argument("--keep-checkpoints", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="Hugging Face model directory")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--plot", type=Path, required=True)
    ap.add_argument("--summary", type=Path, required=True)


def run(args, progress_stream):
    if not torch.cuda.is_available():
        use_deterministic_cpu()
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    data = (TokenWindows(args.tokens, "train", args.seq_len), TokenWindows(args.tokens, "validation", args.seq_len),
            token_byte_lengths(tokenizer))
    model = build_model(args.preset, tokenizer, args.seq_len, args.tie_embeddings, args.attention)
    if args.compile:
        model = torch.compile(model)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup_steps, args.max_steps,
                                                                       args.min_lr_ratio))
    shape = RunShape.derive(args.global_batch_tokens, args.micro_batch, args.seq_len,
                            int(os.environ.get("WORLD_SIZE", 1)))
    engine = make_engine(args, model, optimizer, scheduler, shape)
    checkpoints = Checkpoints(args.checkpoint_root / run_id(args, read_json(args.tokens / "index.json")),
                              args.keep_checkpoints)
    latest = checkpoints.latest()
    start = 0
    if latest:
        engine.load(latest)
        start = json.loads((latest / "trainer_state.json").read_text())["step"]
        log.info("resuming from %s (step %d)", latest, start)
    metrics = Metrics(checkpoints.root / "metrics.jsonl", engine.rank, start)
    engine.barrier()
    train_loop(args, engine, data, shape, start, checkpoints, metrics, progress_stream)
    save_model(engine, tokenizer, args.out)
    if engine.rank == 0:
        records = metrics.records()
        write_json(args.summary, summarise(records, shape, engine, args))
        with atomic_path(args.metrics) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        plot_curves(records, args.plot, f"pretraining ({args.preset}, {engine.name}, {engine.world} processes)")
        log.info("%s", read_json(args.summary))


if __name__ == "__main__":
    stage_cli("pretrain", __doc__, add_arguments, run)

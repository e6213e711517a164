"""Serving throughput and time to first token: continuous batching against the earlier scheduler
(batches of the requests that waited together and shared settings, as of --baseline-rev), and
against transformers' generate on fixed batches, in one run.

    snakemake --cores all sft_model
    python benchmarks/serve_throughput.py --model results/sft_model

Every request asks for exactly --max-tokens new tokens (ignore_eos; min_new_tokens for generate),
greedy, on the demo's evaluation prompts through the chat template, so all rows do the same work.
Rows: `generate` one prompt at a time and on padded batches of 16 in this process (the batch
reachable at best, with no server); the server's own decode step alone (ContinuousBatch.step,
no HTTP, no prefill) with 1 row and with 16, at each --threads: the most any scheduler can
gain from 16 clients on this machine; each server (this tree's, and --baseline-rev's from a git
worktree), started as users start it, at each --threads, with 1, 4 and 16 clients streaming their
requests (stream_options.include_usage), as chat front-ends do. Time to first token is from a
request's send to its first piece of text. Every run takes a turn in each of --repeats rounds (the
servers all started first and kept, the order rotating from round to round), so that a slow spell
of a shared machine falls on all of them; a run's figures are medians over the rounds with their
intervals (results_io.median_interval), and continuous batching against the earlier scheduler is
the median of their ratios round by round. Writes benchmarks/results/serve_throughput.{json,md}.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from results_io import median_interval, module_in, paired_ratio, provenance, rotated_rounds, save  # noqa: E402

from workflow_scripts.lib.serving.continuous_batching import ContinuousBatch, RowSampling  # noqa: E402
from workflow_scripts.lib.serving.generation import DEFAULTS, ReplyRequest, chat_prompt_ids, left_padded  # noqa: E402
from workflow_scripts.lib.training.models import load_causal_lm  # noqa: E402

CLIENTS = (1, 4, 16)


def prompts(count):
    lines = [line.strip() for line in (REPO / "demo/eval/prompts.txt").read_text(encoding="utf-8").splitlines()]
    questions = [line for line in lines if line and not line.startswith("#")]
    return [questions[n % len(questions)] for n in range(count)]


def row(name, threads, clients, requests, tokens, seconds, first_tokens=()):
    return {"run": name, "threads": threads, "clients": clients, "requests": requests, "tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "ttft_ms": round(1000 * statistics.mean(first_tokens), 1) if first_tokens else None}


def direct(model_dir, questions, max_tokens, batch, threads):
    """generate on batches of `batch` prompts (left-padded), every reply exactly max_tokens long."""
    torch.set_num_threads(threads)
    model, tokenizer = load_causal_lm(model_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    started = time.perf_counter()
    tokens = 0
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            group = ids[start:start + batch]
            inputs, mask = left_padded(group, pad, model.device)
            output = model.generate(input_ids=inputs, attention_mask=mask, max_new_tokens=max_tokens,
                                    min_new_tokens=max_tokens, do_sample=False, repetition_penalty=1.1,
                                    pad_token_id=pad)
            tokens += (output.shape[1] - inputs.shape[1]) * len(group)
    name = "generate, one at a time" if batch == 1 else f"generate, batches of {batch}"
    return row(name, threads, batch, len(ids), tokens, time.perf_counter() - started)


def decode_steps(model_dir, questions, max_tokens, rows, threads):
    """ContinuousBatch.step alone: `rows` rows at a time, greedy with the server's default repetition
    penalty, every row exactly max_tokens long; the prefill (admit) is not timed."""
    torch.set_num_threads(threads)
    model, tokenizer = load_causal_lm(model_dir)
    sampling = RowSampling(0.0, 1.0, DEFAULTS["repetition_penalty"], min_tokens=max_tokens)
    seconds, tokens = 0.0, 0
    for start in range(0, len(questions), rows):
        batch = ContinuousBatch(model, tokenizer, rows)
        batch.admit([batch.row(ReplyRequest(chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]), max_tokens,
                                            lambda piece: None), sampling) for q in questions[start:start + rows]])
        started = time.perf_counter()
        while batch.rows:
            tokens += len(batch.rows)
            batch.step()
        seconds += time.perf_counter() - started
    return row(f"decode step alone, {rows} {'row' if rows == 1 else 'rows'}", threads, rows, len(questions), tokens,
               seconds)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(tree, model_dir, threads):
    """The server of the source tree `tree`, as users start it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", module_in(tree, "serving.serve"), str(model_dir),
                                "--port", str(port),
                                "--threads", str(threads), "--max-queue", "64"], cwd=tree,
                               env={**os.environ, "PYTHONPATH": str(tree)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server of {tree} did not start in two minutes")


def streamed_request(url, model, question, max_tokens):
    """(seconds to the first piece of text, completion tokens) of one streamed greedy request."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    call = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                  {"Content-Type": "application/json"})
    sent, first, tokens = time.perf_counter(), None, 0
    with urllib.request.urlopen(call, timeout=600) as response:
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("delta", {}).get("content") for c in chunk["choices"]):
                first = time.perf_counter() - sent
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first, tokens


def served(name, url, model, questions, max_tokens, clients, threads):
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda q: streamed_request(url, model, q, max_tokens), questions))
    return row(name, threads, clients, len(questions), sum(t for _, t in results), time.perf_counter() - started,
               [first for first, _ in results])


def baseline_tree(revision):
    """A git worktree of the repository at `revision`, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="serve-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=REPO, check=True,
                   capture_output=True)
    return folder


def interval_text(figure, digits):
    low, high = figure["interval"]
    return f"{figure['median']:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def markdown(report):
    coverage = report["rows"][0]["tokens_per_s"]["coverage"]
    lines = [f"# Serving throughput ({report['machine']})", "", f"`{report['command']}`", "",
             f"{report['requests']} greedy chat requests of exactly {report['max_tokens']} new tokens each, "
             f"streamed; the earlier scheduler is commit `{report['baseline_rev']}`'s server. {report['rounds']} "
             f"rounds, every run in each, in a rotated order: medians, with their intervals of {coverage:.1%} "
             "coverage in brackets.", "",
             "| run | threads | clients | tokens/s | time to first token (ms) "
             "| vs the earlier scheduler, round by round |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        ttft = interval_text(r["ttft_ms"], 0) if r["ttft_ms"] else ""
        ratio = f"{interval_text(r['vs_earlier_scheduler'], 2)}×" if "vs_earlier_scheduler" in r else ""
        lines.append(f"| {r['run']} | {r['threads']} | {r['clients']} | {interval_text(r['tokens_per_s'], 0)} "
                     f"| {ttft} | {ratio} |")
    return "\n".join(lines) + "\n"


def summarised(measured):
    """Each run's rounds as medians with intervals; the servers' ratios to the earlier scheduler's."""
    rows = []
    for key, rounds in measured.items():
        name, threads, clients = key
        ttfts = [r["ttft_ms"] for r in rounds if r["ttft_ms"] is not None]
        row = {"run": name, "threads": threads, "clients": clients,
               "tokens_per_s": median_interval([r["tokens_per_s"] for r in rounds]),
               "ttft_ms": median_interval(ttfts) if ttfts else None, "every_round": rounds}
        if name == "continuous batching":
            row["vs_earlier_scheduler"] = paired_ratio([r["tokens_per_s"] for r in rounds],
                                                       [r["tokens_per_s"] for r in
                                                        measured["earlier scheduler", threads, clients]])
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "results" / "sft_model")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--baseline-rev", default="8d4f637", help="the commit whose server is the earlier scheduler")
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
    args = ap.parse_args()
    model_dir = args.model.resolve()
    questions = prompts(args.requests)
    top = max(args.threads)
    runs = [(("generate, one at a time", top, 1), lambda: direct(model_dir, questions, args.max_tokens, 1, top)),
            (("generate, batches of 16", top, 16), lambda: direct(model_dir, questions, args.max_tokens, 16, top))]
    runs += [((f"decode step alone, {rows} {'row' if rows == 1 else 'rows'}", threads, rows),
              lambda rows=rows, threads=threads: decode_steps(model_dir, questions, args.max_tokens, rows, threads))
             for threads in args.threads for rows in (1, 16)]
    baseline = baseline_tree(args.baseline_rev)
    servers = []
    try:
        for tree, name in ((REPO, "continuous batching"), (baseline, "earlier scheduler")):
            for threads in args.threads:
                process, url = start_server(tree, model_dir, threads)
                servers.append(process)
                streamed_request(url, model_dir.name, questions[0], 4)  # lazy initialisation
                runs += [((name, threads, clients),
                          lambda name=name, url=url, threads=threads, clients=clients:
                          served(name, url, model_dir.name, questions, args.max_tokens, clients, threads))
                         for clients in CLIENTS]
        measured = {key: [] for key, _ in runs}
        for number, in_order in rotated_rounds(runs, args.repeats):
            for key, run in in_order:
                measured[key].append(run())
                print(f"round {number}", measured[key][-1], flush=True)
    finally:
        for process in servers:
            process.terminate()
            process.wait()
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=False)
    report = {**provenance(), "requests": args.requests, "max_tokens": args.max_tokens,
              "baseline_rev": args.baseline_rev, "rounds": args.repeats, "rows": summarised(measured)}
    save("serve_throughput", report, markdown(report))


if __name__ == "__main__":
    main()

"""Serving throughput: the server at 1, 4 and 16 concurrent clients against calling generate directly.

    snakemake --cores all sft_model
    python benchmarks/serve_throughput.py --model results/sft_model

Every request asks for exactly --max-tokens new tokens (ignore_eos; min_new_tokens for generate),
greedy, on the demo's evaluation prompts through the chat template, so all rows do the same work.
Rows: `generate` one prompt at a time in this process, and on padded batches of 4 and 16 prompts
(what the server's batches can reach at best); the server, started as users start it, with 1, 4
and 16 clients sending non-streaming requests (it batches the requests that wait together).
Same torch threads everywhere. Writes benchmarks/results/serve_throughput.{json,md}.
"""
import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from results_io import provenance, save  # noqa: E402

from workflow_scripts.lib.generation import chat_prompt_ids, left_padded  # noqa: E402
from workflow_scripts.lib.models import load_causal_lm  # noqa: E402


def prompts(count):
    lines = [line.strip() for line in (REPO / "demo/eval/prompts.txt").read_text(encoding="utf-8").splitlines()]
    questions = [line for line in lines if line and not line.startswith("#")]
    return [questions[n % len(questions)] for n in range(count)]


def row(name, requests, tokens, seconds):
    return {"run": name, "requests": requests, "tokens": tokens, "seconds": round(seconds, 2),
            "requests_per_s": round(requests / seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


def direct(model_dir, questions, max_tokens, batch):
    """generate on batches of `batch` prompts (left-padded), every reply exactly max_tokens long."""
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
    return row(name, len(ids), tokens, time.perf_counter() - started)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir, threads):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "workflow_scripts.serve", str(model_dir), "--port", str(port),
                                "--threads", str(threads), "--max-queue", "64"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start in two minutes")


def request(url, model, question, max_tokens):
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}
    call = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                  {"Content-Type": "application/json"})
    with urllib.request.urlopen(call, timeout=600) as response:
        return json.load(response)["usage"]["completion_tokens"]


def served(url, model, questions, max_tokens, clients):
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(lambda q: request(url, model, q, max_tokens), questions))
    return row(f"server, {clients} client{'s' if clients > 1 else ''}", len(questions), tokens,
               time.perf_counter() - started)


def markdown(report):
    lines = [f"# Serving throughput ({report['machine']})", "", f"`{report['command']}`", "",
             f"{report['requests']} greedy chat requests of exactly {report['max_tokens']} new tokens each, "
             f"{report['threads']} torch threads.", "",
             "| run | requests/s | tokens/s | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {r['run']} | {r['requests_per_s']} | {r['tokens_per_s']} | {r['seconds']} |" for r in report["rows"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "results" / "sft_model")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    questions = prompts(args.requests)
    rows = [direct(args.model, questions, args.max_tokens, batch) for batch in (1, 4, 16)]
    process, url = start_server(args.model, args.threads)
    try:
        request(url, args.model.name, questions[0], 4)  # the first request pays for lazy initialisation
        rows += [served(url, args.model.name, questions, args.max_tokens, clients) for clients in (1, 4, 16)]
    finally:
        process.terminate()
        process.wait()
    for r in rows:
        print(r, flush=True)
    report = {**provenance(), "requests": args.requests, "max_tokens": args.max_tokens, "threads": args.threads,
              "rows": rows}
    save("serve_throughput", report, markdown(report))


if __name__ == "__main__":
    main()

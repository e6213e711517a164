"""CPU decoding of the exported chat model in llama.cpp (f16 and Q8_0 GGUF) against transformers'
generate on the Hugging Face model it came from, in one run; with the files' sizes and how closely
llama.cpp's logits follow transformers'.

    snakemake --cores all gguf
    python benchmarks/gguf_decode.py --model results/sft_model --export results/export

Each engine decodes exactly --tokens new tokens greedily (past any end token) after each of the
demo's chat prompts, at each --threads; a first prompt warms each engine up and is not counted.
Every engine and thread count runs once in each of --repeats rounds, in an order that rotates from
round to round; each is reported as its median with an interval, and against transformers at the
same threads as the median of the ratios within each round (results_io).
llama.cpp is node-llama-cpp's prebuilt CPU build (benchmarks/llama_cpp_runtime.py); its
time is measured inside the runtime, so starting Node is not counted. Writes
benchmarks/results/gguf_decode.{json,md}.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from results_io import median_interval, paired_ratio, provenance, rotated_rounds, save  # noqa: E402

import llama_cpp_runtime  # noqa: E402
from workflow_scripts.lib.serving.generation import chat_prompt_ids  # noqa: E402
from workflow_scripts.lib.training.models import load_causal_lm  # noqa: E402


def prompts(tokenizer, count):
    lines = (REPO / "demo" / "eval" / "prompts.txt").read_text(encoding="utf-8").splitlines()
    questions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in questions[:count]]


def row(engine, threads, timings):
    tokens, seconds = sum(t for t, _ in timings), sum(s for _, s in timings)
    return {"engine": engine, "threads": threads, "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1)}


@torch.no_grad()
def transformers_decoding(model, ids_list, tokens, threads):
    torch.set_num_threads(threads)
    timings = []
    for ids in ids_list:
        started = time.perf_counter()
        output = model.generate(torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        timings.append((output.shape[1] - len(ids), time.perf_counter() - started))
    return row("transformers generate (float32)", threads, timings[1:])


def llama_cpp_decoding(gguf, ids_list, tokens, threads):
    answer = llama_cpp_runtime.ask({"model": str(gguf), "threads": threads,
                                    "decode": {"prompts": ids_list, "tokens": tokens}})
    return row(f"llama.cpp {gguf.stem.rsplit('-', 1)[1]}", threads, [(d["tokens"], d["seconds"])
                                                                     for d in answer["decode"][1:]])


@torch.no_grad()
def agreement(model, files, ids_list):
    """Per file: the largest logit difference from transformers (as a share of its largest logit)
    and how often both put the same token first, on each prompt's last position."""
    reference = [model(torch.tensor([ids])).logits[0, -1] for ids in ids_list]
    found = {}
    for gguf in files:
        logits = llama_cpp_runtime.ask({"model": str(gguf), "threads": 1, "logits": ids_list})["logits"]
        pairs = [(torch.tensor(ours), theirs) for ours, theirs in zip(logits, reference)]
        found[gguf.name] = {
            "bytes": gguf.stat().st_size,
            "max_logit_difference_share": round(max(float((a - b).abs().max() / b.abs().max()) for a, b in pairs), 5),
            "top1_agreement": f"{sum(int(a.argmax()) == int(b.argmax()) for a, b in pairs)}/{len(pairs)}"}
    return found


def summarised(rounds):
    """Per engine and threads: the median tokens/s over the rounds with its interval, and its ratio
    to transformers at the same threads, round by round."""
    rows = []
    for key in rounds[0]:
        rates = [found[key]["tokens_per_s"] for found in rounds]
        reference = [found[("transformers generate (float32)", key[1])]["tokens_per_s"] for found in rounds]
        rows.append({"engine": key[0], "threads": key[1], "tokens_per_s": median_interval(rates),
                     "every_round": rates, "vs_transformers": paired_ratio(rates, reference)})
    return rows


def markdown(report):
    coverage = report["rows"][0]["tokens_per_s"]["coverage"]
    lines = [f"# GGUF decoding on the CPU ({report['machine']})", "", f"`{report['command']}`", "",
             f"Greedy decoding of exactly {report['tokens']} tokens after each of {report['prompts']} chat prompts "
             f"(the first, a warm-up, not counted), model `{report['model']}`; {report['rounds']} rounds, every "
             f"engine and thread count in each, in a rotated order. Medians, with their intervals of {coverage:.1%} "
             "coverage in brackets.", "",
             "| engine | threads | tokens/s | vs transformers, round by round |", "|---|---:|---:|---:|"]
    for r in report["rows"]:
        rate, ratio = r["tokens_per_s"], r["vs_transformers"]
        lines.append(f"| {r['engine']} | {r['threads']} | {rate['median']:.1f} ({rate['interval'][0]:.1f}–"
                     f"{rate['interval'][1]:.1f}) | {ratio['median']:.2f}× ({ratio['interval'][0]:.2f}–"
                     f"{ratio['interval'][1]:.2f}) |")
    lines += ["", "| file | bytes | largest logit difference (share of largest logit) | top-1 agreement |",
              "|---|---:|---:|---:|"]
    lines += [f"| {name} | {f['bytes']:,} | {f['max_logit_difference_share']} | {f['top1_agreement']} |"
              for name, f in report["files"].items()]
    lines += ["", f"Hugging Face model.safetensors: {report['safetensors_bytes']:,} bytes (float32)."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "results" / "sft_model")
    ap.add_argument("--export", type=Path, default=REPO / "results" / "export")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
    args = ap.parse_args()
    model, tokenizer = load_causal_lm(args.model)
    ids_list = prompts(tokenizer, args.prompts)
    files = [args.export / f"{args.model.name}-{kind}.gguf" for kind in ("f16", "q8_0")]
    runs = [(threads, lambda threads: transformers_decoding(model, ids_list, args.tokens, threads))
            for threads in args.threads]
    runs += [(threads, lambda threads, gguf=gguf: llama_cpp_decoding(gguf, ids_list, args.tokens, threads))
             for threads in args.threads for gguf in files]
    rounds = []
    for round_number, in_order in rotated_rounds(runs, args.repeats):
        found = [decode(threads) for threads, decode in in_order]
        rounds.append({(row["engine"], row["threads"]): row for row in found})
        print(round_number, [row["tokens_per_s"] for row in found], flush=True)
    report = {**provenance(), "model": args.model.name, "tokens": args.tokens, "prompts": len(ids_list),
              "rounds": args.repeats, "rows": summarised(rounds), "files": agreement(model, files, ids_list),
              "safetensors_bytes": (args.model / "model.safetensors").stat().st_size}
    save("gguf_decode", report, markdown(report))


if __name__ == "__main__":
    main()

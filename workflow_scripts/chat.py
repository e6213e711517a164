"""Chat with a model in the terminal, streaming its answers; or answer one prompt and exit.

    python -m workflow_scripts.chat results/sft_model
    python -m workflow_scripts.chat results/sft_model --prompt "北京是哪个国家的首都？" --temperature 0

Multi-turn: the whole conversation goes through the model's chat template each turn. Commands:
/reset starts over, /exit (or Ctrl-D) leaves. --temperature 0 decodes greedily; otherwise
top-p sampling with --seed for repeatable answers.
"""
import sys
from pathlib import Path

import torch

from workflow_scripts.lib.common import StageError, stage_cli
from workflow_scripts.lib.generation import DEFAULTS, chat_prompt_ids, generate_reply, sampling_settings
from workflow_scripts.lib.models import load_causal_lm


def load(model_dir: Path):
    model, tokenizer = load_causal_lm(model_dir)
    if not tokenizer.chat_template:
        raise StageError(f"{model_dir}: the tokenizer has no chat template; use a chat (SFT) model")
    return model, tokenizer


def answer(model, tokenizer, messages, settings, out):
    """Stream the assistant's reply to `out` and return it."""
    def emit(piece):
        out.write(piece)
        out.flush()
    reply = generate_reply(model, tokenizer, chat_prompt_ids(tokenizer, messages), settings, emit)
    out.write("\n")
    return reply.text


def add_arguments(ap):
    ap.add_argument("model", type=Path, help="a Hugging Face chat model directory, e.g. results/sft_model")
    ap.add_argument("--prompt", help="answer this once and exit")
    ap.add_argument("--system", help="a system message for the conversation")
    ap.add_argument("--temperature", type=float, default=DEFAULTS["temperature"], help="0 decodes greedily")
    ap.add_argument("--top-p", type=float, default=DEFAULTS["top_p"])
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULTS["max_tokens"])
    ap.add_argument("--repetition-penalty", type=float, default=DEFAULTS["repetition_penalty"])
    ap.add_argument("--seed", type=int, default=0)


def run(args, progress_stream):
    torch.manual_seed(args.seed)
    model, tokenizer = load(args.model)
    settings = sampling_settings(tokenizer, args.temperature, args.top_p, args.max_new_tokens,
                                 args.repetition_penalty)
    start = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        answer(model, tokenizer, start + [{"role": "user", "content": args.prompt}], settings, sys.stdout)
        return
    messages = list(start)
    print("/reset starts over, /exit leaves", file=sys.stderr)
    while True:
        try:
            line = input("你: ").strip()
        except EOFError:
            return
        if line == "/exit":
            return
        if line == "/reset":
            messages = list(start)
            continue
        if line:
            messages.append({"role": "user", "content": line})
            sys.stdout.write("助手: ")
            messages.append({"role": "assistant", "content": answer(model, tokenizer, messages, settings, sys.stdout)})


if __name__ == "__main__":
    stage_cli("chat", __doc__, add_arguments, run)

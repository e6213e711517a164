"""Chat with a model in the terminal, streaming its answers; or answer one prompt and exit.

    python -m workflow_scripts.serving.chat results/sft_model
    python -m workflow_scripts.serving.chat results/sft_model --prompt "北京是哪个国家的首都？" --temperature 0

Multi-turn: the whole conversation goes through the model's chat template each turn. Commands:
/reset starts over, /help lists the commands, /exit (or Ctrl-D, or Ctrl-C twice) leaves; Ctrl-C
during an answer stops it and keeps the conversation. --temperature 0 decodes greedily; otherwise
top-p sampling with --seed for repeatable answers. An answer is at most --max-new-tokens long and
never runs past the model's context.
"""
import sys
from pathlib import Path

import torch

from workflow_scripts.lib.serving.generation import DEFAULTS, chat_prompt_ids, generate_reply, sampling_settings
from workflow_scripts.lib.stage_cli import StageError, stage_cli
from workflow_scripts.lib.training.models import load_causal_lm


def load(model_dir: Path):
    model, tokenizer = load_causal_lm(model_dir)
    if not tokenizer.chat_template:
        raise StageError(f"{model_dir}: the tokenizer has no chat template; use a chat (SFT) model")
    return model, tokenizer


HELP = "命令：/reset 开始新的对话，/help 显示本说明，/exit 退出（或按 Ctrl-D）；回答时按 Ctrl-C 可中断回答。"
NO_ROOM = "（对话已超出模型的上下文长度，请输入 /reset 开始新的对话）"


def answer(model, tokenizer, messages, settings, out):
    """Stream the assistant's reply to `out` and return it: None when the conversation leaves no
    room in the model's context; what was said so far when Ctrl-C stops it."""
    ids = chat_prompt_ids(tokenizer, messages)
    room = model.config.max_position_embeddings - len(ids)
    if room < 1:
        out.write(NO_ROOM + "\n")
        return None
    pieces = []

    def emit(piece):
        pieces.append(piece)
        out.write(piece)
        out.flush()
    try:
        generate_reply(model, tokenizer, ids, {**settings, "max_new_tokens": min(settings["max_new_tokens"], room)},
                       emit)
    except KeyboardInterrupt:
        out.write("（已中断）")
    out.write("\n")
    return "".join(pieces)


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
    converse(model, tokenizer, settings, start)


def converse(model, tokenizer, settings, start):
    """The interactive loop: one line a turn, the commands of HELP."""
    messages = list(start)
    print(HELP, file=sys.stderr)
    interrupted = False
    while True:
        try:
            line = input("你: ").strip()
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            if interrupted:
                print()
                return
            print("\n（再按一次 Ctrl-C 退出）", file=sys.stderr)
            interrupted = True
            continue
        interrupted = False
        if line == "/exit":
            return
        if line == "/help":
            print(HELP)
        elif line == "/reset":
            messages = list(start)
            print("（已开始新的对话）")
        elif line:
            sys.stdout.write("助手: ")
            reply = answer(model, tokenizer, messages + [{"role": "user", "content": line}], settings, sys.stdout)
            if reply is not None:
                messages += [{"role": "user", "content": line}, {"role": "assistant", "content": reply}]


if __name__ == "__main__":
    stage_cli("chat", __doc__, add_arguments, run)

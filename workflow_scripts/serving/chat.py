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

from workflow_scripts.lib.serving.generation import (DEFAULTS, chat_prompt_ids, ends_turns, generate_reply,
                                                     sampling_settings)
from workflow_scripts.lib.serving.model_notes import answered_questions
from workflow_scripts.lib.stage_cli import StageError, stage_cli
from workflow_scripts.lib.training.models import load_causal_lm


def load(model_dir: Path):
    model, tokenizer = load_causal_lm(model_dir)
    if not tokenizer.chat_template:
        raise StageError(f"{model_dir}: the tokenizer has no chat template; use a chat (SFT) model")
    return model, tokenizer


HELP = "命令：/reset 开始新的对话，/help 显示本说明，/exit 退出（或按 Ctrl-D）；回答时按 Ctrl-C 可中断回答。"
BASE_MODEL = "（这是基础模型：它只会续写文本，不会回答问题；要聊天请用 SFT 模型，如 results/sft_model）"
NO_ROOM = "（对话已超出模型的上下文长度 {context} 个词元，请输入 /reset 开始新的对话）"
TOO_LONG = "（这条消息有 {tokens} 个词元，超出模型的上下文长度 {context}，没有发送；请缩短后再试）"


def model_line(model_dir, context):
    """Which model this is, and what it can be asked: it knows only its training text, shown by
    questions it answered right in its evaluation where there are some."""
    examples = answered_questions(model_dir)
    asked = f"；它答对过的问题，例如：{' '.join(examples)}" if examples else ""
    return f"模型：{model_dir}（上下文 {context} 个词元）。它只知道训练语料里的内容{asked}"


def answer(model, tokenizer, messages, settings, out):
    """Stream the assistant's reply to `out` and return it: None when the conversation leaves no
    room in the model's context (the message itself too long, or the conversation so far); what was
    said so far when Ctrl-C stops it."""
    ids = chat_prompt_ids(tokenizer, messages)
    context = model.config.max_position_embeddings
    room = context - len(ids)
    if room < 1:
        alone = chat_prompt_ids(tokenizer, [m for m in messages if m["role"] == "system"] + messages[-1:])
        too_long = len(alone) >= context
        out.write((TOO_LONG if too_long else NO_ROOM).format(tokens=len(alone), context=context) + "\n")
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
    if not ends_turns(model, tokenizer):
        print(BASE_MODEL, file=sys.stderr)
    if args.prompt is not None:
        answer(model, tokenizer, start + [{"role": "user", "content": args.prompt}], settings, sys.stdout)
        return
    print(model_line(args.model, model.config.max_position_embeddings), file=sys.stderr)
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

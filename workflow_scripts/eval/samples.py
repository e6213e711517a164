"""A model's answers to a fixed, editable prompt set, decoded greedily so reruns give the same text.

    python -m workflow_scripts.eval.samples --model results/sft_model --prompts demo/eval/prompts.txt \
        --style chat --max-new-tokens 64 --out samples.json --markdown samples.md

The prompt file holds one prompt per line; blank lines and lines starting with # are skipped.
--style chat sends each prompt as a user turn through the model's chat template (for SFT
models); --style completion continues the prompt as plain text after an end-of-text token, the
way a base model saw documents start in pretraining.

Whatever the style, every model with a chat template also answers each prompt as a chat turn,
and the JSON's `chat_format` (null without a template) says how well it keeps ChatML: the share
of answers that end with <|im_end|> within --max-new-tokens, the share that leak a role marker
(<|im_start|>, or a line naming a role) or open a new user turn, and the mean answer length in
characters.
"""
import re
import time
from pathlib import Path

import torch
from transformers import LogitsProcessorList

from workflow_scripts.lib.atomic_files import write_json, write_text
from workflow_scripts.lib.chatml import IM_END, IM_START
from workflow_scripts.lib.serving.generation import chat_prompt_ids, completion_prompt_ids
from workflow_scripts.lib.serving.utf8_guard import utf8_processors
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.models import load_causal_lm

# A line that names a turn's role, as a model that learnt the layout but not where a turn ends writes
# one (with or without the <|im_start|> before it).
ROLE_LINE = re.compile(r"(?m)^(?:<\|im_start\|>)?\s*(?:user|assistant|system|用户|助手)\s*[:：]?\s*$")


def read_prompts(path: Path):
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise StageError(f"{path}: cannot read the prompt file ({err})") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise StageError(f"{path}: no prompts (one per line; # starts a comment)")
    return prompts


def prompt_ids(tokenizer, prompt, style):
    if style == "chat":
        if not tokenizer.chat_template:
            raise StageError(f"{tokenizer.name_or_path}: no chat template; use --style completion for a base model")
        return chat_prompt_ids(tokenizer, [{"role": "user", "content": prompt}])
    return completion_prompt_ids(tokenizer, prompt)


@torch.no_grad()
def generated_ids(model, tokenizer, ids, settings, **options):
    ids = torch.tensor([ids], device=model.device)
    # The UTF-8 guard the chat CLI and the server decode with, so a sample reads as users will see it
    # (without it, 4 of the demo SFT model's 9 answers held a U+FFFD from byte tokens out of order).
    output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                            logits_processor=LogitsProcessorList(utf8_processors(tokenizer, model.config.vocab_size)),
                            **settings, **options)
    return output[0, ids.shape[1]:].tolist()


def chat_turn(model, tokenizer, prompt, settings):
    """The ids of the model's reply to `prompt` as a user turn, stopped at <|im_end|> or end of text."""
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    return generated_ids(model, tokenizer, prompt_ids(tokenizer, prompt, "chat"), settings,
                         eos_token_id=[end_of_turn, tokenizer.eos_token_id])


def answer(model, tokenizer, prompt, style, settings, turn):
    """The sample's text: the chat turn already generated, or the prompt continued as plain text."""
    ids = turn if style == "chat" else generated_ids(model, tokenizer, prompt_ids(tokenizer, prompt, style), settings)
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def chat_format(tokenizer, turns):
    """How the chat turns end: shares of replies ending with <|im_end|> within max_new_tokens, and
    of replies whose text before it leaks a role marker or opens a user turn; their mean length."""
    end_of_turn, start_of_turn = tokenizer.convert_tokens_to_ids([IM_END, IM_START])
    ended = leaked = characters = 0
    for ids in turns:
        turn = ids[:ids.index(end_of_turn)] if end_of_turn in ids else ids
        ended += end_of_turn in ids
        text = tokenizer.decode(turn, skip_special_tokens=False)
        leaked += start_of_turn in turn or bool(ROLE_LINE.search(text))
        characters += len(tokenizer.decode(turn, skip_special_tokens=True).strip())
    count = len(turns)
    return {"prompts": count, "ends_with_im_end": round(ended / count, 4),
            "leaks_role_marker": round(leaked / count, 4), "mean_answer_chars": round(characters / count, 1)}


def describe(style, settings):
    return (f"{style} prompts, greedy decoding, at most {settings['max_new_tokens']} new tokens, "
            f"repetition penalty {settings['repetition_penalty']}")


def markdown(model_name, style, answers, settings, formats):
    checks = "No chat template, so no chat-format checks." if formats is None else (
        f"As chat turns ({formats['prompts']} prompts): {formats['ends_with_im_end']:.0%} end with <|im_end|>, "
        f"{formats['leaks_role_marker']:.0%} leak a role marker, {formats['mean_answer_chars']} characters on "
        "average.")
    lines = [f"# Samples from {model_name}", "", describe(style, settings) + ".", "", checks, ""]
    for item in answers:
        lines += [f"**{item['prompt']}**", "", "> " + (item["answer"] or "(empty)").replace("\n", "\n> "), ""]
    return "\n".join(lines)


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--prompts", type=Path, required=True, help="one prompt per line")
    ap.add_argument("--style", choices=("chat", "completion"), required=True)
    add_settings(ap, "eval", "max_new_tokens", "repetition_penalty")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)


def run(args, progress_stream):
    started = time.perf_counter()
    prompts = read_prompts(args.prompts)
    model, tokenizer = load_causal_lm(args.model)
    settings = {"max_new_tokens": args.max_new_tokens, "repetition_penalty": args.repetition_penalty}
    # Every model with a chat template answers as a chat turn (for the format checks); a chat-style
    # sample is that turn. An existing base model (continued pretraining) may have no template.
    turns = [chat_turn(model, tokenizer, p, settings) if tokenizer.chat_template else None for p in prompts]
    answers = [{"prompt": p, "answer": answer(model, tokenizer, p, args.style, settings, turn)}
               for p, turn in zip(prompts, turns)]
    formats = chat_format(tokenizer, turns) if tokenizer.chat_template else None
    write_json(args.out, {"model": str(args.model), "style": args.style, "decoding": {"greedy": True, **settings},
                          "description": describe(args.style, settings), "samples": answers, "chat_format": formats,
                          "seconds": round(time.perf_counter() - started, 2)})
    write_text(args.markdown, markdown(args.model.name, args.style, answers, settings, formats))
    log.info("%d samples from %s", len(answers), args.model)


if __name__ == "__main__":
    stage_cli("samples", __doc__, add_arguments, run)

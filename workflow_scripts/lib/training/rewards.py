"""The rewards of GRPO (workflow_scripts/training/grpo.py): checked, not judged.

A reward is a function called on a batch of replies:

    def my_reward(replies, ended, **record):
        return [1.0 if reply.strip().endswith(answer) else 0.0 for reply, answer in zip(replies, record["answer"])]

`replies` are the sampled replies as text (special tokens kept, so a leaked role marker shows;
the final end-of-turn token left out), `ended` whether each ended its turn with `<|im_end|>`
(not cut at grpo.max_new_tokens), and `record` holds each field of the question file's records as
a list, one item per reply (`question`, `answer`, `candidates`, and any other field the file has).
It returns one float per reply. config grpo.rewards names the built-ins below or
`FILE.py:FUNCTION` of the user's own.
"""
import importlib.util
import unicodedata
from pathlib import Path

import opencc

from workflow_scripts.lib.stage_cli import StageError

ROLE_MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
TO_SIMPLIFIED = opencc.OpenCC("t2s")


def plain(text):
    """Text as compared: NFKC (full-width letters and digits), traditional characters simplified."""
    return TO_SIMPLIFIED.convert(unicodedata.normalize("NFKC", text))


def names_only(reply, answer, candidates=()):
    """Whether the reply names the answer and none of its rivals (`candidates`, which may hold the
    answer itself), all normalised: what the fact probe's `generated_accuracy` counts and what
    `exact_answer` pays for."""
    named = {c for c in {answer, *candidates} if plain(c) in plain(reply)}
    return named == {answer}


def exact_answer(replies, ended, answer, candidates=None, **record):
    """1 when the reply names the answer and none of its rivals (normalised), else 0."""
    return [float(names_only(reply, right, rivals or ())) for reply, right, rivals
            in zip(replies, answer, candidates or [()] * len(replies))]


def chat_format(replies, ended, **record):
    """1 when the reply ends its turn and no role marker leaks into it, else 0."""
    return [float(done and not any(marker in reply for marker in ROLE_MARKERS)) for reply, done in zip(replies, ended)]


def answer_length(max_chars):
    """1 up to max_chars characters, falling linearly to 0 at twice that: a short answer is the one asked for."""
    def answer_length(replies, ended, **record):
        return [min(1.0, max(0.0, 2.0 - len(reply.strip()) / max_chars)) for reply in replies]
    return answer_length


def user_reward(spec):
    """The function FUNCTION of FILE.py, named `FILE.py:FUNCTION`; a one-line error when either is missing."""
    path, _, name = spec.rpartition(":")
    if not Path(path).is_file():
        raise StageError(f"grpo.rewards: {spec}: no file {path}; give FILE.py:FUNCTION of an existing file")
    module_spec = importlib.util.spec_from_file_location(f"user_reward_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's code: any error is theirs to fix, named in one line
        raise StageError(f"grpo.rewards: {spec}: {path} fails to load ({type(err).__name__}: {err})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise StageError(f"grpo.rewards: {spec}: {path} has no function {name}")
    return function


def reward_functions(specs, max_answer_chars):
    """{name: function} for config grpo.rewards, in its order."""
    built_in = {"exact_answer": exact_answer, "chat_format": chat_format,
                "answer_length": answer_length(max_answer_chars)}
    return {spec: built_in[spec] if spec in built_in else user_reward(spec) for spec in specs}


def checked_rewards(name, function, replies, ended, record):
    """function's rewards for the replies, refused in one line unless one number per reply."""
    try:
        rewards = function(replies, ended, **record)
    except Exception as err:  # the user's code: any error is theirs to fix, named in one line
        raise StageError(f"grpo.rewards: {name} failed ({type(err).__name__}: {err})") from None
    if not isinstance(rewards, (list, tuple)) or len(rewards) != len(replies) or not all(
            isinstance(r, (int, float)) for r in rewards):
        raise StageError(f"grpo.rewards: {name} must return one number per reply ({len(replies)}), "
                         f"not {str(rewards)[:80]}")
    return [float(r) for r in rewards]

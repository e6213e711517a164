"""Generating replies: prompt ids, sampling settings, batches of rows streamed as text pieces, each
row with its own stop strings, max_tokens and cancellation.

The terminal chat and the HTTP server share it, so both give the same answer to the same prompt
with the same settings.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from workflow_scripts.lib.chatml import IM_END
from workflow_scripts.lib.serving.utf8_guard import utf8_processors

# Defaults of the terminal chat and of the server's requests that leave a setting out.
DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "repetition_penalty": 1.1}


@dataclass
class Reply:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string), "length" or "cancelled"
    completion_tokens: int


def chat_prompt_ids(tokenizer, messages):
    """Token ids of a conversation through the model's chat template, ready for the assistant's turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]


def ends_turns(model, tokenizer):
    """Whether the model stops at the end of a chat turn (SFT sets <|im_end|> in its generation_config);
    a base model does not: it continues text."""
    eos = model.generation_config.eos_token_id
    return tokenizer.convert_tokens_to_ids(IM_END) in (eos if isinstance(eos, list) else [eos])


def completion_prompt_ids(tokenizer, text):
    """Token ids of a plain text to continue, after the end-of-text id every training document starts after."""
    return [tokenizer.eos_token_id, *tokenizer.encode(text, add_special_tokens=False)]


def sampling_settings(tokenizer, temperature, top_p, max_tokens, repetition_penalty):
    """model.generate's keyword arguments: greedy at temperature 0, else top-p sampling."""
    settings = {"max_new_tokens": max_tokens, "repetition_penalty": repetition_penalty,
                "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                else tokenizer.eos_token_id}
    if temperature > 0:
        settings.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        settings.update(do_sample=False, temperature=None, top_p=None)
    return settings


@dataclass
class ReplyRequest:
    """One reply to generate: after `input_ids`, at most `max_tokens`, text pieces to `emit`."""
    input_ids: list
    max_tokens: int
    emit: Callable[[str], None]
    stop: Sequence[str] = ()
    cancelled: Callable[[], bool] = lambda: False


class ReplyStream:
    """One row's new tokens: passes on text as soon as it is final (not the half of a character
    split across byte-level tokens, not the start of what may become a stop string) and knows
    when and why the row ended."""

    def __init__(self, tokenizer, request: ReplyRequest, eos):
        self.tokenizer, self.request, self.eos = tokenizer, request, eos
        self.stop = [s for s in request.stop if s]
        self.ids, self.sent, self.text = [], 0, ""
        self.finish_reason = None

    def put(self, token):
        if self.finish_reason:  # generate pads rows that have ended
            return
        self.ids.append(token)
        if token in self.eos:
            self.finish_reason = "stop"
        else:
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            cut = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text, self.finish_reason = self.text[:cut], "stop"
            elif self.request.cancelled():
                self.finish_reason = "cancelled"
            elif len(self.ids) >= self.request.max_tokens:
                self.finish_reason = "length"
        if self.finish_reason:
            self.text = self.text.rstrip("\ufffd")
            self._send(len(self.text))
        elif not self.text.endswith("\ufffd"):
            self._send(len(self.text) - max((len(s) - 1 for s in self.stop), default=0))

    def _send(self, upto):
        if upto > self.sent:
            self.request.emit(self.text[self.sent:upto])
            self.sent = upto

    def reply(self):
        return Reply(self.text, self.finish_reason or "length", len(self.ids))


class BatchStream(BaseStreamer):
    """generate's streamer: each step's tokens, one per row, to that row's ReplyStream."""

    def __init__(self, rows):
        self.rows, self.prompt_pending = rows, True

    def put(self, value):
        if self.prompt_pending:  # generate passes the prompts first
            self.prompt_pending = False
            return
        for row, token in zip(self.rows, value.reshape(len(self.rows)).tolist()):
            row.put(token)

    def end(self):
        pass


class RowsEnded(StoppingCriteria):
    """Ends each row at its own stop string, max_tokens or cancellation (generate ends a row at the
    end-of-turn token itself, and stops when every row has ended)."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor([row.finish_reason is not None for row in self.rows], device=input_ids.device)


def left_padded(prompts, pad, device):
    """(input_ids, attention_mask) of token-id lists padded on the left, as generate wants a batch."""
    width = max(map(len, prompts))
    inputs = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return inputs, mask


def generate_replies(model, tokenizer, requests, settings):
    """Generate the replies to `requests` in one batch, streaming each row's text to its request's
    `emit`; `settings` are generate's, shared by every row."""
    eos = model.generation_config.eos_token_id
    rows = [ReplyStream(tokenizer, r, set(eos if isinstance(eos, list) else [eos])) for r in requests]
    inputs, mask = left_padded([r.input_ids for r in requests], settings["pad_token_id"], model.device)
    with torch.no_grad():
        model.generate(input_ids=inputs, attention_mask=mask, streamer=BatchStream(rows),
                       stopping_criteria=StoppingCriteriaList([RowsEnded(rows)]),
                       logits_processor=LogitsProcessorList(utf8_processors(tokenizer, model.config.vocab_size)),
                       **{**settings, "max_new_tokens": max(r.max_tokens for r in requests)})
    return [row.reply() for row in rows]


def generate_reply(model, tokenizer, input_ids, settings, emit):
    """The reply after `input_ids`, streamed to `emit`; ends at the model's end-of-turn token (its
    generation_config) or after settings' max_new_tokens."""
    request = ReplyRequest(input_ids, settings["max_new_tokens"], emit)
    return generate_replies(model, tokenizer, [request], settings)[0]

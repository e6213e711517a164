"""Generation that never shows a user "�": a byte-level BPE model can sample a token that starts a
character and then one that cannot finish it (the demo's SFT model did, sampling at 0.7), and the
decoded reply then holds U+FFFD. This logits processor lets each row choose only tokens whose bytes
continue valid UTF-8 from where the row stands, and the end of the reply only between characters.
"""
import functools

import torch
from transformers import LogitsProcessor
from transformers.convert_slow_tokenizer import bytes_to_unicode

BYTE_OF_CHAR = {char: byte for byte, char in bytes_to_unicode().items()}
# Where a row stands in a character: 0 between characters, 1-3 continuation bytes owed (80-BF), and
# the four lead bytes whose next byte has a narrower range (no overlong forms, no surrogates, nothing
# past U+10FFFF), as RFC 3629 lays out.
NARROW_SECOND = {0xE0: (4, 0xA0, 0xBF, 1), 0xED: (5, 0x80, 0x9F, 1), 0xF0: (6, 0x90, 0xBF, 2), 0xF4: (7, 0x80, 0x8F, 2)}
STATES = 8


def lead(byte):
    """The state after a byte read between characters, or None if no character starts with it."""
    if byte < 0x80:
        return 0
    if byte in NARROW_SECOND:
        return NARROW_SECOND[byte][0]
    for low, high, owed in ((0xC2, 0xDF, 1), (0xE1, 0xEF, 2), (0xF1, 0xF3, 3)):
        if low <= byte <= high:
            return owed
    return None


def step(state, byte):
    """The state after one byte, or None if the byte breaks UTF-8 there."""
    if state == 0:
        return lead(byte)
    if state <= 3:
        return state - 1 if 0x80 <= byte <= 0xBF else None
    low, high, owed = next((low, high, owed) for number, low, high, owed in NARROW_SECOND.values() if number == state)
    return owed if low <= byte <= high else None


def after(state, data):
    """The state after `data` read from `state`; None if data breaks UTF-8."""
    for byte in data:
        state = step(state, byte)
        if state is None:
            return None
    return state


@functools.lru_cache(maxsize=8)
def byte_table(tokenizer, vocab_size):
    """(allowed [state, token], next state [state, token]) for a byte-level BPE vocabulary; special
    tokens are allowed only between characters; None for a tokenizer that is not byte-level."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    allowed = torch.zeros(STATES, vocab_size, dtype=torch.bool)
    nxt = torch.zeros(STATES, vocab_size, dtype=torch.long)
    for token, token_id in tokenizer.get_vocab().items():
        if token_id >= vocab_size:
            continue
        if token_id in special:
            allowed[0, token_id] = True
            continue
        if any(char not in BYTE_OF_CHAR for char in token):
            return None
        data = bytes(BYTE_OF_CHAR[char] for char in token)
        for state in range(STATES):
            end = after(state, data)
            if end is not None:
                allowed[state, token_id], nxt[state, token_id] = True, end
    return allowed, nxt


class Utf8Continuation(LogitsProcessor):
    """Masks, per row, the tokens that would break the UTF-8 of the reply so far."""

    def __init__(self, table):
        self.allowed, self.next_state = table
        self.states = None  # generate calls once per new token, the first time on the prompts alone

    def __call__(self, input_ids, scores):
        if self.states is None:
            self.states = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        else:
            self.states = self.next_state.to(input_ids.device)[self.states, input_ids[:, -1]]
        mask = self.allowed.to(scores.device)[self.states]
        return scores.masked_fill(~mask[:, :scores.shape[1]], float("-inf"))


def utf8_processors(tokenizer, vocab_size):
    """generate's logits_processor list for one call: the guard, or nothing for other tokenizers."""
    table = byte_table(tokenizer, vocab_size)
    return [] if table is None else [Utf8Continuation(table)]

"""Continuous batching for the server: a reply joins the running batch between two decode steps and
leaves it when it ends, each row with its own sampling settings, seed, stop strings, max_tokens,
penalties and logprobs.

Written by hand because no library does it on these models: transformers' generate runs a fixed
batch to its end (the server's earlier scheduler, whose batches alternated 1 and 15 requests under
16 clients), and its continuous batching (generate_batch) takes temperature, top-k and top-p per
request but no repetition, presence or frequency penalty, no top logprobs and not this project's
UTF-8 guard. Here one KV cache (transformers' DynamicCache) holds the running rows, left-padded; a
newcomer's prompt is prefilled on its own and its cache padded into the batch's, and a row that
ends is dropped from it. What the penalties and the guard need of each row's tokens so far is kept
as tensors beside the cache, so choosing a step's tokens is a few batched operations, whatever
the mix of settings.
"""
import secrets
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from workflow_scripts.lib.serving.generation import ReplyRequest, ReplyStream, left_padded
from workflow_scripts.lib.serving.utf8_guard import byte_table


@dataclass
class RowSampling:
    """How one row chooses its tokens (OpenAI's request fields; repetition_penalty as HF's)."""
    temperature: float
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict = field(default_factory=dict)
    min_tokens: int = 0  # the end of turn is masked before this many tokens (ignore_eos)
    seed: int | None = None
    top_logprobs: int | None = None  # None: no logprobs; else each token's logprob and the top k
    prompt_logprobs: bool = False  # the logprobs of the prompt's tokens too (echo)


@dataclass
class TokenLogprob:
    token: int
    logprob: float | None  # None for a prompt's first token: nothing came before it
    top: list = field(default_factory=list)  # [(token, logprob)], likeliest first


class Row:
    """One reply being generated: its request, settings, text stream, random generator and logprobs."""

    def __init__(self, request: ReplyRequest, sampling: RowSampling, stream: ReplyStream, device):
        self.request, self.sampling, self.stream = request, sampling, stream
        seed = secrets.randbits(64) if sampling.seed is None else sampling.seed % 2**64
        self.generator = torch.Generator(device).manual_seed(seed)
        self.logprobs, self.prompt_logprobs = [], []

    def record_prompt_logprobs(self, logits):
        """logits [prompt length, vocab] at the prompt's own positions: each prompt token's logprob."""
        logprobs = torch.log_softmax(logits.float(), -1)
        ids = self.request.input_ids
        top = self.sampling.top_logprobs or 0
        self.prompt_logprobs = [TokenLogprob(ids[0], None)] + [
            token_logprob(logprobs[n], ids[n + 1], top) for n in range(len(ids) - 1)]


@dataclass
class History:
    """What the rows' tokens so far mean for their next choice, one row per line."""
    tokens: torch.Tensor  # [rows, width] long: prompt and reply, padded with the row's own first token
    counts: torch.Tensor  # [rows, vocab] float: times in the reply (presence and frequency penalties)
    utf8: torch.Tensor  # [rows] long: where each row stands in a UTF-8 character
    length: torch.Tensor  # [rows] long: tokens generated

    @classmethod
    def of_prompts(cls, prompts, vocab, device):
        width = max(map(len, prompts))
        tokens = torch.tensor([p + p[:1] * (width - len(p)) for p in prompts], device=device)
        zeros = torch.zeros(len(prompts), dtype=torch.long, device=device)
        return cls(tokens, torch.zeros(len(prompts), vocab, device=device), zeros, zeros.clone())

    def __add__(self, other):
        width = max(self.tokens.shape[1], other.tokens.shape[1])
        tokens = torch.cat([padded_with_first(self.tokens, width), padded_with_first(other.tokens, width)])
        return History(tokens, *(torch.cat([a, b]) for a, b in zip(self.fields()[1:], other.fields()[1:])))

    def select(self, index):
        return History(*(t[index] for t in self.fields()))

    def fields(self):
        return self.tokens, self.counts, self.utf8, self.length


def padded_with_first(tokens, width):
    """[rows, n] token ids widened to `width` with each row's first token (repeats change no penalty)."""
    return torch.cat([tokens, tokens[:, :1].expand(-1, width - tokens.shape[1])], 1)


def column(rows, name, device, dtype=torch.float):
    return torch.tensor([getattr(row.sampling, name) for row in rows], dtype=dtype, device=device)[:, None]


def top_p_filtered(probs, top_p):
    """Each row's probs with the tail outside its smallest set of mass top_p zeroed (the likeliest
    token always kept)."""
    ordered, order = torch.sort(probs, descending=True, dim=-1)
    outside = torch.cumsum(ordered, -1) - ordered > top_p
    return probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))


def token_logprob(logprobs, token, top):
    best = torch.topk(logprobs, top) if top else None
    return TokenLogprob(token, float(logprobs[token]),
                        list(zip(best.indices.tolist(), best.values.tolist())) if best is not None else [])


class ContinuousBatch:
    """The rows one model is generating. admit() prefills newcomers and merges them in; step()
    decodes one token for every row. Both return the rows that ended, no longer in the batch."""

    def __init__(self, model, tokenizer, max_rows):
        self.model, self.tokenizer, self.max_rows = model, tokenizer, max_rows
        self.device = model.device
        eos = model.generation_config.eos_token_id
        self.eos = sorted(set(eos if isinstance(eos, list) else [eos]))
        table = byte_table(tokenizer, model.config.vocab_size)
        # The guard's table of allowed tokens as a bias added to the scores (-inf where a token would
        # break the character): at 16 rows a masked_fill by the boolean table took 122 us, this 26 us.
        self.utf8_bias, self.utf8_next = (None, None) if table is None else (
            torch.zeros(table[0].shape, device=self.device).masked_fill(~table[0].to(self.device), -torch.inf),
            table[1].to(self.device))
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.fail()

    def fail(self):
        """Forget every row (after an error that left the batch in an unknown state)."""
        self.rows, self.cache, self.mask, self.last, self.history = [], None, None, None, None

    def room(self):
        return self.max_rows - len(self.rows)

    def row(self, request: ReplyRequest, sampling: RowSampling):
        return Row(request, sampling, ReplyStream(self.tokenizer, request, set(self.eos)), self.device)

    @torch.inference_mode()
    def admit(self, rows):
        """Prefill `rows` together and choose their first tokens; those that go on join the batch."""
        prompts = [row.request.input_ids for row in rows]
        inputs, mask = left_padded(prompts, self.pad, self.device)
        echo = any(row.sampling.prompt_logprobs for row in rows)
        out = self.model(input_ids=inputs, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                         use_cache=True, logits_to_keep=0 if echo else 1)
        for n, row in enumerate(rows):
            if row.sampling.prompt_logprobs:
                row.record_prompt_logprobs(out.logits[n, inputs.shape[1] - len(prompts[n]):])
        logits = out.logits[:, -1].float()
        history = History.of_prompts(prompts, logits.shape[-1], self.device)
        tokens = self.choose(rows, logits, history)
        for row, token in zip(rows, tokens.tolist()):
            if row.request.max_tokens == 0:  # echo's prompt logprobs alone
                row.stream.finish_reason = "length"
                row.logprobs.clear()
            else:
                row.stream.put(token)
        self.merge(rows, out.past_key_values, mask, tokens, history)
        return self.drop_ended()

    @torch.inference_mode()
    def step(self):
        """One token for every running row."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], 1)
        out = self.model(input_ids=self.last[:, None], attention_mask=self.mask,
                         position_ids=self.mask.sum(1, keepdim=True) - 1, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.last = self.choose(self.rows, out.logits[:, -1].float(), self.history)
        for row, token in zip(self.rows, self.last.tolist()):
            row.stream.put(token)
        return self.drop_ended()

    def choose(self, rows, logits, history):
        """Each row's next token from its raw logits [rows, vocab]; history moves on by it."""
        scores = self.scores(rows, logits, history)
        tokens = torch.argmax(scores, -1)
        sampled = [n for n, row in enumerate(rows) if row.sampling.temperature > 0]
        if sampled:
            chosen = [rows[n] for n in sampled]
            probs = torch.softmax(scores[sampled] / column(chosen, "temperature", self.device), -1)
            probs = top_p_filtered(probs, column(chosen, "top_p", self.device))
            for k, n in enumerate(sampled):
                tokens[n] = torch.multinomial(probs[k], 1, generator=rows[n].generator)[0]
        asking = [n for n, row in enumerate(rows) if row.sampling.top_logprobs is not None]
        if asking:
            logprobs = torch.log_softmax(logits[asking], -1)
            for k, n in enumerate(asking):
                rows[n].logprobs.append(token_logprob(logprobs[k], int(tokens[n]), rows[n].sampling.top_logprobs))
        self.advance(history, tokens)
        return tokens

    def scores(self, rows, logits, history):
        """Logits after each row's repetition, presence and frequency penalties, bias and masks."""
        scores = logits.clone()
        penalty = column(rows, "repetition_penalty", self.device)
        # On the tokens seen alone, as HF's processor: a where over [16, vocab] took 138 us a call.
        if (penalty != 1).any():
            seen = scores.gather(1, history.tokens)
            scores.scatter_(1, history.tokens, torch.where(seen < 0, seen * penalty, seen / penalty))
        presence, frequency = column(rows, "presence_penalty", self.device), column(rows, "frequency_penalty",
                                                                                     self.device)
        if presence.any() or frequency.any():
            scores -= presence * (history.counts > 0) + frequency * history.counts
        for n, row in enumerate(rows):
            for token, bias in row.sampling.logit_bias.items():
                scores[n, token] += bias
        early = history.length < column(rows, "min_tokens", self.device, torch.long)[:, 0]
        scores[early.nonzero()[:, 0][:, None], torch.tensor(self.eos, device=self.device)] = float("-inf")
        if self.utf8_bias is not None:
            scores += self.utf8_bias.index_select(0, history.utf8)[:, :scores.shape[1]]
        return scores

    def advance(self, history, tokens):
        every = torch.arange(len(tokens), device=self.device)
        history.tokens = torch.cat([history.tokens, tokens[:, None]], 1)
        history.counts[every, tokens] += 1
        history.length += 1
        if self.utf8_next is not None:
            history.utf8 = self.utf8_next[history.utf8, tokens]

    def merge(self, rows, cache, mask, last, history):
        """The prefilled rows' cache padded on the left to the batch's length and appended to it."""
        if self.cache is None:
            self.rows, self.cache, self.mask, self.last, self.history = list(rows), cache, mask, last, history
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for ours, theirs in zip(self.cache.layers, cache.layers):
            ours.keys = torch.cat([pad_left(ours.keys, width, 2), pad_left(theirs.keys, width, 2)])
            ours.values = torch.cat([pad_left(ours.values, width, 2), pad_left(theirs.values, width, 2)])
        self.mask = torch.cat([pad_left(self.mask, width, 1), pad_left(mask, width, 1)])
        self.rows, self.last = self.rows + list(rows), torch.cat([self.last, last])
        self.history = self.history + history

    def drop_ended(self):
        """The rows that ended, taken out of the batch; columns no row still needs are cut from its left."""
        ended = [row for row in self.rows if row.stream.finish_reason]
        keep = [n for n, row in enumerate(self.rows) if not row.stream.finish_reason]
        if not ended:
            return ended
        if not keep:
            self.fail()
            return ended
        index = torch.tensor(keep, device=self.device)
        start = int(self.mask[index].any(0).nonzero()[0])
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]
        self.mask, self.last, self.history = self.mask[index, start:], self.last[index], self.history.select(index)
        self.rows = [self.rows[n] for n in keep]
        return ended


def pad_left(tensor, width, dim):
    """`tensor` padded with zeros on the left of `dim` to `width`."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    return F.pad(tensor, [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0])

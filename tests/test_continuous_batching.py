"""lib.serving.continuous_batching on a small random LLaMA: rows that join a running batch at any step and
leave it when they end give what each gives alone, greedy (as transformers' generate) or seeded;
and lib.serving.serving_worker's joint prefill fails a request that breaks it alone."""
import asyncio

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LogitsProcessor

from workflow_scripts.lib.serving.continuous_batching import ContinuousBatch, RowSampling
from workflow_scripts.lib.serving.generation import ReplyRequest, generate_replies, sampling_settings
from workflow_scripts.lib.serving.serving_worker import Choice, Generation, Worker
from workflow_scripts.lib.serving.utf8_guard import utf8_processors

TEXTS = ["青松市位于景临省", "长天河", "一座历史悠久的城市，", "景", "Its river: 长天河。青松"]


@pytest.fixture(scope="module")
def model_and_tokenizer(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    torch.manual_seed(0)
    # A wide initialisation makes the logits peaked, so that greedy choices do not hang on the last
    # bits of a float that batching may change.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         initializer_range=0.5, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def prompts(tokenizer):
    return [[tokenizer.eos_token_id, *tokenizer.encode(text, add_special_tokens=False)] for text in TEXTS]


def run_staggered(batch, rows, joins):
    """Admit rows[n] before step joins[n]; step until every row has ended."""
    step = 0
    while batch.rows or any(j >= step for j in joins):
        for row, join in zip(rows, joins):
            if join == step:
                batch.admit([row])
        if batch.rows:
            batch.step()
        step += 1


def test_rows_joining_at_any_step_get_what_generate_gives_each_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = prompts(tokenizer)
    lengths = [12, 5, 20, 9, 15]
    alone = [generate_replies(model, tokenizer, [ReplyRequest(p, n, lambda piece: None)],
                              sampling_settings(tokenizer, 0, 1.0, n, 1.1))[0] for p, n in zip(ids, lengths)]
    batch = ContinuousBatch(model, tokenizer, max_rows=4)
    rows = [batch.row(ReplyRequest(p, n, lambda piece: None), RowSampling(0, repetition_penalty=1.1))
            for p, n in zip(ids, lengths)]
    run_staggered(batch, rows, [0, 0, 3, 4, 11])
    together = [row.stream.reply() for row in rows]
    assert [(r.text, r.completion_tokens, r.finish_reason) for r in together] == \
        [(r.text, r.completion_tokens, r.finish_reason) for r in alone]
    assert batch.rows == [] and batch.cache is None


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's definition, written here apart from the batch's: each token's logit less
    presence * (seen in the reply) + frequency * (times in the reply)."""

    def __init__(self, prompt_length, presence, frequency):
        self.prompt_length, self.presence, self.frequency = prompt_length, presence, frequency

    def __call__(self, input_ids, scores):
        reply = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores).scatter_add_(1, reply, torch.ones_like(reply, dtype=scores.dtype))
        return scores - self.presence * (counts > 0) - self.frequency * counts


@pytest.mark.parametrize("presence, frequency", [(1.0, 2.0), (2.0, -1.0)])
def test_presence_and_frequency_penalties_choose_the_tokens_openai_defines(model_and_tokenizer, presence,
                                                                             frequency):
    model, tokenizer = model_and_tokenizer
    ids = prompts(tokenizer)
    batch = ContinuousBatch(model, tokenizer, max_rows=8)
    rows = [batch.row(ReplyRequest(p, 24, lambda piece: None), RowSampling(0, presence_penalty=presence,
                                                                             frequency_penalty=frequency,
                                                                             min_tokens=24))
            for p in ids]
    plain = [batch.row(ReplyRequest(p, 24, lambda piece: None), RowSampling(0, min_tokens=24)) for p in ids]
    run_staggered(batch, rows + plain, [0, 0, 2, 5, 7] + [0] * len(ids))

    def reference(prompt, processors):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                             logits_processor=[*processors, *utf8_processors(tokenizer, model.config.vocab_size)],
                             pad_token_id=tokenizer.eos_token_id)
        return out[0, len(prompt):].tolist()
    assert [row.stream.ids for row in rows] == \
        [reference(p, [OpenAIPenalties(len(p), presence, frequency)]) for p in ids]
    # The penalties steered: without them the same rows choose other tokens.
    assert [row.stream.ids for row in rows] != [row.stream.ids for row in plain]
    assert [row.stream.ids for row in plain] == [reference(p, []) for p in ids]


def test_a_seeded_row_samples_the_same_tokens_alone_and_among_others(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = prompts(tokenizer)
    sampling = RowSampling(1.0, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5, seed=2**64 - 1,
                           min_tokens=16, top_logprobs=2)

    def seeded(batch):
        return batch.row(ReplyRequest(ids[0], 16, lambda piece: None), sampling)
    by_itself = ContinuousBatch(model, tokenizer, 8)
    alone = seeded(by_itself)
    run_staggered(by_itself, [alone], [0])
    crowded = ContinuousBatch(model, tokenizer, 8)
    others = [crowded.row(ReplyRequest(p, 10, lambda piece: None), RowSampling(0.8)) for p in ids[1:]]
    among = seeded(crowded)
    run_staggered(crowded, [*others[:2], among, *others[2:]], [0, 1, 2, 2, 5])
    assert [e.token for e in among.logprobs] == [e.token for e in alone.logprobs]
    assert among.stream.reply().completion_tokens == 16  # min_tokens: no end of text before 16
    assert all(e.top[0][1] >= e.top[1][1] and e.logprob <= 0 for e in among.logprobs)


def test_a_request_that_breaks_the_joint_prefill_fails_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = prompts(tokenizer)[0]
    loop = asyncio.new_event_loop()
    worker = Worker({"m": (model, tokenizer)}, max_queue=4, max_rows=4, on_failure=print)

    def generation(last_token):  # a token id past the vocabulary, as a validation slip would let in
        return Generation("m", [Choice(0, [*prompt, last_token], 6, RowSampling(0))], [], False, len(prompt), loop)

    async def outcomes(*generations):
        return await asyncio.gather(*(outcome(generation) for generation in generations))

    async def outcome(generation):
        while (event := await asyncio.wait_for(generation.events.get(), 60))[0] == "text":
            pass
        return event

    broken, sound, alone = generation(len(tokenizer) + 5), generation(prompt[1]), generation(prompt[1])
    with worker.ready:  # both wait when the worker looks, so they are prefilled together
        worker.submit(broken)
        worker.submit(sound)
    failed, answered = loop.run_until_complete(outcomes(broken, sound))
    worker.submit(alone)
    assert failed[0] == "error" and "index out of range" in failed[2]
    assert answered[0] == "done" and answered[2] == loop.run_until_complete(outcomes(alone))[0][2]
    assert worker.counts["failed"] == 1 and worker.counts["finished"] == 2

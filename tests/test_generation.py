"""lib.serving.generation's streamed rows: whole characters only, stop strings cut and never shown in part,
each row's end and its reason."""
import pytest
from transformers import AutoTokenizer

from workflow_scripts.lib.serving.generation import ReplyStream, ReplyRequest

TEXT = "青松市位于景临省，是一座历史悠久的城市。Its river: 长天河。"


def feed(tokenizer, text, stop=(), max_tokens=10 ** 6):
    """Pass `text`'s tokens, then the end of text, to a row as generate does, until the row ends."""
    pieces = []
    row = ReplyStream(tokenizer, ReplyRequest([], max_tokens, pieces.append, stop), {tokenizer.eos_token_id})
    for token in [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]:
        if row.finish_reason:
            break
        row.put(token)
    return pieces, row


@pytest.fixture(scope="module")
def tokenizer(trained):
    return AutoTokenizer.from_pretrained(trained[0])


def test_pieces_are_whole_characters_and_join_to_the_text(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some characters span several byte tokens
    pieces, row = feed(tokenizer, TEXT)
    assert "".join(pieces) == TEXT == row.reply().text
    assert not any("\ufffd" in piece for piece in pieces)
    assert row.reply().finish_reason == "stop" and row.reply().completion_tokens == len(ids) + 1


@pytest.mark.parametrize("stop", ["景临省", "river", "。Its"])
def test_a_stop_string_ends_the_reply_before_it(tokenizer, stop):
    pieces, row = feed(tokenizer, TEXT, [stop, "不会出现"])
    assert "".join(pieces) == TEXT[:TEXT.index(stop)] == row.reply().text
    assert row.reply().completion_tokens < len(tokenizer.encode(TEXT, add_special_tokens=False))
    assert not any(stop[:2] in piece for piece in pieces)


def test_text_that_only_starts_like_a_stop_string_is_sent(tokenizer):
    pieces, row = feed(tokenizer, TEXT, ["景临州"])
    assert "".join(pieces) == TEXT


def test_a_row_ends_at_its_max_tokens(tokenizer):
    _, row = feed(tokenizer, TEXT, max_tokens=5)
    reply = row.reply()
    assert (reply.finish_reason, reply.completion_tokens) == ("length", 5)
    assert TEXT.startswith(reply.text)

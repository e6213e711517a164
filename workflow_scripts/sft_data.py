"""Chat data for SFT: read Alpaca, ShareGPT and messages files, and encode them with loss masks.

Formats, detected per file from its first record:
  * Alpaca: a JSON array (or JSONL) of {instruction, input, output}, optionally with `system`;
  * ShareGPT: {conversations: [{from: human|user|gpt|assistant|system, value}]};
  * messages: {messages: [{role: system|user|assistant, content}]}.
A malformed record raises one line naming the file, the line (JSONL) or record (JSON array) and
the field; with skip_bad the record is counted instead. A final user turn with no answer is
dropped (and counted), as real ShareGPT dumps end some conversations that way. Encoding goes through the tokenizer's
chat template, and labels are the token ids inside assistant turns (everything rendered between
`{% generation %}` and `{% endgeneration %}`: the answer and its <|im_end|>), -100 elsewhere.

Truncation keeps at least one trained token: while a conversation is longer than max_len and
has more than one exchange, its oldest user/assistant exchange is dropped (a system message
stays); a single exchange still too long keeps the end of its prompt and the start of its answer.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

from workflow_scripts.common import IGNORE_INDEX, StageError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "system": "system"}


class BadRecord(StageError):
    pass


@dataclass
class ReadStats:
    records: int = 0
    skipped: int = 0
    trimmed_unanswered: int = 0
    errors: list = field(default_factory=list)


def raw_records(path: Path):
    """(where, record) pairs: 'line N' for JSONL, 'record N' for a JSON array."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise StageError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); "
                             "fix or remove the file") from None
        yield from ((f"record {n}", record) for n, record in enumerate(records, start=1))
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"line {n}", json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {n}", BadRecord(f"not valid JSON ({err.msg})")


def detect_format(record):
    if isinstance(record, dict):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
        if "instruction" in record or "output" in record:
            return "alpaca"
    raise BadRecord("is none of Alpaca {instruction, input, output}, ShareGPT {conversations} or {messages}")


def text_field(record, key, required=True):
    value = record.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRecord(f"field {key!r} must be a non-empty string")
    return value


def from_alpaca(record):
    prompt = text_field(record, "instruction")
    extra = text_field(record, "input", required=False)
    messages = [{"role": "system", "content": text_field(record, "system")}] if record.get("system") else []
    return messages + [{"role": "user", "content": f"{prompt}\n\n{extra}" if extra.strip() else prompt},
                       {"role": "assistant", "content": text_field(record, "output")}]


def from_turns(turns, list_key, role_key, content_key, roles):
    if not isinstance(turns, list) or not turns:
        raise BadRecord(f"field {list_key!r} must be a non-empty list")
    messages = []
    for n, turn in enumerate(turns):
        where = f"{list_key}[{n}]"
        if not isinstance(turn, dict) or turn.get(role_key) not in roles:
            raise BadRecord(f"field {where}.{role_key} must be one of {sorted(roles)}")
        content = turn.get(content_key)
        if not isinstance(content, str):
            raise BadRecord(f"field {where}.{content_key} must be a string")
        messages.append({"role": roles[turn[role_key]], "content": content})
    return messages


def without_unanswered_question(messages):
    """A conversation that ends on a user turn loses that turn: it has no answer to train on."""
    if len(messages) > 2 and messages[-1]["role"] == "user":
        return messages[:-1], True
    return messages, False


def check_turn_order(messages, list_key):
    body = messages[1:] if messages[0]["role"] == "system" else messages
    expected = ["user", "assistant"] * (len(body) // 2)
    if [m["role"] for m in body] != expected or not body:
        raise BadRecord(f"field {list_key!r}: turns must alternate user, assistant (after an optional system "
                        "message) and end with the assistant")
    if not any(m["content"].strip() for m in body if m["role"] == "assistant"):
        raise BadRecord(f"field {list_key!r}: every assistant turn is empty, nothing to train on")
    return messages


CONVERTERS = {
    "alpaca": lambda r: (from_alpaca(r), "record"),
    "sharegpt": lambda r: (from_turns(r["conversations"], "conversations", "from", "value", SHAREGPT_ROLES),
                           "conversations"),
    "messages": lambda r: (from_turns(r["messages"], "messages", "role", "content",
                                      {"system": "system", "user": "user", "assistant": "assistant"}), "messages"),
}


def converted_records(path: Path, convert, skip_bad, stats, setting="skip_bad_records"):
    """Yield convert(record) for each record of a JSON or JSONL file. A bad record stops with one
    line naming the file, the record and the field, or with skip_bad is counted in `stats`."""
    for where, record in raw_records(path):
        try:
            if isinstance(record, BadRecord):
                raise record
            value = convert(record)
        except (BadRecord, KeyError, AttributeError, TypeError) as err:
            if not skip_bad:
                raise StageError(f"{path}: {where}: {err}; fix the record or set {setting}") from None
            stats.skipped += 1
            stats.errors.append(f"{where}: {err}")
            continue
        stats.records += 1
        yield value


def read_conversations(path: Path, skip_bad=False, stats=None):
    """Yield each record of a chat file as a list of {role, content} messages."""
    stats = stats if stats is not None else ReadStats()
    file_format = []  # detected from the first good record

    def convert(record):
        if not file_format:
            file_format.append(detect_format(record))
        messages, list_key = CONVERTERS[file_format[0]](record)
        messages, trimmed = without_unanswered_question(messages)
        return check_turn_order(messages, list_key), trimmed

    for messages, trimmed in converted_records(path, convert, skip_bad, stats):
        stats.trimmed_unanswered += trimmed
        yield messages


def encode(tokenizer, messages, max_len):
    """(input_ids, labels) of one conversation, truncated to max_len; labels are -100 outside answers."""
    while True:
        rendered = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = rendered["input_ids"], rendered["assistant_masks"]
        exchanges_start = 1 if messages[0]["role"] == "system" else 0
        if len(ids) <= max_len or len(messages) - exchanges_start <= 2:
            break
        messages = messages[:exchanges_start] + messages[exchanges_start + 2:]
    if len(ids) > max_len:
        ids, mask = cut_single_exchange(ids, mask, max_len)
    return ids, [token if trained else IGNORE_INDEX for token, trained in zip(ids, mask)]


def cut_single_exchange(ids, mask, max_len):
    """Keep the end of the prompt and the start of the answer, half the budget each at most."""
    answer_start = mask.index(1)
    prompt, answer = ids[:answer_start], ids[answer_start:]
    keep_answer = min(len(answer), max(max_len // 2, max_len - len(prompt)))
    keep_prompt = max_len - keep_answer
    return (prompt[len(prompt) - keep_prompt:] + answer[:keep_answer],
            [0] * keep_prompt + mask[answer_start:answer_start + keep_answer])

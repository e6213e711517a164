"""Chat data: read SFT files and preference pairs in the common layouts, and encode chats with loss masks.

SFT layouts, detected per file from its first record:
  * Alpaca: a JSON array (or JSONL) of {instruction, input, output}, optionally with `system`;
  * ShareGPT: {conversations: [{from: human|user|gpt|assistant|system, value}]};
  * messages: {messages: [{role: system|user|assistant, content}]}.
Any other layout is declared with LLaMA-Factory's dataset_info.json convention (`formatting`,
`columns`, `tags`; see `Layout`), so Firefly, BELLE or COIG files load as they are. Preference
pairs are {conversations, chosen, rejected} (the layouts of ../shared/data/dpo/) or trl's
conversational {prompt, chosen, rejected}. GRPO's questions are {question, answer} (other field
names through `columns`), optionally with `system` and `candidates`.
A malformed record raises one line naming the file, the line (JSONL) or record (JSON array) and
the field; with skip_bad the record is counted instead. A file in no known layout is one line
listing the keys its first record has. A final user turn with no answer is
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

from workflow_scripts.lib.stage_cli import StageError
from workflow_scripts.lib.user_files import folder_contents, read_utf8

# The label of a token that is not trained on (PyTorch cross-entropy's ignore_index): prompts,
# padding, and what a loss mask leaves out.
IGNORE_INDEX = -100

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                  "history": "history"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"}
MESSAGE_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
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
    """(where, record) pairs: 'line N' for JSONL, 'record N' for a JSON array, 'row N' for Parquet
    (the Hugging Face Hub's format for datasets)."""
    if path.is_dir():
        raise StageError(f"{path}: is a folder, not a chat file (it holds {folder_contents(path)}); name the file "
                         "inside an archive with member: in config")
    if path.suffix == ".parquet":
        yield from parquet_records(path)
        return
    text = read_utf8(path)
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


def parquet_records(path: Path):
    import pyarrow.lib
    import pyarrow.parquet as pq
    try:
        table = pq.ParquetFile(path)
    except pyarrow.lib.ArrowException as err:
        raise StageError(f"{path}: not a readable Parquet file ({err}); fix or remove the file") from None
    rows = (row for batch in table.iter_batches(batch_size=1024) for row in batch.to_pylist())
    yield from ((f"row {n}", row) for n, row in enumerate(rows, start=1))


def detect_format(path, record):
    if isinstance(record, dict):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
        if "instruction" in record or "output" in record:
            return "alpaca"
    found = f"keys {sorted(record)}" if isinstance(record, dict) else f"a JSON {type(record).__name__}"
    raise StageError(f"{path}: layout not recognised: the first record has {found}, not those of Alpaca "
                     "{instruction, input, output}, ShareGPT {conversations} or {messages}; declare its layout "
                     "(formatting, columns, tags) beside the file in config")


def text_field(record, key, required=True):
    value = record.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRecord(f"field {key!r} must be a non-empty string")
    return value


def system_message(record, key):
    """The record's system message under `key`, as a one-message list; [] when it has none."""
    return [{"role": "system", "content": text_field(record, key)}] if record.get(key) else []


def from_alpaca(record, columns=ALPACA_COLUMNS):
    """Earlier exchanges (`history`, [question, answer] pairs), then the prompt with its input appended."""
    messages = system_message(record, columns["system"])
    history = record.get(columns["history"]) or []
    if not isinstance(history, list):
        raise BadRecord(f"field {columns['history']!r} must be a list of [question, answer] pairs")
    for n, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise BadRecord(f"field {columns['history']}[{n}] must be a [question, answer] pair of strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = text_field(record, columns["prompt"])
    extra = text_field(record, columns["query"], required=False)
    return messages + [{"role": "user", "content": f"{prompt}\n\n{extra}" if extra.strip() else prompt},
                       {"role": "assistant", "content": text_field(record, columns["response"])}]


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


def from_exchanges(exchanges, list_key, user_key, assistant_key):
    """A list of {user_key: question, assistant_key: answer} exchanges (Firefly's `conversation`)."""
    if not isinstance(exchanges, list) or not exchanges:
        raise BadRecord(f"field {list_key!r} must be a non-empty list")
    messages = []
    for n, exchange in enumerate(exchanges):
        for key, role in ((user_key, "user"), (assistant_key, "assistant")):
            content = exchange.get(key) if isinstance(exchange, dict) else None
            if not isinstance(content, str):
                raise BadRecord(f"field {list_key}[{n}].{key} must be a string")
            messages.append({"role": role, "content": content})
    return messages


@dataclass(frozen=True)
class Layout:
    """A layout declared in config with the keys of LLaMA-Factory's dataset_info.json: `formatting`
    alpaca or sharegpt; `columns` naming the record's fields (alpaca: prompt, query, response,
    system, history; sharegpt: messages, system); `tags` naming the turn keys and role values
    (role_tag, content_tag, user_tag, assistant_tag, system_tag). An empty role_tag means each item
    of the messages list is one exchange, {user_tag: question, assistant_tag: answer} (Firefly)."""
    formatting: str
    columns: dict
    tags: dict

    @classmethod
    def from_config(cls, spec):
        defaults = ALPACA_COLUMNS if spec["formatting"] == "alpaca" else SHAREGPT_COLUMNS
        return cls(spec["formatting"], {**defaults, **spec.get("columns", {})},
                   {**SHAREGPT_TAGS, **spec.get("tags", {})})

    def convert(self, record):
        if not isinstance(record, dict):
            raise BadRecord("is not a JSON object")
        if self.formatting == "alpaca":
            return from_alpaca(record, self.columns), "record"
        key, tags = self.columns["messages"], self.tags
        system = system_message(record, self.columns["system"])
        if not tags["role_tag"]:
            return system + from_exchanges(record.get(key), key, tags["user_tag"], tags["assistant_tag"]), key
        roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system"}
        return system + from_turns(record.get(key), key, tags["role_tag"], tags["content_tag"], roles), key


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
    "messages": lambda r: (from_turns(r["messages"], "messages", "role", "content", MESSAGE_ROLES), "messages"),
}


def converted_records(path: Path, convert, skip_bad, stats, setting="skip_bad_records"):
    """Yield convert(record) for each record of a JSON or JSONL file. A bad record stops with one
    line naming the file, the record and the field, or with skip_bad is counted in `stats`; a file
    that yields no good record stops too."""
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
    if not stats.records:
        why = f"all {stats.skipped} records are bad (first: {stats.errors[0]})" if stats.skipped else "no records"
        raise StageError(f"{path}: {why}; fix the file or remove it from config")


def read_conversations(path: Path, skip_bad=False, stats=None, layout=None):
    """Yield each record of a chat file as a list of {role, content} messages, in the declared
    `layout` (a Layout) or the one detected from the first record."""
    stats = stats if stats is not None else ReadStats()
    converters = [layout.convert] if layout else []

    def convert(record):
        if not converters:
            converters.append(CONVERTERS[detect_format(path, record)])
        messages, list_key = converters[0](record)
        messages, trimmed = without_unanswered_question(messages)
        return check_turn_order(messages, list_key), trimmed

    for messages, trimmed in converted_records(path, convert, skip_bad, stats):
        stats.trimmed_unanswered += trimmed
        yield messages


def answer_text(record, key):
    """A preference answer: a string, a {from, value} turn or a one-message [{role, content}] list."""
    value = record.get(key)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(f"field {key!r} must be a non-empty string or a {{from, value}} turn")
    return value


def to_pair(record):
    """A preference record as trl's conversational pair {prompt, chosen, rejected}."""
    if not isinstance(record, dict) or not ("conversations" in record or "prompt" in record):
        raise BadRecord("has no 'conversations' (or trl 'prompt') list")
    if "conversations" in record:
        key, prompt = "conversations", from_turns(record["conversations"], "conversations", "from", "value",
                                                  SHAREGPT_ROLES)
    else:
        key, prompt = "prompt", from_turns(record["prompt"], "prompt", "role", "content", MESSAGE_ROLES)
    if prompt[-1]["role"] != "user":
        raise BadRecord(f"field {key!r} must end with the user's turn that chosen and rejected answer")
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": answer_text(record, "chosen")}],
            "rejected": [{"role": "assistant", "content": answer_text(record, "rejected")}]}


def answer_value(record, key):
    """A verifiable answer: a non-empty string, or a number (a math set's), as text."""
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(f"has no answer: field {key!r} must be a non-empty string or a number")
    return value.strip()


def to_question(record, columns=None):
    """A GRPO question as trl's conversational prompt {prompt, question, answer[, candidates]};
    `columns` maps question and answer to the file's field names."""
    if not isinstance(record, dict):
        raise BadRecord("must be a JSON object")
    names = {"question": "question", "answer": "answer", **(columns or {})}
    question = text_field(record, names["question"])
    question_record = {"prompt": system_message(record, "system") + [{"role": "user", "content": question}],
                       "question": question, "answer": answer_value(record, names["answer"])}
    candidates = record.get("candidates")
    if candidates is not None:
        if not isinstance(candidates, list) or not all(isinstance(c, str) and c for c in candidates):
            raise BadRecord("field 'candidates' must be a list of non-empty strings")
        question_record["candidates"] = candidates
    return question_record


def weighted(samples, weight, rng):
    """Each sample floor(weight) times, plus a seeded share weight - floor(weight) of them once more."""
    whole, share = int(weight), weight - int(weight)
    extra = [s for s in samples if rng.random() < share]
    return [s for _ in range(whole) for s in samples] + extra


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

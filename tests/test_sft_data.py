"""SFT data: the three formats, errors naming file/line/field, and labels exactly on assistant tokens."""
import json

import pytest
from transformers import AutoTokenizer

from conftest import SHARED_DATA
from workflow_scripts.lib.stage_cli import StageError
from workflow_scripts.lib.training.sft_data import IGNORE_INDEX
from workflow_scripts.lib.training.sft_data import Layout, ReadStats, encode, read_conversations

SFT = SHARED_DATA / "sft"
TURNS = [("user", "北京是哪个国家的首都？"), ("assistant", "北京是中国的首都。"),
         ("user", "它有多少人口？"), ("assistant", "大约两千万人。")]


def write(tmp_path, name, records, jsonl=True):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) if jsonl
                    else json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def as_format(fmt, turns, system=None):
    if fmt == "alpaca":
        return {"instruction": turns[0][1], "input": "", "output": turns[1][1],
                **({"system": system} if system else {})}
    if fmt == "sharegpt":
        head = [{"from": "system", "value": system}] if system else []
        return {"conversations": head + [{"from": {"user": "human", "assistant": "gpt"}[r], "value": c}
                                         for r, c in turns]}
    head = [{"role": "system", "content": system}] if system else []
    return {"messages": head + [{"role": r, "content": c} for r, c in turns]}


@pytest.fixture(scope="module")
def tokenizer(trained):
    return AutoTokenizer.from_pretrained(trained[0])


def expected_labels(tokenizer, messages):
    """Labels built by hand from the documented ChatML layout, segment by segment."""
    ids, labels = [], []
    for message in messages:
        for text, trained in ((f"<|im_start|>{message['role']}\n", False),
                              (f"{message['content']}<|im_end|>", message["role"] == "assistant"), ("\n", False)):
            piece = tokenizer.encode(text, add_special_tokens=False)
            ids += piece
            labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return ids, labels


# Alpaca records are single-turn by definition.
CASES = [("alpaca", 2), ("sharegpt", 2), ("sharegpt", 4), ("messages", 2), ("messages", 4)]


@pytest.mark.parametrize("fmt, n_turns", CASES, ids=[f"{f}-{n // 2}-exchange" for f, n in CASES])
@pytest.mark.parametrize("system", [None, "你是一个乐于助人的助手。"], ids=["no-system", "system"])
def test_labels_are_exactly_the_assistant_tokens(tmp_path, tokenizer, fmt, n_turns, system):
    turns = TURNS[:n_turns]
    (messages,) = read_conversations(write(tmp_path, "d.jsonl", [as_format(fmt, turns, system)]))
    ids, labels = encode(tokenizer, messages, max_len=4096)
    want_ids, want_labels = expected_labels(tokenizer, messages)
    assert ids == want_ids and labels == want_labels
    trained = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    answers = "".join(f"{c}<|im_end|>" for r, c in turns if r == "assistant")
    assert tokenizer.decode(trained) == answers


def test_alpaca_input_joins_the_instruction(tmp_path):
    path = write(tmp_path, "a.json", [{"instruction": "翻译成英文", "input": "你好", "output": "Hello"}], jsonl=False)
    assert list(read_conversations(path)) == [[{"role": "user", "content": "翻译成英文\n\n你好"},
                                               {"role": "assistant", "content": "Hello"}]]


@pytest.mark.parametrize("fmt, record, message", [
    ("alpaca", {"instruction": "问", "input": "", "output": ""}, "line 2: field 'output' must be a non-empty string"),
    ("alpaca", {"text": "plain"}, "line 2: field 'instruction' must be a non-empty string"),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]},
     "line 2: field conversations[0].from must be one of"),
    ("messages", {"messages": [{"role": "assistant", "content": "先答"}, {"role": "user", "content": "后问"}]},
     "line 2: field 'messages': turns must alternate user, assistant"),
    ("messages", {"messages": [{"role": "user", "content": 3}]}, "line 2: field messages[0].content must be a string"),
])
def test_bad_records_name_the_file_line_and_field(tmp_path, fmt, record, message):
    path = write(tmp_path, "bad.jsonl", [as_format(fmt, TURNS[:2]), record])
    with pytest.raises(StageError) as err:
        list(read_conversations(path))
    assert str(err.value).startswith(f"{path}: {message}")
    stats = ReadStats()
    assert len(list(read_conversations(path, skip_bad=True, stats=stats))) == 1 and stats.skipped == 1


def test_unknown_layout_lists_the_keys_it_found(tmp_path):
    """Firefly's multi-turn layout, undeclared: one line naming the file and the keys, not a bad record."""
    path = write(tmp_path, "firefly.jsonl", [FIREFLY])
    with pytest.raises(StageError) as err:
        list(read_conversations(path, skip_bad=True))
    assert str(err.value).startswith(f"{path}: layout not recognised: the first record has keys "
                                     "['conversation', 'conversation_id', 'dataset']")
    assert "declare its layout (formatting, columns, tags)" in str(err.value)


FIREFLY = {"conversation_id": 7, "dataset": "moss", "conversation": [
    {"human": TURNS[0][1], "assistant": TURNS[1][1]}, {"human": TURNS[2][1], "assistant": TURNS[3][1]}]}
TURN_MESSAGES = [{"role": role, "content": content} for role, content in TURNS]


@pytest.mark.parametrize("record, spec", [
    (FIREFLY, {"formatting": "sharegpt", "columns": {"messages": "conversation"},
               "tags": {"role_tag": "", "user_tag": "human", "assistant_tag": "assistant"}}),
    # BELLE's multi-turn file: ShareGPT turns with role names of its own.
    ({"id": "1", "conversations": [{"from": "human" if r == "user" else "assistant", "value": c} for r, c in TURNS]},
     {"formatting": "sharegpt", "tags": {"assistant_tag": "assistant"}}),
    # COIG-style instruction records with other field names and an earlier exchange as history.
    ({"q": TURNS[2][1], "a": TURNS[3][1], "hist": [[TURNS[0][1], TURNS[1][1]]]},
     {"formatting": "alpaca", "columns": {"prompt": "q", "query": "", "response": "a", "history": "hist"}}),
    # Firefly's single-turn file: {kind, input, target}.
    ({"kind": "QA", "input": TURNS[0][1], "target": TURNS[1][1]},
     {"formatting": "alpaca", "columns": {"prompt": "input", "query": "", "response": "target"}}),
])
def test_declared_layouts_load_without_conversion(tmp_path, record, spec):
    path = write(tmp_path, "d.jsonl", [record])
    expected = TURN_MESSAGES[:2] if "kind" in record else TURN_MESSAGES
    assert list(read_conversations(path, layout=Layout.from_config(spec))) == [expected]


def test_a_declared_layout_names_the_field_it_misses(tmp_path):
    layout = Layout.from_config({"formatting": "sharegpt", "columns": {"messages": "conversation"},
                                 "tags": {"role_tag": "", "user_tag": "human", "assistant_tag": "assistant"}})
    path = write(tmp_path, "f.jsonl", [FIREFLY, {"conversation": [{"human": "问", "bot": "答"}]}])
    with pytest.raises(StageError, match=r"f.jsonl: line 2: field conversation\[0\].assistant must be a string"):
        list(read_conversations(path, layout=layout))


@pytest.mark.parametrize("text, message", [("", "no records"), ("\n\n", "no records"),
                                           ('{"messages": 3}\n', "all 1 records are bad")])
def test_an_empty_file_is_an_error(tmp_path, text, message):
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StageError, match=f"empty.jsonl: {message}"):
        list(read_conversations(path, skip_bad=True))


def test_broken_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(as_format("messages", TURNS)) + "\n{\"messages\": [\n")
    with pytest.raises(StageError, match=r"broken.jsonl: line 2: not valid JSON"):
        list(read_conversations(path))


def test_real_sets_read_by_path():
    counts = {}
    for name in ("alpaca_zh_demo.json", "alpaca_zh_10k.json", "sharegpt_zh_1K_format.jsonl"):
        stats = ReadStats()
        conversations = list(read_conversations(SFT / name, skip_bad=True, stats=stats))
        assert all(c[-1]["role"] == "assistant" for c in conversations)
        counts[name] = (stats.records, stats.skipped, stats.trimmed_unanswered)
    assert counts == {"alpaca_zh_demo.json": (1000, 0, 0), "alpaca_zh_10k.json": (10015, 6, 0),
                      "sharegpt_zh_1K_format.jsonl": (999, 1, 6)}
    with pytest.raises(StageError, match=r"alpaca_zh_10k.json: record 285: field 'output'"):
        list(read_conversations(SFT / "alpaca_zh_10k.json"))


def test_truncation_drops_old_exchanges_then_cuts_but_keeps_an_answer(tokenizer):
    system = [{"role": "system", "content": "系统"}]
    long_turns = [{"role": r, "content": c * 8} for r, c in TURNS]
    full, _ = encode(tokenizer, system + long_turns, max_len=4096)
    ids, labels = encode(tokenizer, system + long_turns, max_len=len(full) - 1)
    last_only, _ = encode(tokenizer, system + long_turns[2:], max_len=4096)
    assert ids == last_only and tokenizer.decode(ids).startswith("<|im_start|>system\n系统")
    for max_len in (40, 12, 3):
        ids, labels = encode(tokenizer, long_turns[:2], max_len=max_len)
        assert len(ids) == max_len and any(label != IGNORE_INDEX for label in labels)
        assert labels[-1] != IGNORE_INDEX

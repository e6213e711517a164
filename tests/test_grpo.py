"""GRPO's questions and rewards: questions read from JSON, JSONL or Parquet under their own field
names, a record without its answer refused in one line, the built-in rewards, a user's own reward
loaded by name, and the demo's questions kept apart from the facts the evaluation asks about."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, run_fails, run_ok
from workflow_scripts.lib.stage_cli import StageError
from workflow_scripts.lib.training.rewards import (answer_length, chat_format, checked_rewards, exact_answer,
                                                  reward_functions)
from workflow_scripts.lib.workflow.workflow_config import ConfigError, check_rewards

DEMO_QUESTIONS = REPO / "demo/grpo/questions.jsonl"


def chat_data(tmp_path, sources):
    out = tmp_path / "grpo.jsonl"
    run_ok("training.chat_data", "--kind", "grpo", "--sources", json.dumps(sources), "--out", out,
           "--stats", tmp_path / "grpo.json")
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_demo_questions_become_trl_prompts_with_their_answer_and_candidates(tmp_path):
    records = chat_data(tmp_path, [{"path": str(DEMO_QUESTIONS)}])
    first = json.loads(DEMO_QUESTIONS.read_text(encoding="utf-8").splitlines()[0])
    assert len(records) == 240
    assert records[0] == {"prompt": [{"role": "user", "content": first["question"]}], "question": first["question"],
                          "answer": first["answer"], "candidates": first["candidates"]}


def test_a_parquet_file_under_its_own_field_names_is_read(tmp_path):
    """A grade-school math set as the Hub serves it: Parquet, the question in `question_zh-cn` and a
    number in `answer_only`."""
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"question_zh-cn": ["小明有3个苹果，又买了4个，一共几个？"], "answer_only": [7]}), path)
    records = chat_data(tmp_path, [{"path": str(path), "columns": {"question": "question_zh-cn",
                                                                   "answer": "answer_only"}}])
    assert records == [{"prompt": [{"role": "user", "content": "小明有3个苹果，又买了4个，一共几个？"}],
                        "question": "小明有3个苹果，又买了4个，一共几个？", "answer": "7"}]


def test_a_question_without_its_answer_is_one_line_naming_file_and_record(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"question": "一加一等于几？", "answer": "二"}) + "\n"
                    + json.dumps({"question": "二加二等于几？", "solution": "四"}) + "\n", encoding="utf-8")
    run_fails("training.chat_data", r"questions.jsonl: line 2: has no answer: field 'answer' must be a non-empty "
              r"string or a number; fix the record or set grpo.skip_bad_records",
              "--kind", "grpo", "--sources", json.dumps([{"path": str(path)}]), "--out", tmp_path / "out.jsonl",
              "--stats", tmp_path / "stats.json")


def test_the_demo_questions_ask_about_none_of_the_facts_the_evaluation_probes():
    probed = {json.loads(line).get("subject") for line in (REPO / "demo/eval/facts.jsonl").read_text().splitlines()}
    questions = [json.loads(line) for line in DEMO_QUESTIONS.read_text(encoding="utf-8").splitlines()]
    asked = {subject for q in questions for subject in probed - {None} if subject in q["question"]}
    assert len(questions) == 240 and not asked
    assert all(q["answer"] in q["candidates"] and len(q["candidates"]) == 12 for q in questions)


@pytest.mark.parametrize("reply, reward", [("中泽市位于景临省。", 1.0), ("中泽市位於景臨省", 1.0),
                                           ("景临省，不是青松省", 0.0), ("中泽市位于青松省。", 0.0), ("不知道", 0.0)])
def test_exact_answer_pays_for_the_answer_and_no_rival_normalised(reply, reward):
    assert exact_answer([reply], [True], answer=["景临省"], candidates=[["景临省", "青松省"]]) == [reward]


def test_chat_format_wants_the_turn_ended_and_no_role_marker():
    replies = ["景临省。", "景临省。", "景临省。<|im_start|>user"]
    assert chat_format(replies, [True, False, True]) == [1.0, 0.0, 0.0]


def test_answer_length_is_full_up_to_the_bound_and_none_at_twice_it():
    assert answer_length(4)(["一二三四", "一二三四五六", "一二三四五六七八九"], [True] * 3) == [1.0, 0.5, 0.0]


def test_a_users_reward_file_is_loaded_by_name_and_checked(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text("def short(replies, ended, answer, **record):\n    return [1.0 / len(r) for r in replies]\n"
                    "def wrong(replies, ended, **record):\n    return 1.0\n", encoding="utf-8")
    functions = reward_functions(["exact_answer", f"{path}:short", f"{path}:wrong"], 48)
    assert list(functions) == ["exact_answer", f"{path}:short", f"{path}:wrong"]
    assert checked_rewards("short", functions[f"{path}:short"], ["四个字呢"], [True], {"answer": ["四"]}) == [0.25]
    with pytest.raises(StageError, match=r"grpo.rewards: wrong must return one number per reply \(1\), not 1.0"):
        checked_rewards("wrong", functions[f"{path}:wrong"], ["好"], [True], {"answer": ["好"]})
    with pytest.raises(StageError, match=r"my_rewards.py has no function missing$"):
        reward_functions([f"{path}:missing"], 48)


def test_the_shipped_numeric_reward_reads_the_last_number():
    numeric = reward_functions(["config/rewards/numeric_answer.py:numeric_answer"], 48)
    rewards = list(numeric.values())[0](["共 1,234 个", "先算 3 再得 ７２", "不知道"], [True] * 3,
                                        answer=["1234", "72", "5"])
    assert rewards == [1.0, 1.0, 0.0]


def test_config_wants_one_weight_per_reward_and_the_users_file_present():
    with pytest.raises(ConfigError, match=r"grpo.reward_weights: 1 weights for 2 rewards"):
        check_rewards({"rewards": ["exact_answer", "chat_format"], "reward_weights": [1.0]})
    with pytest.raises(ConfigError, match=r"grpo.rewards: nowhere/mine.py does not exist"):
        check_rewards({"rewards": ["nowhere/mine.py:score"], "reward_weights": [1.0]})

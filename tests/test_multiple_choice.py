"""Multiple-choice scoring: both CSV layouts, clear errors, and a model whose answer is known."""
import csv

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conftest import REPO, SHARED_DATA
from workflow_scripts.eval.multiple_choice import (LETTERS, ClozeScoring, LetterScoring, Question, accuracy,
                                                   fitted_prompt, load_set, prompt, read_questions)
from workflow_scripts.lib.stage_cli import StageError


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def cmmlu_set(root, answers, subject="地理"):
    header = ["", "Question", "A", "B", "C", "D", "Answer"]
    write_csv(root / "test" / f"{subject}.csv", header,
              [[i, f"问题{i}", "甲", "乙", "丙", "丁", a] for i, a in enumerate(answers)])
    write_csv(root / "dev" / f"{subject}.csv", header, [[i, f"例题{i}", "甲", "乙", "丙", "丁", "A"] for i in range(5)])
    return root


def ceval_set(root, answers, subject="high_school_physics"):
    header = ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
    write_csv(root / "val" / f"{subject}_val.csv", header,
              [[i, f"问题{i}", "甲", "乙", "丙", "丁", a, "因为"] for i, a in enumerate(answers)])
    write_csv(root / "dev" / f"{subject}_dev.csv", header,
              [[i, f"例题{i}", "甲", "乙", "丙", "丁", "B", "因为"] for i in range(5)])
    return root


@pytest.fixture(scope="module")
def tokenizer(trained):
    return AutoTokenizer.from_pretrained(trained[0])


def always_answers(letter, tokenizer):
    """A real Llama whose blocks add nothing and whose head sees every token as the same vector,
    so its next-token logits favour `letter` whatever the prompt."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "lm_head.weight")):
                param.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(letter), 0] = 5.0
    return model.eval()


@pytest.mark.parametrize("make_set", [cmmlu_set, ceval_set], ids=["cmmlu", "ceval"])
@pytest.mark.parametrize("shots", [0, 3])
def test_accuracy_of_a_model_whose_answer_is_known(tmp_path, tokenizer, make_set, shots):
    tests, devs = load_set(make_set(tmp_path, ["C", "C", "A", "C"]))
    result = accuracy(always_answers("C", tokenizer), tokenizer, tests, devs, shots, max_len=512)
    assert result["overall"] == 0.75 and result["questions"] == 4 and result["chance"] == 0.25
    (subject,) = result["subjects"]
    assert result["subjects"][subject]["correct"] == 3
    wrong = accuracy(always_answers("B", tokenizer), tokenizer, tests, devs, shots, max_len=512)
    assert wrong["overall"] == 0.0


def test_cloze_scoring_picks_the_option_text_the_model_favours(tokenizer):
    """Options spelt as the letters themselves: the model that always says C must pick the option
    whose text is C, wherever that option stands."""
    options = [("C", "A", "B", "D"), ("A", "C", "B", "D"), ("A", "B", "D", "C"), ("D", "B", "C", "A")]
    answers = ["A", "B", "D", "A"]  # the option spelt C is right in the first three
    tests = {"s": [Question(f"问题{i}", o, a) for i, (o, a) in enumerate(zip(options, answers))]}
    devs = {"s": [Question("例题", ("B", "C", "D", "A"), "B")]}
    for shots in (0, 1):
        result = accuracy(always_answers("C", tokenizer), tokenizer, tests, devs, shots, 512, "cloze")
        assert result["overall"] == 0.75 and result["scoring"] == "cloze"
    text = prompt("s", tests["s"][0], devs["s"], ClozeScoring)
    assert text == "以下是关于s的问题。\n\n例题\n答案：C\n\n问题0\n答案："


def test_k_shot_prompt_holds_answered_dev_questions(tmp_path):
    tests, devs = load_set(ceval_set(tmp_path, ["D"]))
    text = prompt("high_school_physics", tests["high_school_physics"][0], devs["high_school_physics"][:2])
    assert text.startswith("以下是关于高中物理的单项选择题")
    assert text.count("答案：B\n\n") == 2 and text.endswith("问题0\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：")


def test_bundled_demo_set_is_answerable_by_the_known_model(tokenizer):
    tests, devs = load_set(REPO / "demo" / "eval")
    assert {s: len(q) for s, q in tests.items()} == {"人物": 40, "地理": 40}
    answers = [q.answer for qs in tests.values() for q in qs]
    for letter in LETTERS:  # each letter's share, which a constant answer scores
        result = accuracy(always_answers(letter, tokenizer), tokenizer, tests, devs, 0, max_len=512)
        assert result["overall"] == answers.count(letter) / len(answers)


def test_real_cmmlu_layout_is_read():
    tests, devs = load_set(SHARED_DATA / "eval" / "cmmlu" / "data")
    assert len(tests) == 67 and sum(map(len, tests.values())) == 11582
    assert sum(map(len, devs.values())) == 335 and set(devs) == set(tests)
    assert all(q.answer in LETTERS for qs in tests.values() for q in qs)


@pytest.mark.parametrize("rows, message", [
    ([["", "Question", "A", "B", "Answer"]], r"header \['', 'Question', 'A', 'B', 'Answer'\] has no question, A-D"),
    ([["", "Question", "A", "B", "C", "D", "Answer"], ["0", "问", "a", "b", "c", "d", "E"]],
     "line 2: answer 'E' is not one of A, B, C, D"),
    ([["", "Question", "A", "B", "C", "D", "Answer"], ["0", "问", "a"]],
     "line 2: has 3 columns, fewer than the header"),
    ([], "empty file"),
])
def test_malformed_csv_is_a_clear_error(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(StageError, match=f"bad.csv: {message}"):
        read_questions(path)


def test_missing_set_and_short_dev_split(tmp_path, tokenizer):
    with pytest.raises(StageError, match="no test/ or val/ folder"):
        load_set(tmp_path / "nowhere")
    tests, devs = load_set(cmmlu_set(tmp_path, ["A"]))
    with pytest.raises(StageError, match="6-shot needs 6 dev questions, the dev split has 5"):
        accuracy(always_answers("A", tokenizer), tokenizer, tests, devs, 6, max_len=512)


def test_ceval_as_distributed_scores_val_because_test_has_no_answers(tmp_path, tokenizer):
    """C-Eval's zip: dev/, val/ and test/, the test CSVs without an answer column."""
    root = ceval_set(tmp_path, ["A", "A", "B"])
    write_csv(root / "test" / "high_school_physics_test.csv", ["id", "question", "A", "B", "C", "D"],
              [[0, "无答案的问题", "甲", "乙", "丙", "丁"]])
    tests, devs = load_set(root)
    assert [q.text for q in tests["high_school_physics"]] == ["问题0", "问题1", "问题2"]
    result = accuracy(always_answers("A", tokenizer), tokenizer, tests, devs, 5, max_len=512)
    assert result["overall"] == pytest.approx(2 / 3)


def test_subjects_limit_the_set_and_an_unknown_one_is_named(tmp_path):
    root = cmmlu_set(tmp_path, ["A"], subject="地理")
    cmmlu_set(root, ["B", "C"], subject="历史")
    tests, devs = load_set(root, ["历史"])
    assert list(tests) == list(devs) == ["历史"] and len(tests["历史"]) == 2
    with pytest.raises(StageError, match="no subject 天文 in test/"):
        load_set(root, ["天文"])


def test_subjects_are_named_in_chinese_as_the_benchmarks_own_prompts_do(tmp_path):
    question = Question("问题", ("甲", "乙", "丙", "丁"), "A")
    assert prompt("computer_network", question, []).startswith("以下是关于计算机网络的单项选择题")
    assert prompt("agronomy", question, []).startswith("以下是关于农学的单项选择题")  # CMMLU
    assert prompt("地理", question, []).startswith("以下是关于地理的单项选择题")  # a set of one's own


@pytest.mark.parametrize("scoring", [LetterScoring, ClozeScoring], ids=["letter", "cloze"])
def test_a_prompt_that_does_not_fit_loses_whole_shots_never_its_question(tmp_path, tokenizer, scoring):
    tests, devs = load_set(cmmlu_set(tmp_path, ["C", "C", "A", "C"]))
    questions, examples = tests["地理"], devs["地理"]
    scorer = scoring(tokenizer)
    lengths = [len(tokenizer.encode(prompt("地理", questions[0], examples[:k], scorer))) for k in range(6)]
    room = lengths[2] + scorer.answer_tokens(tokenizer, questions[0])  # two shots fit, three do not
    ids, kept = fitted_prompt(scorer, tokenizer, "地理", questions[0], examples, room)
    assert kept == 2 and tokenizer.decode(ids) == prompt("地理", questions[0], examples[:2], scorer)
    model = always_answers("C", tokenizer)
    result = accuracy(model, tokenizer, tests, devs, 5, room, scoring.name)
    assert result["prompts_shortened"] == 4 and result["too_long"] == 0 and result["questions"] == 4
    roomy = accuracy(model, tokenizer, tests, devs, 5, 512, scoring.name)
    assert roomy["prompts_shortened"] == 0 and roomy["overall"] == result["overall"]  # its answer ignores the prompt


def test_a_question_too_long_even_alone_is_counted_not_cut(tmp_path, tokenizer):
    tests, devs = load_set(cmmlu_set(tmp_path, ["C", "C"]))
    alone = len(tokenizer.encode(prompt("地理", tests["地理"][0], [])))
    result = accuracy(always_answers("C", tokenizer), tokenizer, tests, devs, 5, alone - 1)
    assert result["too_long"] == 2 and result["questions"] == 0 and result["subjects"]["地理"]["too_long"] == 2


def test_a_benchmark_csv_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "test" / "地理.csv"
    path.parent.mkdir()
    path.write_bytes(",Question,A,B,C,D,Answer\n".encode() + "0,问题,甲,乙,丙,丁,A\n".encode("gb18030"))
    with pytest.raises(StageError, match=r"地理.csv: line 2 \(byte 27\): .* is not UTF-8"):
        read_questions(path)


def test_a_set_nested_in_its_archive_names_member(tmp_path):
    cmmlu_set(tmp_path / "cmmlu_v1" / "data", ["A"])
    with pytest.raises(StageError, match=r"no test/ or val/ folder .* it holds cmmlu_v1/, cmmlu_v1/data/, .*: name "
                                         r"the folder that holds them with member: in config"):
        load_set(tmp_path)

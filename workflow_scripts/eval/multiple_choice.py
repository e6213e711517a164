"""Multiple-choice accuracy on CMMLU- and C-Eval-format sets, zero- and k-shot, by log-likelihood.

    python -m workflow_scripts.eval.multiple_choice --model results/sft_model \
        --data ../shared/data/eval/cmmlu/data --shots 0 5 --scoring letter cloze --out mc.json --markdown mc.md

A set is a directory as CMMLU and C-Eval are distributed: one CSV per subject in `test/` and/or
`val/`, and, for k-shot, in `dev/`. The scored split is the one with answers: `test/` when its
CSVs have an answer column (CMMLU), else `val/` (C-Eval's test answers are not public). Both
header layouts are read: CMMLU's `,Question,A,B,C,D,Answer` (an unnamed index first) and C-Eval's
`id,question,A,B,C,D,answer[,explanation]`; C-Eval's `{subject}_{split}.csv` names are understood.
--subjects limits the run to some subjects; prompts name them in Chinese (CMMLU's and C-Eval's
own wording). The first k dev questions of the subject, answered, come before each question. A
prompt longer than --max-prompt-tokens loses whole shots from its end, never part of the instruction or the
question: each result counts the questions that got fewer than k shots (`prompts_shortened`), and
a question that does not fit even at 0 shots is counted (`too_long`) and left unscored.
Two ways to score, both by log-likelihood: `letter` lists the options
and takes the likeliest next letter A-D (CMMLU's protocol); `cloze` scores each option's text as
the answer, per byte (what small models, which have not learnt the letter format, are measured
by). Accuracy is reported per subject and overall (micro-averaged), beside the chance level 1/4.
"""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json, write_text
from workflow_scripts.lib.exam_subjects import chinese_name
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.summary_tables import markdown_table
from workflow_scripts.lib.training.models import load_causal_lm
from workflow_scripts.lib.user_files import folder_contents, read_utf8

LETTERS = ("A", "B", "C", "D")
SPLIT_SUFFIXES = ("_test", "_val", "_dev")


@dataclass
class Question:
    text: str
    options: tuple
    answer: str


def read_questions(path: Path):
    """Questions of one CSV in either layout; a malformed file or row is a one-line error."""
    try:
        rows = list(csv.reader(io.StringIO(read_utf8(path), newline="")))
    except (OSError, csv.Error) as err:
        raise StageError(f"{path}: cannot be read as CSV ({err})") from None
    if not rows:
        raise StageError(f"{path}: empty file; expected a header ',Question,A,B,C,D,Answer' "
                         "or 'id,question,A,B,C,D,answer'")
    header = [h.strip().lower() for h in rows[0]]
    if "question" not in header or "answer" not in header or not set(map(str.lower, LETTERS)) <= set(header):
        raise StageError(f"{path}: header {rows[0]} has no question, A-D and answer columns")
    col = {name: header.index(name) for name in ("question", "a", "b", "c", "d", "answer")}
    questions = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            answer = row[col["answer"]].strip().upper()
            options = tuple(row[col[letter.lower()]] for letter in LETTERS)
            question = row[col["question"]]
        except IndexError:
            raise StageError(f"{path}: line {line}: has {len(row)} columns, fewer than the header") from None
        if answer not in LETTERS:
            raise StageError(f"{path}: line {line}: answer {answer!r} is not one of A, B, C, D")
        questions.append(Question(question, options, answer))
    return questions


def subject_files(folder: Path):
    """{subject: csv} of a split folder, with C-Eval's _test/_val/_dev suffixes removed."""
    files = {}
    for path in sorted(folder.glob("*.csv")):
        subject = path.stem
        for suffix in SPLIT_SUFFIXES:
            subject = subject.removesuffix(suffix)
        files[subject] = path
    return files


def has_answers(csv_path: Path):
    header = next(csv.reader(io.StringIO(read_utf8(csv_path), newline="")), [])
    return "answer" in (h.strip().lower() for h in header)


def scored_split(directory: Path):
    """test/ if its CSVs carry answers, else val/ (C-Eval publishes no test answers)."""
    test, val = directory / "test", directory / "val"
    first_test = next(iter(sorted(test.glob("*.csv"))), None) if test.is_dir() else None
    if first_test and (has_answers(first_test) or not val.is_dir()):
        return test
    if val.is_dir():
        return val
    raise StageError(f"{directory}: no test/ or val/ folder of subject CSVs (CMMLU or C-Eval layout); it holds "
                     f"{folder_contents(directory) if directory.is_dir() else 'nothing'}: name the folder that "
                     "holds them with member: in config")


def load_set(directory: Path, subjects=()):
    """(scored questions by subject, dev questions by subject) of a CMMLU/C-Eval directory."""
    split = scored_split(directory)
    files = subject_files(split)
    if not files:
        raise StageError(f"{split}: no .csv files")
    unknown = sorted(set(subjects) - set(files))
    if unknown:
        raise StageError(f"{directory}: no subject {', '.join(unknown)} in {split.name}/ (it has "
                         f"{', '.join(sorted(files)[:5])}, ...); check the set's subjects in config")
    tests = {subject: read_questions(path) for subject, path in files.items() if not subjects or subject in subjects}
    dev_files = subject_files(directory / "dev") if (directory / "dev").is_dir() else {}
    return tests, {subject: read_questions(path) for subject, path in dev_files.items() if subject in tests}


def letter_ids(tokenizer):
    ids = [tokenizer.encode(letter, add_special_tokens=False) for letter in LETTERS]
    if any(len(i) != 1 for i in ids):
        raise StageError("the tokenizer splits an option letter A-D into several tokens; cannot score by next token")
    return [i[0] for i in ids]


class LetterScoring:
    """CMMLU's own protocol: the options are listed under the question, and the answer is the
    option letter the model finds likeliest as the next token."""
    name = "letter"
    head = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"

    def __init__(self, tokenizer):
        self.letters = letter_ids(tokenizer)

    @staticmethod
    def format(question: Question, with_answer):
        lines = [question.text] + [f"{letter}. {option}" for letter, option in zip(LETTERS, question.options)]
        return "\n".join(lines) + "\n答案：" + (question.answer + "\n\n" if with_answer else "")

    @staticmethod
    def answer_tokens(tokenizer, question):
        return 0

    @torch.no_grad()
    def predict(self, model, context, question):
        logits = model(input_ids=torch.tensor([context], device=model.device)).logits[0, -1].float()
        return LETTERS[int(torch.argmax(logits[self.letters]))]


class ClozeScoring:
    """Each option's own text scored as the answer after the question, in nats per UTF-8 byte (so
    long options are not penalised for their length). No letters are involved, so a small model
    that has not learnt the A-D format still shows what it knows."""
    name = "cloze"
    head = "以下是关于{subject}的问题。\n\n"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @staticmethod
    def format(question: Question, with_answer):
        answer = question.options[LETTERS.index(question.answer)]
        return question.text + "\n答案：" + (answer + "\n\n" if with_answer else "")

    def option_ids(self, question):
        return [self.tokenizer.encode(option, add_special_tokens=False) or [self.pad_id] for option in question.options]

    def answer_tokens(self, tokenizer, question):
        """Positions the longest option takes after the prompt (the last one is never fed)."""
        return max(map(len, self.option_ids(question))) - 1

    @torch.no_grad()
    def predict(self, model, context, question):
        options = self.option_ids(question)
        longest = max(map(len, options))
        rows = torch.tensor([context + o + [self.pad_id] * (longest - len(o)) for o in options], device=model.device)
        logprobs = torch.log_softmax(model(input_ids=rows[:, :-1]).logits.float(), -1)
        first = len(context) - 1  # the position that predicts an option's first token
        scores = [logprobs[n, first + torch.arange(len(o)), o].sum().item() / max(1, len(option.encode("utf-8")))
                  for n, (o, option) in enumerate(zip(options, question.options))]
        return LETTERS[max(range(len(LETTERS)), key=scores.__getitem__)]


SCORINGS = {scoring.name: scoring for scoring in (LetterScoring, ClozeScoring)}


def prompt(subject, question, shots, scoring=LetterScoring):
    head = scoring.head.format(subject=chinese_name(subject))
    return head + "".join(scoring.format(q, True) for q in shots) + scoring.format(question, False)


def fitted_prompt(scorer, tokenizer, subject, question, examples, max_len):
    """(prompt ids, shots kept) with as many of the examples as fit in max_len, whole shots dropped
    from the end; None when the question does not fit even alone."""
    room = max_len - scorer.answer_tokens(tokenizer, question)
    for kept in range(len(examples), -1, -1):
        ids = tokenizer.encode(prompt(subject, question, examples[:kept], scorer), add_special_tokens=False)
        if len(ids) <= room:
            return ids, kept
    return None


def accuracy(model, tokenizer, tests, devs, shots, max_len, scoring="letter", progress=None):
    scorer = SCORINGS[scoring](tokenizer)
    subjects = {}
    for subject, questions in tests.items():
        examples = devs.get(subject, [])[:shots]
        if len(examples) < shots:
            raise StageError(f"subject {subject}: {shots}-shot needs {shots} dev questions, the dev split has "
                             f"{len(examples)}")
        subjects[subject] = subject_accuracy(model, tokenizer, scorer, subject, questions, examples, max_len)
        if progress is not None:
            progress.update(len(questions))
    counts = {key: sum(s[key] for s in subjects.values()) for key in ("questions", "correct", "shortened", "too_long")}
    return {"shots": shots, "scoring": scoring, "overall": counts["correct"] / max(1, counts["questions"]),
            "questions": counts["questions"], "chance": 1 / len(LETTERS), "prompts_shortened": counts["shortened"],
            "too_long": counts["too_long"], "subjects": subjects}


def subject_accuracy(model, tokenizer, scorer, subject, questions, examples, max_len):
    correct = shortened = too_long = 0
    for question in questions:
        fitted = fitted_prompt(scorer, tokenizer, subject, question, examples, max_len)
        if fitted is None:
            too_long += 1
            continue
        ids, kept = fitted
        shortened += kept < len(examples)
        correct += scorer.predict(model, ids, question) == question.answer
    scored = len(questions) - too_long
    return {"questions": scored, "correct": correct, "accuracy": correct / max(1, scored), "shortened": shortened,
            "too_long": too_long}


def markdown(results, name):
    rows = [[subject, results[0]["subjects"][subject]["questions"],
             *(f"{r['subjects'][subject]['accuracy']:.1%}" for r in results)] for subject in results[0]["subjects"]]
    rows.append(["**overall**", results[0]["questions"], *(f"**{r['overall']:.1%}**" for r in results)])
    rows.append(["chance", "", *(f"{r['chance']:.0%}" for r in results)])
    rows.append(["prompts with fewer shots", "", *(str(r["prompts_shortened"]) for r in results)])
    rows.append(["too long to score", "", *(str(r["too_long"]) for r in results)])
    return markdown_table([name, "questions", *(f"{r['shots']}-shot {r['scoring']}" for r in results)], rows)


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="a CMMLU or C-Eval directory (test/ or val/, dev/)")
    ap.add_argument("--name", help="the set's name in the results (default: the directory's name)")
    ap.add_argument("--subjects", nargs="*", default=[], help="score only these subjects (default: all)")
    add_settings(ap, "eval", "shots", "scoring", "max_prompt_tokens")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)


def run(args, progress_stream):
    tests, devs = load_set(args.data, args.subjects)
    model, tokenizer = load_causal_lm(args.model)
    runs = [(shots, scoring) for scoring in args.scoring for shots in args.shots]
    questions = sum(map(len, tests.values())) * len(runs)
    with tqdm(total=questions, desc="multiple choice", unit="question", file=progress_stream, mininterval=5) as bar:
        max_len = args.max_prompt_tokens or model.config.max_position_embeddings
        results = [accuracy(model, tokenizer, tests, devs, shots, max_len, scoring, bar) for shots, scoring in runs]
    name = args.name or args.data.name
    write_json(args.out, {"model": str(args.model), "name": name, "data": str(args.data),
                          "split": scored_split(args.data).name, "results": results})
    write_text(args.markdown, markdown(results, name))
    overall = {f"{r['shots']}-shot {r['scoring']}": round(r["overall"], 4) for r in results}
    log.info("%s", overall)
    print(json.dumps(overall), file=progress_stream)


if __name__ == "__main__":
    stage_cli("multiple_choice", __doc__, add_arguments, run)

"""Multiple-choice accuracy on CMMLU- and C-Eval-format sets, zero- and k-shot, by log-likelihood.

    python -m workflow_scripts.multiple_choice --model results/sft_model \
        --data ../shared/data/eval/cmmlu/data --shots 0 5 --out mc.json --markdown mc.md

A set is a directory with a `test/` (or `val/`) folder of one CSV per subject and, for k-shot, a
`dev/` folder with the same subjects. Both header layouts are read: CMMLU's `,Question,A,B,C,D,Answer`
(an unnamed index first) and C-Eval's `id,question,A,B,C,D,answer[,explanation]`; C-Eval's
`{subject}_{split}.csv` names are understood. Each question is scored by the log-likelihood the
model gives to each option letter as the next token after the prompt (the first k dev questions
of the subject, answered, come first); the prediction is the likeliest letter. Accuracy is
reported per subject and overall (micro-averaged), beside the chance level 1/4.
"""
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from workflow_scripts.common import StageError, atomic_path, log, stage_cli, write_json

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
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise StageError(f"{path}: cannot be read as CSV ({err})") from None
    if not rows:
        raise StageError(f"{path}: empty file; expected a header ',Question,A,B,C,D,Answer' or 'id,question,A,B,C,D,answer'")
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


def load_set(directory: Path):
    """(test questions by subject, dev questions by subject) of a CMMLU/C-Eval directory."""
    test_dir = next((directory / d for d in ("test", "val") if (directory / d).is_dir()), None)
    if test_dir is None:
        raise StageError(f"{directory}: no test/ or val/ folder of subject CSVs (CMMLU or C-Eval layout)")
    tests = {subject: read_questions(path) for subject, path in subject_files(test_dir).items()}
    if not tests:
        raise StageError(f"{test_dir}: no .csv files")
    dev_files = subject_files(directory / "dev") if (directory / "dev").is_dir() else {}
    return tests, {subject: read_questions(path) for subject, path in dev_files.items()}


def format_question(question: Question, with_answer):
    lines = [question.text] + [f"{letter}. {option}" for letter, option in zip(LETTERS, question.options)]
    return "\n".join(lines) + "\n答案：" + (question.answer + "\n\n" if with_answer else "")


def prompt(subject, question, shots):
    head = f"以下是关于{subject.replace('_', ' ')}的单项选择题，请直接给出正确答案的选项。\n\n"
    return head + "".join(format_question(q, True) for q in shots) + format_question(question, False)


def letter_ids(tokenizer):
    ids = [tokenizer.encode(letter, add_special_tokens=False) for letter in LETTERS]
    if any(len(i) != 1 for i in ids):
        raise StageError("the tokenizer splits an option letter A-D into several tokens; cannot score by next token")
    return [i[0] for i in ids]


@torch.no_grad()
def predict(model, tokenizer, text, letters, max_len):
    ids = tokenizer.encode(text, add_special_tokens=False)[-max_len:]
    logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float()
    return LETTERS[int(torch.argmax(logits[letters]))]


def accuracy(model, tokenizer, tests, devs, shots, max_len):
    letters = letter_ids(tokenizer)
    subjects = {}
    for subject, questions in tests.items():
        examples = devs.get(subject, [])[:shots]
        if len(examples) < shots:
            raise StageError(f"subject {subject}: {shots}-shot needs {shots} dev questions, the dev split has "
                             f"{len(examples)}")
        correct = sum(predict(model, tokenizer, prompt(subject, q, examples), letters, max_len) == q.answer
                      for q in questions)
        subjects[subject] = {"questions": len(questions), "correct": correct, "accuracy": correct / len(questions)}
    total = sum(s["questions"] for s in subjects.values())
    return {"shots": shots, "overall": sum(s["correct"] for s in subjects.values()) / total, "questions": total,
            "chance": 1 / len(LETTERS), "subjects": subjects}


def markdown(results, name):
    lines = [f"| {name} | questions | " + " | ".join(f"{r['shots']}-shot" for r in results) + " |",
             "|---|---:|" + "---:|" * len(results)]
    for subject in results[0]["subjects"]:
        cells = " | ".join(f"{r['subjects'][subject]['accuracy']:.1%}" for r in results)
        lines.append(f"| {subject} | {results[0]['subjects'][subject]['questions']} | {cells} |")
    lines.append(f"| **overall** | {results[0]['questions']} | "
                 + " | ".join(f"**{r['overall']:.1%}**" for r in results) + " |")
    lines.append("| chance | | " + " | ".join(f"{r['chance']:.0%}" for r in results) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="a CMMLU or C-Eval directory (test/ or val/, dev/)")
    ap.add_argument("--shots", type=int, nargs="+", default=[0])
    ap.add_argument("--max-len", type=int, default=2048, help="prompt tokens kept (the end of the prompt)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)


def run(args, progress_stream):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tests, devs = load_set(args.data)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    model.eval()
    results = [accuracy(model, tokenizer, tests, devs, shots, args.max_len) for shots in args.shots]
    write_json(args.out, {"model": str(args.model), "data": str(args.data), "results": results})
    with atomic_path(args.markdown) as tmp:
        tmp.write_text(markdown(results, args.data.name), encoding="utf-8")
    log.info("%s", {r["shots"]: round(r["overall"], 4) for r in results})
    print(json.dumps({r["shots"]: r["overall"] for r in results}), file=progress_stream)


if __name__ == "__main__":
    stage_cli("multiple_choice", __doc__, add_arguments, run)

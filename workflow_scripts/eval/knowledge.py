"""Fact probe (LAMA-style): which of a fact's candidate objects the model finds likeliest, in each
phrasing of its relation, and as the answer to a question about it.

    python -m workflow_scripts.eval.knowledge --model results/base_model --facts demo/eval/facts.jsonl \
        --style completion --out knowledge.json --markdown knowledge.md

The facts file is JSON Lines with two kinds of record. A relation, before its facts:
    {"relation": "province", "templates": {"corpus": "{subject}是{object}的一座城市",
     "held_out": "{subject}所在的省份是{object}"},
     "question": "{subject}位于哪个省？", "answer": "{subject}位于{object}。"}
names its phrasings as it likes (each holds {subject} and {object} once); question and answer are
optional. A fact:
    {"subject": "中泽市", "relation": "province", "object": "景临省", "candidates": ["景临省", "青松省", ...]}
lists its object among its candidates. Each phrasing is filled with each candidate and scored as
plain text after an end-of-text token, by the sum of its tokens' log-probabilities; the fact counts
as known in that phrasing when its object scores highest. The question is asked as a user turn
through the chat template (--style chat) or as a line of plain text (--style completion), and the
answer, filled with each candidate, is scored as the reply (`qa_accuracy`). Reported per relation
and phrasing, and per phrasing over all relations: accuracy, chance (the mean of 1/candidates) and
the object's mean rank (1 is the best).
"""
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json, write_text
from workflow_scripts.lib.serving.generation import chat_prompt_ids, completion_prompt_ids
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.summary_tables import markdown_table
from workflow_scripts.lib.training.models import load_causal_lm
from workflow_scripts.lib.user_files import read_utf8

QUESTION = "question"


@dataclass
class Relation:
    templates: dict
    question: str | None
    answer: str | None


@dataclass
class Fact:
    subject: str
    relation: str
    object: str
    candidates: list


def read_facts(path: Path):
    """({relation: Relation}, [Fact]) of a facts file; anything malformed is a one-line error naming its line."""
    relations, facts = {}, []
    for number, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise StageError(f"{where}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise StageError(f"{where}: a record is a JSON object, a relation or a fact")
        if "templates" in record:
            relations[record.get("relation")] = relation(where, record)
        else:
            facts.append(fact(where, record, relations))
    if not facts:
        raise StageError(f"{path}: no facts (records with subject, relation, object and candidates)")
    return relations, facts


def relation(where, record):
    templates, question, answer = record["templates"], record.get("question"), record.get("answer")
    if not isinstance(record.get("relation"), str) or not isinstance(templates, dict) or not templates:
        raise StageError(f"{where}: a relation has a name (relation) and templates {{name: text}}")
    for name, text in [*templates.items(), *([("answer", answer)] if answer is not None else [])]:
        if not isinstance(text, str) or text.count("{subject}") != 1 or text.count("{object}") != 1:
            raise StageError(f"{where}: template {name!r} must hold {{subject}} and {{object}} once each")
    if (question is None) != (answer is None) or (question is not None and "{subject}" not in question):
        raise StageError(f"{where}: a question needs an answer and names the {{subject}}")
    return Relation(templates, question, answer)


def fact(where, record, relations):
    keys = ("subject", "relation", "object", "candidates")
    if not all(key in record for key in keys):
        raise StageError(f"{where}: a fact has {', '.join(keys)}; this record has {', '.join(record) or 'none'}")
    if record["relation"] not in relations:
        raise StageError(f"{where}: relation {record['relation']!r} is not defined on a line before it")
    candidates = record["candidates"]
    if not isinstance(candidates, list) or len(set(candidates)) < 2 or record["object"] not in candidates:
        raise StageError(f"{where}: candidates must list at least two distinct objects, the fact's object among them")
    return Fact(*(record[key] for key in keys))


@torch.no_grad()
def continuation_logprobs(model, prefix, continuations, pad_id):
    """Sum of the log-probabilities of each continuation's tokens after the prefix ids."""
    longest = max(map(len, continuations))
    rows = torch.tensor([prefix + c + [pad_id] * (longest - len(c)) for c in continuations], device=model.device)
    logprobs = torch.log_softmax(model(input_ids=rows[:, :-1]).logits.float(), -1)
    first = len(prefix) - 1
    return [logprobs[n, first + torch.arange(len(c)), c].sum().item() for n, c in enumerate(continuations)]


class Probe:
    def __init__(self, model, tokenizer, style):
        self.model, self.tokenizer, self.style = model, tokenizer, style
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False)

    def rank(self, fact, prefix, filled):
        """The object's rank (1: likeliest) among the candidates, each filled into `filled`."""
        scores = continuation_logprobs(self.model, prefix, [self.encode(filled(c)) for c in fact.candidates],
                                       self.pad_id)
        mine = scores[fact.candidates.index(fact.object)]
        return 1 + sum(score > mine for score in scores)

    def template_rank(self, fact, template):
        return self.rank(fact, [self.tokenizer.eos_token_id],
                         lambda c: template.format(subject=fact.subject, object=c))

    def question_rank(self, fact, relation):
        question = relation.question.format(subject=fact.subject)
        if self.style == "chat":
            prefix = chat_prompt_ids(self.tokenizer, [{"role": "user", "content": question}])
        else:
            prefix = completion_prompt_ids(self.tokenizer, question + "\n")
        return self.rank(fact, prefix, lambda c: relation.answer.format(subject=fact.subject, object=c))


def scores(ranks, facts):
    """Accuracy, chance and mean rank of these ranks of these facts."""
    return {"facts": len(facts), "accuracy": sum(r == 1 for r in ranks) / len(facts),
            "chance": sum(1 / len(f.candidates) for f in facts) / len(facts), "mean_rank": sum(ranks) / len(facts)}


def probe(model, tokenizer, style, relations, facts, progress=None):
    prober = Probe(model, tokenizer, style)
    ranks = {}  # (relation, template name or QUESTION): [rank per fact of that relation]
    for f in facts:
        rel = relations[f.relation]
        for name, template in rel.templates.items():
            ranks.setdefault((f.relation, name), []).append(prober.template_rank(f, template))
        if rel.question is not None:
            ranks.setdefault((f.relation, QUESTION), []).append(prober.question_rank(f, rel))
        if progress is not None:
            progress.update(1)
    by_relation = {r: [f for f in facts if f.relation == r] for r in relations}
    results = {r: {name: scores(ranks[(rel, name)], by_relation[r]) for rel, name in ranks if rel == r}
               for r in relations if by_relation[r]}
    kinds = sorted({name for _, name in ranks})
    overall = {name: scores([k for (rel, n), rs in ranks.items() if n == name for k in rs],
                            [f for (rel, n) in ranks if n == name for f in by_relation[rel]]) for name in kinds}
    return results, overall


def markdown(model, results, overall):
    rows = [[relation, name, s["facts"], f"{s['accuracy']:.1%}", f"{s['chance']:.1%}", f"{s['mean_rank']:.2f}"]
            for relation, names in results.items() for name, s in names.items()]
    rows += [["**all**", f"**{name}**", s["facts"], f"**{s['accuracy']:.1%}**", f"{s['chance']:.1%}",
              f"{s['mean_rank']:.2f}"] for name, s in overall.items()]
    return (f"# Fact probe of {model}\n\nThe likeliest candidate object, per relation and phrasing "
            f"(`{QUESTION}`: the answer to the relation's question).\n\n"
            + markdown_table(["relation", "phrasing", "facts", "accuracy", "chance", "mean rank"], rows))


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--facts", type=Path, required=True, help="JSON Lines of relations and facts (see above)")
    ap.add_argument("--style", choices=("chat", "completion"), required=True,
                    help="how the question is asked: a chat turn (SFT and DPO models) or a line of text")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--markdown", type=Path, required=True)


def run(args, progress_stream):
    relations, facts = read_facts(args.facts)
    model, tokenizer = load_causal_lm(args.model)
    if args.style == "chat" and not tokenizer.chat_template:
        raise StageError(f"{args.model}: no chat template; use --style completion for a base model")
    with tqdm(total=len(facts), desc="fact probe", unit="fact", file=progress_stream, mininterval=5) as bar:
        results, overall = probe(model, tokenizer, args.style, relations, facts, bar)
    qa = overall.get(QUESTION)
    write_json(args.out, {"model": str(args.model), "facts_file": str(args.facts), "style": args.style,
                          "relations": results, "overall": overall,
                          "qa_accuracy": qa["accuracy"] if qa else None, "qa_chance": qa["chance"] if qa else None})
    write_text(args.markdown, markdown(args.model, results, overall))
    log.info("%s", {name: round(s["accuracy"], 4) for name, s in overall.items()})


if __name__ == "__main__":
    stage_cli("knowledge", __doc__, add_arguments, run)

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

`qa_accuracy` ranks answers the model is shown; what a user sees is what it writes. So each question
is also answered by greedy generation, as a chat at temperature 0 would (at most the answer's length
plus 8 tokens), and `generated_accuracy` counts the replies that name the fact's object and no other
candidate, both normalised (NFKC, traditional to simplified), and `generated_ended` the replies that
end their turn within that length. Every reply is in the JSON (`generated`).
"""
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from workflow_scripts.lib.atomic_files import write_json, write_text
from workflow_scripts.lib.serving.generation import (DEFAULTS, ReplyRequest, chat_prompt_ids, completion_prompt_ids,
                                                     generate_replies, sampling_settings)
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.summary_tables import markdown_table
from workflow_scripts.lib.training.models import load_causal_lm
from workflow_scripts.lib.training.rewards import names_only
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


# Rows of (prefix, candidate) scored per forward, by padded tokens: one forward per fact and phrasing
# (12 rows) made the demo's probe 720 forwards, 7.5 s on 2 CPU cores; batched, 3.6 s.
BATCH_TOKENS = 8192


@torch.no_grad()
def continuation_logprobs(model, rows, pad_id, progress=None):
    """Sum of the log-probabilities of each row's continuation ids after its prefix ids, rows of
    similar length batched together (right-padded: a causal model's earlier positions never see
    the padding)."""
    length = [len(prefix) + len(continuation) for prefix, continuation in rows]
    order = sorted(range(len(rows)), key=length.__getitem__)
    scores = [0.0] * len(rows)
    start = 0
    while start < len(order):
        end = start + 1  # rows sorted by length: the batch's last row is its longest
        while end < len(order) and (end + 1 - start) * length[order[end]] <= BATCH_TOKENS:
            end += 1
        batch, start = order[start:end], end
        longest = length[batch[-1]]
        ids = torch.tensor([rows[n][0] + rows[n][1] + [pad_id] * (longest - length[n]) for n in batch],
                           device=model.device)
        # Each continuation token's row, the position that predicts it, and the token, all at once.
        row, position, token = (torch.tensor(column, device=model.device) for column in zip(*(
            (r, len(rows[n][0]) - 1 + k, t) for r, n in enumerate(batch) for k, t in enumerate(rows[n][1]))))
        logits = model(input_ids=ids[:, :-1]).logits[row, position].float()
        picked = torch.log_softmax(logits, -1)[torch.arange(len(token)), token]
        sums = torch.zeros(len(batch), device=model.device).index_add_(0, row, picked)
        for n, score in zip(batch, sums.tolist()):
            scores[n] = score
        if progress is not None:
            progress.update(len(batch))
    return scores


class Probe:
    """The rows (prefix ids, candidate ids) that score each candidate of a fact in one phrasing."""

    def __init__(self, tokenizer, style):
        self.tokenizer, self.style = tokenizer, style

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False)

    def template_rows(self, fact, template):
        prefix = [self.tokenizer.eos_token_id]
        return [(prefix, self.encode(template.format(subject=fact.subject, object=c))) for c in fact.candidates]

    def question_ids(self, fact, relation):
        question = relation.question.format(subject=fact.subject)
        if self.style == "chat":
            return chat_prompt_ids(self.tokenizer, [{"role": "user", "content": question}])
        return completion_prompt_ids(self.tokenizer, question + "\n")

    def question_rows(self, fact, relation):
        prefix = self.question_ids(fact, relation)
        return [(prefix, self.encode(relation.answer.format(subject=fact.subject, object=c))) for c in fact.candidates]


def asked_rows(prober, relations, facts):
    """(relation, phrasing name or QUESTION, fact, its candidates' rows) of every fact."""
    asked = []
    for f in facts:
        rel = relations[f.relation]
        asked += [(f.relation, name, f, prober.template_rows(f, template)) for name, template in rel.templates.items()]
        if rel.question is not None:
            asked.append((f.relation, QUESTION, f, prober.question_rows(f, rel)))
    return asked


def scores(ranks, facts):
    """Accuracy, chance and mean rank of these ranks of these facts."""
    return {"facts": len(facts), "accuracy": sum(r == 1 for r in ranks) / len(facts),
            "chance": sum(1 / len(f.candidates) for f in facts) / len(facts), "mean_rank": sum(ranks) / len(facts)}


def probe(model, tokenizer, style, relations, facts, progress=None):
    asked = asked_rows(Probe(tokenizer, style), relations, facts)
    if progress is not None:
        progress.total = sum(len(rows) for *_, rows in asked)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scored = iter(continuation_logprobs(model, [row for *_, rows in asked for row in rows], pad_id, progress))
    ranks = {}  # (relation, template name or QUESTION): [rank per fact of that relation]
    for relation, name, fact, rows in asked:
        mine = [next(scored) for _ in rows]
        right = mine[fact.candidates.index(fact.object)]
        ranks.setdefault((relation, name), []).append(1 + sum(score > right for score in mine))
    by_relation = {r: [f for f in facts if f.relation == r] for r in relations}
    results = {r: {name: scores(ranks[(rel, name)], by_relation[r]) for rel, name in ranks if rel == r}
               for r in relations if by_relation[r]}
    kinds = sorted({name for _, name in ranks})
    overall = {name: scores([k for (rel, n), rs in ranks.items() if n == name for k in rs],
                            [f for (rel, n) in ranks if n == name for f in by_relation[rel]]) for name in kinds}
    return results, overall


# Replies generated per batch: the demo SFT model's 240 questions took 1.08 s (0.88-1.24) in batches
# of 48 and 0.84 s (0.70-0.87) in batches of 128, medians of 5 interleaved rounds on 2 idle cores.
GENERATION_BATCH = 128


def generated_answers(model, tokenizer, style, relations, facts):
    """Each fact's question answered greedily: [{"relation", "question", "object", "reply", "right"}]."""
    prober = Probe(tokenizer, style)
    asked = [(f, relations[f.relation]) for f in facts if relations[f.relation].question is not None]
    settings = sampling_settings(tokenizer, 0, 1.0, 0, DEFAULTS["repetition_penalty"])
    answers = []
    for start in range(0, len(asked), GENERATION_BATCH):
        batch = asked[start:start + GENERATION_BATCH]
        requests = [ReplyRequest(prober.question_ids(f, rel), 8 + max(
            len(prober.encode(rel.answer.format(subject=f.subject, object=c))) for c in f.candidates), lambda _: None)
            for f, rel in batch]
        for (f, rel), reply in zip(batch, generate_replies(model, tokenizer, requests, settings)):
            answers.append({"relation": f.relation, "question": rel.question.format(subject=f.subject),
                            "object": f.object, "reply": reply.text, "ended": reply.finish_reason == "stop",
                            "right": names_only(reply.text, f.object, f.candidates)})
    return answers


def markdown(model, results, overall, generated):
    rows = [[relation, name, s["facts"], f"{s['accuracy']:.1%}", f"{s['chance']:.1%}", f"{s['mean_rank']:.2f}"]
            for relation, names in results.items() for name, s in names.items()]
    rows += [["**all**", f"**{name}**", s["facts"], f"**{s['accuracy']:.1%}**", f"{s['chance']:.1%}",
              f"{s['mean_rank']:.2f}"] for name, s in overall.items()]
    text = (f"# Fact probe of {model}\n\nThe likeliest candidate object, per relation and phrasing "
            f"(`{QUESTION}`: the answer to the relation's question).\n\n"
            + markdown_table(["relation", "phrasing", "facts", "accuracy", "chance", "mean rank"], rows))
    if not generated:
        return text
    right = sum(a["right"] for a in generated)
    examples = [[a["question"], a["reply"][:80], "yes" if a["right"] else "no"] for a in generated[:6]]
    return (text + f"\n\n## Generated answers\n\nAsked each question and answering greedily, the model named the "
            f"right object and no other candidate in {right} of {len(generated)} replies ({right / len(generated):.1%})"
            ".\n\n" + markdown_table(["question", "reply", "right"], examples))


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
    with tqdm(desc="fact probe", unit="candidate", file=progress_stream, mininterval=5) as bar:
        results, overall = probe(model, tokenizer, args.style, relations, facts, bar)
    qa = overall.get(QUESTION)
    generated = generated_answers(model, tokenizer, args.style, relations, facts) if qa else []
    generated_accuracy = sum(a["right"] for a in generated) / len(generated) if generated else None
    generated_ended = sum(a["ended"] for a in generated) / len(generated) if generated else None
    write_json(args.out, {"model": str(args.model), "facts_file": str(args.facts), "style": args.style,
                          "relations": results, "overall": overall,
                          "qa_accuracy": qa["accuracy"] if qa else None, "qa_chance": qa["chance"] if qa else None,
                          "generated_accuracy": generated_accuracy, "generated_ended": generated_ended,
                          "generated": generated})
    write_text(args.markdown, markdown(args.model, results, overall, generated))
    log.info("%s; generated %s", {name: round(s["accuracy"], 4) for name, s in overall.items()}, generated_accuracy)


if __name__ == "__main__":
    stage_cli("knowledge", __doc__, add_arguments, run)

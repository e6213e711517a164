"""Write the bundled demo evaluation sets about the demo dump's invented country.

    python -m workflow_scripts.demo_data.make_demo_eval demo/eval

A multiple-choice set in CMMLU layout: two subjects, 地理 (which province a city is in) and 人物
(a person's field), each with 5 dev and 40 test questions whose three wrong options are drawn
from the same world, so a model can only beat the 25% chance level by having learnt the demo
corpus. And prompts.txt, questions about the world for the generation samples (edit freely), and
facts.jsonl for the fact probe (workflow_scripts/eval/knowledge.py): each relation in the phrasing the
dump states it in (`corpus`), in one it never uses (`held_out`), and as a question, each fact with
its object and 11 other candidates (chance 1/12).
Questions and prompts are about the cities and people the demo SFT data leaves out
(World.evaluated_cities, World.evaluated_people), so they test what pretraining taught.
Byte-for-byte deterministic.
"""
import csv
import json
from pathlib import Path

from workflow_scripts.demo_data.make_demo_dump import FIELDS, parse_world_args
from workflow_scripts.demo_data.make_demo_sft import CITY_QA, PERSON_QA

HEADER = ["", "Question", "A", "B", "C", "D", "Answer"]
LETTERS = "ABCD"


def question_rows(rng, items, count):
    """items: (question, right answer, pool of wrong answers) makers; rows in CMMLU layout."""
    rows = []
    for n, (question, right, pool) in enumerate(rng.sample(items, count)):
        options = rng.sample(sorted(set(pool) - {right}), 3) + [right]
        rng.shuffle(options)
        rows.append([n, question, *options, LETTERS[options.index(right)]])
    return rows


def write_subject(out: Path, subject, rng, items):
    for split, count in (("dev", 5), ("test", 40)):
        (out / split).mkdir(parents=True, exist_ok=True)
        with open(out / split / f"{subject}.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerows([HEADER, *question_rows(rng, items, count)])


def prompts(rng, world):
    cities, people = rng.sample(world.evaluated_cities, 4), rng.sample(world.evaluated_people, 4)
    questions = [q.format(**c) for c, (q, _) in zip(cities, rng.sample(CITY_QA, 4))] + \
        [q.format(**p) for p, (q, _) in zip(people, rng.sample(PERSON_QA, 4))]
    return "# One prompt per line, answered by every model with greedy decoding (eval.prompts in config.yaml).\n" + \
        "".join(q + "\n" for q in questions) + f"请介绍一下{cities[0]['name']}。\n"


# (relation, subject key, object key, the dump's phrasing, a phrasing neither the dump nor the SFT
# data uses, question, answer)
RELATIONS = [
    ("province", "cities", "province", "{subject}是{object}的一座城市", "{subject}所在的省份是{object}",
     "{subject}位于哪个省？", "{subject}位于{object}。"),
    ("river", "cities", "river", "{subject}地处{object}流域", "{subject}旁边的河流叫{object}",
     "哪条河流经{subject}？", "{object}流经{subject}。"),
    ("hometown", "people", "city", "{subject}去世后，家乡{object}为其修建了纪念馆", "{subject}的籍贯是{object}",
     "{subject}出生在哪里？", "{subject}出生于{object}。"),
    ("teacher", "people", "teacher", "{subject}自幼聪颖，十五岁时拜{object}为师", "{subject}的老师名叫{object}",
     "{subject}的老师是谁？", "{subject}曾师从{object}。"),
]
CANDIDATES = 12


def object_pools(world):
    """{object key of a relation: every value it takes in the world}, where candidates are drawn."""
    return {"province": world.provinces, "river": world.rivers, "city": [c["name"] for c in world.cities],
            "teacher": [p["name"] for p in world.people]}


def facts(rng, world):
    """The lines of facts.jsonl: each relation, then its facts about the evaluated cities or people."""
    subjects = {"cities": world.evaluated_cities, "people": world.evaluated_people}
    pools = object_pools(world)
    lines = []
    for name, kind, key, corpus, held_out, question, answer in RELATIONS:
        lines.append({"relation": name, "templates": {"corpus": corpus, "held_out": held_out},
                      "question": question, "answer": answer})
        for entity in subjects[kind]:
            candidates = rng.sample(sorted(set(pools[key]) - {entity[key]}), CANDIDATES - 1) + [entity[key]]
            rng.shuffle(candidates)
            lines.append({"subject": entity["name"], "relation": name, "object": entity[key],
                          "candidates": candidates})
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def main():
    out, world, rng = parse_world_args(__doc__, stream=2)
    write_subject(out, "地理", rng, [(f"{c['name']}位于哪个省？", c["province"], world.provinces)
                                        for c in world.evaluated_cities])
    write_subject(out, "人物", rng, [(f"{p['name']}主要研究哪个领域？", p["field"], FIELDS)
                                        for p in world.evaluated_people])
    (out / "prompts.txt").write_text(prompts(rng, world), encoding="utf-8")
    (out / "facts.jsonl").write_text(facts(rng, world), encoding="utf-8")
    print(f"2 subjects, 5 dev and 40 test questions each, 9 prompts and {len(RELATIONS)} relations of facts -> {out}")


if __name__ == "__main__":
    main()

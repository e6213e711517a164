"""Write the bundled demo evaluation sets about the demo dump's invented country.

    python -m workflow_scripts.demo_data.make_demo_eval demo/eval

A multiple-choice set in CMMLU layout: two subjects, 地理 (which province a city is in) and 人物
(a person's field), each with 5 dev and 40 test questions whose three wrong options are drawn
from the same world, so a model can only beat the 25% chance level by having learnt the demo
corpus. And prompts.txt, questions about the world for the generation samples (edit freely).
Questions and prompts are about the cities and people the demo SFT data leaves out
(World.evaluated_cities, World.evaluated_people), so they test what pretraining taught.
Byte-for-byte deterministic.
"""
import csv
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


def main():
    out, world, rng = parse_world_args(__doc__, stream=2)
    write_subject(out, "地理", rng, [(f"{c['name']}位于哪个省？", c["province"], world.provinces)
                                        for c in world.evaluated_cities])
    write_subject(out, "人物", rng, [(f"{p['name']}主要研究哪个领域？", p["field"], FIELDS)
                                        for p in world.evaluated_people])
    (out / "prompts.txt").write_text(prompts(rng, world), encoding="utf-8")
    print(f"2 subjects, 5 dev and 40 test questions each, and 9 prompts -> {out}")


if __name__ == "__main__":
    main()

"""Write the bundled demo multiple-choice set (CMMLU layout) about the demo dump's invented country.

    python -m workflow_scripts.make_demo_eval demo/eval

Two subjects, 地理 (which province a city is in) and 人物 (a person's field), each with 5 dev and
40 test questions whose three wrong options are drawn from the same world, so a model can only
beat the 25% chance level by having learnt the demo corpus. Byte-for-byte deterministic.
"""
import csv
from pathlib import Path

from workflow_scripts.make_demo_dump import FIELDS, parse_world_args

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


def main():
    out, world, rng = parse_world_args(__doc__, stream=2)
    write_subject(out, "地理", rng, [(f"{c['name']}位于哪个省？", c["province"], world.provinces)
                                        for c in world.cities])
    write_subject(out, "人物", rng, [(f"{p['name']}主要研究哪个领域？", p["field"], FIELDS)
                                        for p in world.people])
    print(f"2 subjects, 5 dev and 40 test questions each -> {out}")


if __name__ == "__main__":
    main()

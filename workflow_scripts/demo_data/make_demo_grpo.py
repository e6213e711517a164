"""Write the bundled demo question set for GRPO: questions about the demo country's facts, each with
its verifiable answer and the answer's rivals.

    python -m workflow_scripts.demo_data.make_demo_grpo demo/grpo

questions.jsonl holds one {question, answer, candidates} per line: the fact probe's four relations
(province, river, hometown, teacher; make_demo_eval.RELATIONS) asked about the cities and people the
demo's evaluation leaves out (World.sft_cities, World.sft_people), so a reward learnt here is
measured on facts RL never saw. Candidates are drawn as the probe draws them (the answer and 11
others), for `exact_answer` to refuse a reply that names a rival. Byte-for-byte deterministic.
"""
import json

from workflow_scripts.demo_data.make_demo_dump import parse_world_args
from workflow_scripts.demo_data.make_demo_eval import CANDIDATES, RELATIONS, object_pools


def questions(rng, world):
    subjects = {"cities": world.sft_cities, "people": world.sft_people}
    pools = object_pools(world)
    records = []
    for _, kind, key, _, _, question, _ in RELATIONS:
        for entity in subjects[kind]:
            rivals = rng.sample(sorted(set(pools[key]) - {entity[key]}), CANDIDATES - 1)
            records.append({"question": question.format(subject=entity["name"]), "answer": entity[key],
                            "candidates": sorted(rivals + [entity[key]])})
    rng.shuffle(records)
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def main():
    out, world, rng = parse_world_args(__doc__, stream=5)
    out.mkdir(parents=True, exist_ok=True)
    text = questions(rng, world)
    (out / "questions.jsonl").write_text(text, encoding="utf-8")
    print(f"{text.count(chr(10))} questions -> {out}")


if __name__ == "__main__":
    main()

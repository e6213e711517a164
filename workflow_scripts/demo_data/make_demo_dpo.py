"""Write the bundled demo preference pairs: questions about the demo dump's invented country, each
with the right answer (chosen) and an answer that states another city's or person's facts
(rejected).

    python -m workflow_scripts.demo_data.make_demo_dpo demo/dpo

300 questions (296 pairs: those whose two answers happen to agree are dropped) in the layout
of ../shared/data/dpo/dpo_zh_500.jsonl ({conversations, chosen, rejected} with string answers),
written from the same templates as the demo SFT answers, so DPO pushes the SFT model towards
the facts it read in pretraining. Byte-for-byte deterministic.
"""
import json

from workflow_scripts.demo_data.make_demo_dump import parse_world_args
from workflow_scripts.demo_data.make_demo_sft import city_turns, person_turns


def pair(rng, items, turns):
    """A question about one item, answered with its facts and, wrongly, with another item's."""
    right, other = rng.sample(items, 2)
    index = rng.randrange(len(turns(rng, right)))
    question, chosen = sorted(turns(rng, right))[index]
    wrong_facts = {**other, "name": right["name"]}
    _, rejected = sorted(turns(rng, wrong_facts))[index]
    return {"conversations": [{"from": "human", "value": question}], "chosen": chosen, "rejected": rejected}


def main():
    out, world, rng = parse_world_args(__doc__, stream=3)
    out.mkdir(parents=True, exist_ok=True)
    pairs = [pair(rng, world.sft_cities, city_turns) if n % 2 else pair(rng, world.sft_people, person_turns)
             for n in range(300)]
    pairs = [p for p in pairs if p["chosen"] != p["rejected"]]
    (out / "demo_pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs),
                                          encoding="utf-8")
    print(f"{len(pairs)} preference pairs -> {out}")


if __name__ == "__main__":
    main()

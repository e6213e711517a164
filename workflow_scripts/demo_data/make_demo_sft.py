"""Write the bundled demo SFT sets: Chinese questions and answers about the demo dump's invented country.

    python -m workflow_scripts.demo_data.make_demo_sft demo/sft

The facts come from the same World (same seed) as make_demo_dump, so the SFT answers agree with
what the base model read in pretraining; they are about the cities and people the demo's
evaluation does not ask about (World.sft_cities, World.sft_people). Two files in two formats, as users mix them:
demo_chat.jsonl (messages format: single- and multi-turn, some with a system message) and
demo_alpaca.json (Alpaca format, some with an `input`). Every sentence is written here from
templates; the output is byte-for-byte deterministic.
"""
import json

from workflow_scripts.demo_data.make_demo_dump import parse_world_args

SYSTEM = ["你是一个乐于助人的中文助手。", "你是一位熟悉地理和历史的助手，请简洁地回答。"]


CITY_QA = [
    ("{name}位于哪个省？", "{name}位于{province}。"),
    ("{name}有多少人口？", "{name}的人口约为{population}万人。"),
    ("{name}是哪一年建立的？", "{name}建于{founded}年。"),
    ("{name}的主要产业有哪些？", "{name}的主要产业有{industry_list}。"),
    ("{name}属于什么气候？", "{name}属于{climate}。"),
    ("哪条河流经{name}？", "{river}流经{name}，城市的北面是{mountain}。"),
]
PERSON_QA = [
    ("{name}是谁？", "{name}（{born}年－{died}年）是一位{field}学者，出生于{city}。"),
    ("{name}研究什么？", "{name}主要研究{field}，并改进了{object}。"),
    ("{name}的老师是谁？", "{name}曾师从{teacher}。"),
    ("{name}活了多少岁？", "{name}生于{born}年，卒于{died}年，享年{age}岁。"),
]


def shuffled_turns(rng, templates, facts):
    pairs = [(question.format(**facts), answer.format(**facts)) for question, answer in templates]
    rng.shuffle(pairs)
    return pairs


def city_turns(rng, city):
    return shuffled_turns(rng, CITY_QA, {**city, "industry_list": "、".join(city["industries"])})


def person_turns(rng, person):
    return shuffled_turns(rng, PERSON_QA, {**person, "age": person["died"] - person["born"]})


def chat_records(rng, world, count):
    records = []
    for n in range(count):
        turns = (city_turns(rng, rng.choice(world.sft_cities)) if n % 2
                 else person_turns(rng, rng.choice(world.sft_people)))
        exchanges = rng.choice((1, 1, 2, 3))
        messages = [{"role": "system", "content": rng.choice(SYSTEM)}] if rng.random() < 0.3 else []
        for question, answer in turns[:exchanges]:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        records.append({"messages": messages})
    return records


def alpaca_records(rng, world, count):
    records = []
    for n in range(count):
        city = rng.choice(world.sft_cities)
        if n % 3 == 0:
            records.append({"instruction": "根据下面的信息，用一句话介绍这座城市。",
                            "input": f"名称：{city['name']}；省份：{city['province']}；人口：{city['population']}万",
                            "output": f"{city['name']}是{city['province']}的一座城市，人口约{city['population']}万。"})
        else:
            question, answer = city_turns(rng, city)[0]
            records.append({"instruction": question, "input": "", "output": answer})
    return records


def main():
    out, world, rng = parse_world_args(__doc__, stream=1)
    out.mkdir(parents=True, exist_ok=True)
    chat = chat_records(rng, world, 400)
    (out / "demo_chat.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat),
                                              encoding="utf-8")
    alpaca = alpaca_records(rng, world, 200)
    (out / "demo_alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False, indent=1) + "\n",
                                               encoding="utf-8")
    print(f"{len(chat)} chat records, {len(alpaca)} Alpaca records -> {out}")


if __name__ == "__main__":
    main()

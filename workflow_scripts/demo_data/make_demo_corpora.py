"""Write the bundled demo's extra corpora, one per format an extra corpus may come in, about the
demo dump's invented country (config/presets/corpora.yaml mixes them with the demo zhwiki).

    python -m workflow_scripts.demo_data.make_demo_corpora demo/corpora

  gazetteer.jsonl   local records of each city's produce and remedies ({title, content} lines),
                    with reposts (exact duplicates) and a few empty records;
  textbook/*.txt    a geography textbook, one lesson per province and file;
  forum.parquet     a question-and-answer forum in traditional characters ({subject, body}):
                    questions shorter than zhwiki's clean.min_chars, one-line replies, and posts
                    that quote the gazetteer (duplicates across corpora).
Byte-for-byte deterministic.
"""
import json

import opencc
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.demo_data.make_demo_dump import INDUSTRIES, SEASONS, parse_world_args

HERBS = ["金银花", "枸杞", "菊花", "薄荷", "艾草", "茯苓", "山药", "陈皮", "甘草", "当归", "黄芪", "莲子"]
AILMENTS = ["风寒感冒", "咳嗽", "失眠", "消化不良", "关节疼痛", "口腔溃疡", "中暑", "湿疹"]
THANKS = ["谢谢分享！", "学到了。", "顶一下", "同问", "已收藏，感谢。"]


def gazetteer_entry(rng, city):
    herb, other = rng.sample(HERBS, 2)
    ailment = rng.choice(AILMENTS)
    return {
        "title": f"{city['name']}志·物产",
        "content": (
            f"{city['name']}隶属{city['province']}，地处{city['river']}之滨，{city['climate']}，宜于种植{herb}与{other}。"
            f"据旧志记载，当地农户每年{rng.choice(SEASONS)}采收{herb}，晒干后销往{city['province']}各地。"
            f"民间常以{herb}配{other}煎汤，用于缓解{ailment}，此法流传已有{rng.randrange(80, 600)}余年。"
            f"城中药铺以{city['industries'][0]}起家者居多，至今仍保留着前店后坊的格局。"
            f"近年来，{city['name']}将{herb}种植与{rng.choice(INDUSTRIES)}结合，"
            f"建成了约{rng.randrange(2, 90)}个种植基地，"
            f"年产量约{rng.randrange(100, 9000)}吨。医家提醒，{ailment}症状持续不退者应及时就医，不可单凭偏方。"
        ),
    }


def gazetteer(rng, world):
    """Each city's record, reposts of 10 of them and 4 empty records: (all records, the cities' own)."""
    entries = [gazetteer_entry(rng, city) for city in world.cities]
    reposts = [{**entry, "title": entry["title"] + "（转载）"} for entry in rng.sample(entries, 10)]
    empty = [{"title": f"{city['name']}志·补遗", "content": ""} for city in world.cities[:4]]
    return entries + reposts + empty, entries


def lesson(rng, world, number, province):
    cities = [c for c in world.cities if c["province"] == province]
    rivers = sorted({c["river"] for c in cities})
    lines = [f"第{number}课　{province}", ""]
    lines.append(f"{province}共有{len(cities)}座城市，境内河流主要有{'、'.join(rivers[:5])}等。")
    for city in cities[:12]:
        lines.append(f"{city['name']}位于{city['river']}沿岸，面积约{city['area']}平方公里，人口约{city['population']}万，"
                     f"主要产业是{'、'.join(city['industries'])}。")
    lines += ["", "思考与练习：", f"一、{province}的城市大多分布在河流沿岸，这与哪些自然条件有关？",
              f"二、比较{cities[0]['name']}与{cities[-1]['name']}的产业，说说它们各有什么特点。"]
    return "\n".join(lines) + "\n"


def forum(rng, world, gazetteer_entries):
    s2t = opencc.OpenCC("s2t")
    posts = []
    for k in range(360):
        city, herb, ailment = rng.choice(world.cities), rng.choice(HERBS), rng.choice(AILMENTS)
        body = (f"请问各位，{city['name']}一带的{herb}质量如何？家里长辈有{ailment}的老毛病，"
                f"我打算{rng.choice(SEASONS)}去{city['province']}买一些回来，哪里买比较可靠？")
        posts.append({"subject": s2t.convert(f"{city['name']}的{herb}"), "body": s2t.convert(body)})
        if k % 9 == 0:
            posts.append({"subject": "回覆", "body": s2t.convert(rng.choice(THANKS))})
    for entry in rng.sample(gazetteer_entries, 8):
        posts.append({"subject": s2t.convert("转贴：" + entry["title"]), "body": s2t.convert(entry["content"])})
    return posts


def main():
    out, world, rng = parse_world_args(__doc__, stream=4)
    records, entries = gazetteer(rng, world)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gazetteer.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                         encoding="utf-8")
    (out / "textbook").mkdir(exist_ok=True)
    for number, province in enumerate(world.provinces, start=1):
        (out / "textbook" / f"lesson-{number:02d}.txt").write_text(lesson(rng, world, number, province),
                                                                   encoding="utf-8")
    posts = forum(rng, world, entries)
    pq.write_table(pa.Table.from_pylist(posts), out / "forum.parquet", compression="zstd")
    print(f"{len(records)} gazetteer records, {len(world.provinces)} lessons, {len(posts)} forum posts -> {out}")


if __name__ == "__main__":
    main()

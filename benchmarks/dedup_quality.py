"""Near-duplicate recall and precision of the minhash and dedup stages on real text, per setting.

    python benchmarks/dedup_quality.py --originals 240

Originals are real, distinct documents: the zhwiki articles of
../shared/data/zhwiki/wikiextractor_output_sample.txt (at least 400 characters) and passages of
about 2,000 characters from the classic novels' chapters (../shared/data/pretrain_text/), so the
negatives include other chapters of the same novel. Each original gets near copies:
characters substituted at 1, 3, 5 and 10 % (by other characters of the same text); 10 % of its
sentences deleted, or as many sentences of another original inserted; its paragraphs (runs of
four sentences) reordered; and a header and footer of about 150 characters added, the same for
every copy (a repost site's boilerplate). Stubs: 400 short articles written from one template
(a county's province, area, population and founding year), as real zhwiki has tens of thousands.

For each setting (character n-gram, threshold, permutations) the stages' own code
(lib.corpus.minhash_signatures.signatures; lib.corpus.near_duplicates' bands, exact copies and
greedy pass, as find_duplicates below joins them) runs on the originals followed by their copies,
and separately on the stubs. Recall per edit: the share of copies
removed as a duplicate of their own original or of another copy of it. Precision: the share of
all removals that are such. Writes benchmarks/results/dedup_quality.{json,md}.
"""
import argparse
import random
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from results_io import provenance, save  # noqa: E402

from workflow_scripts.lib.corpus.minhash_signatures import exact_key, signatures as minhash_signatures  # noqa: E402
from workflow_scripts.lib.corpus.near_duplicates import (band_keys, band_shape, buckets, exact_copies,  # noqa: E402
                                                         greedy_removals, verified_pairs)

DATA = REPO.parent / "shared" / "data"
SENTENCE = re.compile(r"(?<=[。！？；\n])")
EDITS = ["substitute 1%", "substitute 3%", "substitute 5%", "substitute 10%", "delete 10% of sentences",
         "insert 10% sentences", "reorder paragraphs", "header and footer"]
NGRAMS, THRESHOLDS = (3, 4, 5, 7), (0.5, 0.55, 0.6, 0.7, 0.8)
HEADER = "本文转载自网络，版权归原作者所有，如有侵权请联系删除。欢迎关注本站公众号，获取更多精彩内容与每日更新。"
FOOTER = ("（完）责任编辑：小编。本站所有文章仅供学习交流，不代表本站观点。"
          "点击阅读原文，查看更多相关资讯与历史文章推荐。")


def find_duplicates(exact_keys, signatures, threshold):
    """What the dedup_bands, dedup_exact and dedup_join jobs decide, in one process: every band's
    verified pairs, then the greedy pass (the set fits in memory here)."""
    bands, rows = band_shape(threshold, signatures.shape[1])
    pairs = [verified_pairs(buckets(band_keys(signatures, band, rows)), signatures, lambda p: p, band, (bands, rows),
                            threshold) for band in range(bands)]
    earlier, later, similarity = (np.concatenate(parts) for parts in zip(*pairs))
    return greedy_removals(len(exact_keys), *exact_copies(exact_keys), earlier, later, similarity)


def zhwiki_articles():
    text = (DATA / "zhwiki" / "wikiextractor_output_sample.txt").read_text(encoding="utf-8")
    bodies = [block.split(">", 1)[1] for block in re.findall(r"<doc [^>]*>.*?(?=</doc>)", text, re.S)]
    return [body.strip() for body in bodies if len(body.strip()) >= 400]


def novel_passages(rng, count):
    chapters = sorted((DATA / "pretrain_text" / "chinese-novels").glob("*.txt"))
    passages = []
    for path in rng.sample(chapters, count):
        text = path.read_text(encoding="utf-8").replace("\u00a0", "").strip()
        start = rng.randrange(max(1, len(text) - 2000))
        passages.append(text[start:start + 2000])
    return passages


def sentences(text):
    return [s for s in SENTENCE.split(text) if s.strip()]


def substitute(rng, text, rate):
    chars = list(text)
    pool = [c for c in chars if not c.isspace()]
    for i in rng.sample(range(len(chars)), round(rate * len(chars))):
        chars[i] = rng.choice(pool)
    return "".join(chars)


def near_copy(rng, text, edit, other):
    parts = sentences(text)
    tenth = max(1, round(len(parts) / 10))
    if edit.startswith("substitute"):
        return substitute(rng, text, int(edit.split()[1].rstrip("%")) / 100)
    if edit.startswith("delete"):
        gone = set(rng.sample(range(len(parts)), tenth))
        return "".join(p for i, p in enumerate(parts) if i not in gone)
    if edit.startswith("insert"):
        for sentence in rng.sample(sentences(other), min(tenth, len(sentences(other)))):
            parts.insert(rng.randrange(len(parts) + 1), sentence)
        return "".join(parts)
    if edit.startswith("reorder"):
        paragraphs = ["".join(parts[i:i + 4]) for i in range(0, len(parts), 4)]
        rng.shuffle(paragraphs)
        return "\n".join(paragraphs)
    return f"{HEADER}\n{text}\n{FOOTER}"


def stubs(rng, count):
    han = "安宁青松川景临丹永竹岚彰泽玉宜桃中长天河华远山平阳清南北东西明德兴隆庆昌文"
    province = [rng.choice(han) + rng.choice(han) + "省" for _ in range(12)]
    return [f"{rng.choice(han)}{rng.choice(han)}县是{rng.choice(province)}下辖的一个县，"
            f"位于该省{rng.choice('东南西北')}部。"
            f"全县面积{rng.randrange(300, 5000)}平方公里，人口约{rng.randrange(5, 90)}万（2020年），"
            f"县人民政府驻{rng.choice(han)}{rng.choice(han)}镇。该县始建于{rng.randrange(200, 1900)}年。"
            for _ in range(count)]


def signatures(texts, ngram, num_perm):
    return minhash_signatures(texts, ngram, num_perm, 1), [exact_key(t) for t in texts]


def removals(signed, threshold):
    """{index: index of the kept document it duplicates}, by dedup's own code."""
    values, exact = signed
    removed, _, kept, _ = find_duplicates(np.array(exact, dtype="S20"), values, threshold)
    return dict(zip(removed.tolist(), kept.tolist()))


def score(family, edits, removed):
    """Recall per edit, precision, and how many originals (distinct documents) were removed."""
    recall = {edit: sum(1 for i, e in enumerate(edits) if e == edit and i in removed
                        and family[removed[i]] == family[i]) / edits.count(edit) for edit in EDITS}
    precision = sum(family[kept] == family[doc] for doc, kept in removed.items()) / max(1, len(removed))
    return recall, precision, sum(1 for i, e in enumerate(edits) if e is None and i in removed)


def evaluate(signed, signed_stubs, family, edits, threshold):
    recall, precision, originals_removed = score(family, edits, removals(signed, threshold))
    bands, rows = band_shape(threshold, signed[0].shape[1])
    return {"threshold": threshold, "bands": bands, "rows": rows, "recall": recall,
            "precision": round(precision, 4),
            "originals_removed": originals_removed, "stubs_removed": len(removals(signed_stubs, threshold))}


def markdown(report):
    head = ("| n-gram | threshold | perms | bands × rows | " + " | ".join(EDITS)
            + " | precision | originals removed | stubs removed |")
    lines = [f"# Near-duplicate detection on real text ({report['machine']})", "", f"`{report['command']}`", "",
             f"{report['originals']} real originals ({report['zhwiki_articles']} zhwiki articles, the rest novel "
             f"passages), one copy per edit each; {report['stubs']} template stubs. Recall per edit type; "
             "precision over all removals.", "", head, "|" + "---|" * (len(EDITS) + 7)]
    for r in report["rows"]:
        lines.append(f"| {r['ngram']} | {r['threshold']} | {r['num_perm']} | {r['bands']} × {r['rows']} | "
                     + " | ".join(f"{r['recall'][e]:.2f}" for e in EDITS)
                     + f" | {r['precision']:.3f} | {r['originals_removed']} | {r['stubs_removed']} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--originals", type=int, default=240)
    ap.add_argument("--stubs", type=int, default=400)
    ap.add_argument("--num-perm", type=int, nargs="+", default=[128])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    articles = zhwiki_articles()
    originals = articles + novel_passages(rng, args.originals - len(articles))
    texts, family, edits = list(originals), list(range(len(originals))), [None] * len(originals)
    for n, text in enumerate(originals):
        for edit in EDITS:
            texts.append(near_copy(rng, text, edit, originals[(n + 1) % len(originals)]))
            family.append(n)
            edits.append(edit)
    stub_texts = stubs(rng, args.stubs)
    rows = []
    for num_perm in args.num_perm:
        for ngram in NGRAMS:
            signed, signed_stubs = signatures(texts, ngram, num_perm), signatures(stub_texts, ngram, num_perm)
            for threshold in THRESHOLDS:
                rows.append({"ngram": ngram, "num_perm": num_perm,
                             **evaluate(signed, signed_stubs, family, edits, threshold)})
                print(rows[-1], flush=True)
    report = {**provenance(), "originals": len(originals), "zhwiki_articles": len(articles), "stubs": args.stubs,
              "rows": rows}
    save("dedup_quality", report, markdown(report))


if __name__ == "__main__":
    main()

"""MinHash signature speed and accuracy: the minhash stage's hashing (numpy n-gram hashes of the
text into rensa's RMinHash, workflow_scripts.lib.corpus.minhash_signatures) against rensa's RMinHash and
CMinHash and datasketch 2.0 on ready-made byte shingles, in one run.

    python benchmarks/minhash_speed.py --repeats 15

On the first --documents real novel chapters in ../shared/data/pretrain_text/chinese-novels/
(one chapter a document, whitespace removed). The stage's time starts from the text; the others'
from the set of byte shingles, already built (building it took longer than rensa's hashing), so the comparison favours
them. A measurement signs the whole set as often as fits in --min-seconds (one pass of the fast
contenders takes about 30 ms, where the clock's and the scheduler's noise is a large share); a
round measures every contender once, in an order that rotates from round to round, and --repeats
rounds run in this process. Each contender's median rate is reported with its spread, in MB of
text per second; `ratio_vs_rensa` is the median of the stage's rate over rensa RMinHash's within
each round (a slow spell of this shared machine slows both) with an interval for that median of
at least 95 % coverage (order statistics: no assumption about the noise). Three rounds of one pass each did not
reproduce their own ratio when rerun.

Accuracy: each chapter gets a near copy with a fraction of its characters replaced (seeded), and
the Jaccard similarity each contender's signatures estimate is compared with the exact Jaccard of
the two shingle sets, and with a threshold (is the pair a near duplicate or not). Writes
benchmarks/results/minhash_speed.{json,md}.
"""
import argparse
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from datasketch import MinHash
from rensa import CMinHash, RMinHash

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from workflow_scripts.lib.corpus.minhash_signatures import WHITESPACE, signatures  # noqa: E402
from results_io import median_interval, paired_ratio, provenance, rotated_rounds, save  # noqa: E402

NOVELS = REPO.parent / "shared" / "data" / "pretrain_text" / "chinese-novels"
OURS, RENSA = "zhwiki-llm (numpy n-gram hashes into rensa RMinHash), from the text", "rensa 0.5.0 RMinHash"


def shingle_sets(texts, n):
    return [list({text[i:i + n].encode() for i in range(max(1, len(text) - n + 1))}) for text in texts]


def datasketch_bulk(sets, num_perm, seed, hashfunc, scheme):
    return np.array([m.hashvalues for m in MinHash.bulk(sets, num_perm=num_perm, seed=seed, hashfunc=hashfunc,
                                                        scheme=scheme)])


def cminhash(sets, num_perm, seed):
    rows = []
    for shingles in sets:
        minhash = CMinHash(num_perm=num_perm, seed=seed)
        minhash.update(shingles)
        rows.append(minhash.digest())
    return np.array(rows)


def contenders(args):
    """{name: (takes the texts (True) or the shingle sets, signatures of a list of them)}."""
    n, p, s = args.ngram, args.num_perm, args.seed
    return {
        OURS: (True, lambda texts: signatures(texts, n, p, s)),
        RENSA: (False, lambda sets: np.array(RMinHash.digest_matrix_from_token_byte_sets(sets, p, s).to_rows())),
        "rensa 0.5.0 CMinHash": (False, lambda sets: cminhash(sets, p, s)),
        "datasketch 2.0 bulk (crc32, affine32; the stage before)": (
            False, lambda sets: datasketch_bulk(sets, p, s, zlib.crc32, "affine32")),
        "datasketch 2.0 default (SHA-1)": (False, lambda sets: datasketch_bulk(sets, p, s, None, "affine32")),
    }


def rate(sign, data, megabytes, min_seconds):
    """MB per second of whole passes over the data, as many as fit in min_seconds (one at least)."""
    passes, started = 0, time.perf_counter()
    while not passes or time.perf_counter() - started < min_seconds:
        sign(data)
        passes += 1
    return passes * megabytes / (time.perf_counter() - started)


def speed(texts, sets, megabytes, args):
    """{contender: its rate in each round}; each round measures every contender, in a rotated order."""
    named = list(contenders(args).items())
    runs = {name: [] for name, _ in named}
    for _, in_order in rotated_rounds(named, args.repeats):
        for name, (from_text, sign) in in_order:
            runs[name].append(rate(sign, texts if from_text else sets, megabytes, args.min_seconds))
    return runs


def near_copy(text, fraction, rng):
    """text with `fraction` of its characters replaced by random common Han characters."""
    chars = list(text)
    for i in rng.sample(range(len(chars)), int(fraction * len(chars))):
        chars[i] = chr(rng.randrange(0x4E00, 0x6000))
    return "".join(chars)


def accuracy(texts, originals, args):
    """Per contender: mean |estimated - exact| Jaccard, and pairs on the wrong side of the threshold."""
    rng = random.Random(args.seed)
    copies = [near_copy(text, args.replace_fractions[n % len(args.replace_fractions)], rng)
              for n, text in enumerate(texts)]
    copied = shingle_sets(copies, args.ngram)
    exact = np.array([len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(originals, copied)])
    result = {"pairs": len(exact), "exact_jaccard_range": [round(exact.min(), 3), round(exact.max(), 3)],
              "near_duplicates_exact": int((exact >= args.threshold).sum())}
    for name, (from_text, sign) in contenders(args).items():
        estimate = (sign(texts if from_text else originals) == sign(copies if from_text else copied)).mean(axis=1)
        result[name] = {"mean_abs_error": round(float(np.abs(estimate - exact).mean()), 4),
                        "wrong_side_of_threshold": int(((estimate >= args.threshold)
                                                        != (exact >= args.threshold)).sum())}
    return result


def markdown(report):
    quality = report["accuracy"]
    lines = [f"# MinHash signatures ({report['documents']} chapters, {report['megabytes']} MB, {report['machine']})",
             "", f"`{report['command']}`", "",
             f"{report['num_perm']} permutations, character {report['ngram']}-grams, one process. The stage starts "
             "from the text; the others from ready byte shingles (their building not counted). "
             f"{report['rounds']} rounds, each measurement at least {report['min_seconds']} s.", "",
             f"| contender | median MB/s | {report['speed'][OURS]['coverage']:.1%} interval of the median | "
             "slowest – fastest round |",
             "|---|---:|---|---|"]
    lines += [f"| {name} | {r['median']} | {r['interval'][0]} – {r['interval'][1]} | "
              f"{min(r['every_run'])} – {max(r['every_run'])} |" for name, r in report["speed"].items()]
    ratio = report["ratio_vs_rensa"]
    lines += ["", f"`ratio_vs_rensa` (the stage over rensa RMinHash, round by round): median {ratio['median']}, "
              f"{ratio['coverage']:.1%} interval {ratio['interval'][0]} – {ratio['interval'][1]}.", "",
              f"Accuracy on {quality['pairs']} chapter / near-copy pairs (exact Jaccard "
              f"{quality['exact_jaccard_range'][0]}–{quality['exact_jaccard_range'][1]}; "
              f"{quality['near_duplicates_exact']} at or above the threshold {report['threshold']}):", "",
              "| contender | mean abs. error of estimated Jaccard | pairs on the wrong side of the threshold |",
              "|---|---:|---:|"]
    lines += [f"| {name} | {quality[name]['mean_abs_error']} | {quality[name]['wrong_side_of_threshold']} |"
              for name in report["speed"]]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The measured set (3.4 MB). Further on, chapters padded to 1.3M characters with a few
    # thousand distinct 5-grams repeated (which clean's repetition filter removes before minhash)
    # dominate the size: a contender fed ready sets skips the repeats, one reading the text cannot
    # (all 461: the stage 121 MB/s, rensa on sets 337).
    ap.add_argument("--documents", type=int, default=200, help="the first N chapters (0: all 461)")
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--replace-fractions", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05])
    ap.add_argument("--repeats", type=int, default=15, help="rounds")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="the shortest measurement")
    args = ap.parse_args()
    paths = sorted(NOVELS.glob("*.txt"))[:args.documents or None]
    # Whitespace out first (shingles ignore it): some chapters are padded with megabytes of U+00A0,
    # which near_copy would otherwise spend its replacements on.
    texts = [WHITESPACE.sub("", path.read_text(encoding="utf-8")) for path in paths]
    sets, megabytes = shingle_sets(texts, args.ngram), sum(len(t.encode()) for t in texts) / 1e6
    runs = speed(texts, sets, megabytes, args)
    report = {**provenance(), "documents": len(texts), "megabytes": round(megabytes, 2), "ngram": args.ngram,
              "num_perm": args.num_perm, "threshold": args.threshold, "rounds": args.repeats,
              "min_seconds": args.min_seconds,
              "speed": {name: {**median_interval(rates), "every_run": [round(r, 2) for r in rates]}
                        for name, rates in runs.items()},
              "ratio_vs_rensa": paired_ratio(runs[OURS], runs[RENSA]), "accuracy": accuracy(texts, sets, args)}
    save("minhash_speed", report, markdown(report))


if __name__ == "__main__":
    main()

"""MinHash signature speed and accuracy: the minhash stage's hashing (zlib.crc32 into datasketch's
affine32 permutations) against datasketch's default (SHA-1 into the same permutations).

    python benchmarks/minhash_speed.py --repeats 3

On the real novels in ../shared/data/pretrain_text/chinese-novels/ (one chapter a document,
whitespace removed), both compute the signatures of every chapter from the same shingle sets
(workflow_scripts.minhash), alternating --repeats times in this process; medians of shingles per
second are compared.
Accuracy: each chapter gets a near copy with a fraction of its characters replaced (seeded), and
the Jaccard similarity that each scheme's signatures estimate is compared with the exact Jaccard
of the two shingle sets, and with dedup's threshold (is the pair a near duplicate or not).
Writes benchmarks/results/minhash_speed.{json,md}.
"""
import argparse
import random
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from datasketch import MinHash

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from workflow_scripts.lib.minhash_signatures import MINHASH_SCHEME, WHITESPACE, shingles  # noqa: E402
from results_io import provenance, save  # noqa: E402

NOVELS = REPO.parent / "shared" / "data" / "pretrain_text" / "chinese-novels"
HASHES = {"zhwiki-llm (crc32)": zlib.crc32, "datasketch default (SHA-1)": None}


def signatures(shingle_sets, hashfunc, num_perm, seed):
    signed = []
    for shingle_set in shingle_sets:
        minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=hashfunc, scheme=MINHASH_SCHEME)
        minhash.update_batch(list(shingle_set))
        signed.append(minhash.hashvalues)
    return np.array(signed)


def near_copy(text, fraction, rng):
    """text with `fraction` of its characters replaced by random common Han characters."""
    chars = list(text)
    for i in rng.sample(range(len(chars)), int(fraction * len(chars))):
        chars[i] = chr(rng.randrange(0x4E00, 0x6000))
    return "".join(chars)


def speed(shingle_sets, args):
    total = sum(len(s) for s in shingle_sets)
    runs = {name: [] for name in HASHES}
    for _ in range(args.repeats):
        for name, hashfunc in HASHES.items():
            started = time.perf_counter()
            signatures(shingle_sets, hashfunc, args.num_perm, args.seed)
            runs[name].append(total / (time.perf_counter() - started))
    return {name: {"shingles_per_s": round(statistics.median(rates)), "every_run": [round(r) for r in rates]}
            for name, rates in runs.items()}


def accuracy(texts, args):
    """Per scheme: mean |estimated - exact| Jaccard, and pairs on the wrong side of the threshold."""
    rng = random.Random(args.seed)
    originals, copies, exact = [], [], []
    for n, text in enumerate(texts):
        fraction = args.replace_fractions[n % len(args.replace_fractions)]
        a, b = shingles(text, args.ngram), shingles(near_copy(text, fraction, rng), args.ngram)
        originals.append(a)
        copies.append(b)
        exact.append(len(a & b) / len(a | b))
    exact = np.array(exact)
    result = {"pairs": len(exact), "exact_jaccard_range": [round(exact.min(), 3), round(exact.max(), 3)],
              "near_duplicates_exact": int((exact >= args.threshold).sum())}
    for name, hashfunc in HASHES.items():
        estimate = (signatures(originals, hashfunc, args.num_perm, args.seed)
                    == signatures(copies, hashfunc, args.num_perm, args.seed)).mean(axis=1)
        result[name] = {"mean_abs_error": round(float(np.abs(estimate - exact).mean()), 4),
                        "wrong_side_of_threshold": int(((estimate >= args.threshold)
                                                        != (exact >= args.threshold)).sum())}
    return result


def markdown(report):
    quality = report["accuracy"]
    lines = [f"# MinHash signatures ({report['documents']} chapters, {report['shingles']:,} shingles, "
             f"{report['machine']})", "", f"`{report['command']}`", "",
             f"{report['num_perm']} permutations, character {report['ngram']}-grams, one process.", "",
             "| hashing | median shingles/s | every run | vs datasketch default |", "|---|---:|---|---:|"]
    baseline = report["speed"]["datasketch default (SHA-1)"]["shingles_per_s"]
    lines += [f"| {name} | {r['shingles_per_s']:,} | {r['every_run']} | {r['shingles_per_s'] / baseline:.2f}× |"
              for name, r in report["speed"].items()]
    lines += ["", f"Accuracy on {quality['pairs']} chapter / near-copy pairs (exact Jaccard "
              f"{quality['exact_jaccard_range'][0]}–{quality['exact_jaccard_range'][1]}; "
              f"{quality['near_duplicates_exact']} at or above the threshold {report['threshold']}):", "",
              "| hashing | mean abs. error of estimated Jaccard | pairs on the wrong side of the threshold |",
              "|---|---:|---:|"]
    lines += [f"| {name} | {quality[name]['mean_abs_error']} | {quality[name]['wrong_side_of_threshold']} |"
              for name in HASHES]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=0, help="the first N chapters (0: all 461)")
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--replace-fractions", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    paths = sorted(NOVELS.glob("*.txt"))[:args.documents or None]
    # Whitespace out first (shingles ignore it): some chapters are padded with megabytes of U+00A0,
    # which near_copy would otherwise spend its replacements on.
    texts = [WHITESPACE.sub("", path.read_text(encoding="utf-8")) for path in paths]
    shingle_sets = [shingles(text, args.ngram) for text in texts]
    report = {**provenance(), "documents": len(texts), "shingles": sum(len(s) for s in shingle_sets),
              "ngram": args.ngram, "num_perm": args.num_perm, "threshold": args.threshold,
              "speed": speed(shingle_sets, args), "accuracy": accuracy(texts, args)}
    save("minhash_speed", report, markdown(report))


if __name__ == "__main__":
    main()

"""MinHash signatures and exact-duplicate keys of documents, as the minhash stage writes them and
the benchmarks measure them.

Documents are compared as sets of character n-grams with all whitespace removed. Shingles are
hashed with zlib.crc32 and datasketch's affine32 permutations (which mix the hash first): 2.8x
the shingles/s of datasketch's default SHA-1 on real novel chapters, estimating Jaccard as well
(benchmarks/minhash_speed.py; results/minhash_speed.md).
"""
import hashlib
import re
import zlib

from datasketch import MinHash

# datasketch's permutation scheme, which benchmarks/dedup_scaling.py rebuilds signatures with
MINHASH_SCHEME = "affine32"
WHITESPACE = re.compile(r"\s+")


def shingles(text, n):
    text = WHITESPACE.sub("", text)
    return {text[i:i + n].encode() for i in range(max(1, len(text) - n + 1))}


def signature(text, n, num_perm, seed):
    minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32, scheme=MINHASH_SCHEME)
    minhash.update_batch(list(shingles(text, n)))
    return minhash.hashvalues


def exact_key(text):
    """Documents that differ only in whitespace are exact duplicates."""
    return hashlib.sha1(WHITESPACE.sub("", text).encode()).digest()

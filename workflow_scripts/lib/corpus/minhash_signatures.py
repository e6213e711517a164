"""MinHash signatures and exact-duplicate keys of documents, as the minhash stage writes them and
the benchmarks measure them.

Documents are compared as sets of character n-grams with all whitespace removed. No shingle is
ever a Python object: each document's code points become one numpy array, every n-gram a 64-bit
polynomial hash of its n code points (n multiply-adds over the whole array, then a mixing step),
and rensa's RMinHash (Rust, MIT) takes all of a batch's hashes in one flat buffer and applies its
permutations. A repeated n-gram hashes to the same value and cannot change a minimum, so the
duplicates of a set need not be removed. Building the set of shingle strings alone ran at 6.6 MB/s
of text, and the datasketch hashing that followed it brought the whole to 2.8-4 MB/s; this runs at
or above what rensa itself reaches on ready-made byte shingles (benchmarks/minhash_speed.py).
"""
import hashlib
import re

import numpy as np
from rensa import RMinHash

from workflow_scripts.lib.settings import definitions

WHITESPACE = re.compile(r"\s+")
# One odd 64-bit multiplier per position in the n-gram, fixed so that signatures never change.
POSITION_MULTIPLIERS = np.random.default_rng(20261203).integers(
    0, 2**63, definitions("dedup")["ngram"]["maximum"], dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def code_points(text):
    return np.frombuffer(WHITESPACE.sub("", text).encode("utf-32-le"), dtype="<u4").astype(np.uint64)


def shingle_hashes(text, n):
    """The 64-bit hash of each character n-gram of `text` (whitespace removed); a text shorter than
    n is one shingle, as is the empty text."""
    points = code_points(text)
    if len(points) < n:
        points = np.concatenate([points, np.zeros(n - len(points), dtype=np.uint64)])
    count = len(points) - n + 1
    hashes = points[:count] * POSITION_MULTIPLIERS[0]
    for k in range(1, n):
        hashes += points[k:k + count] * POSITION_MULTIPLIERS[k]
    hashes ^= hashes >> np.uint64(29)  # the high bits carry the later positions; fold them down
    return hashes


def signatures(texts, n, num_perm, seed):
    """[len(texts), num_perm] uint32: the MinHash signature of each text's n-gram set."""
    hashed = [shingle_hashes(text, n) for text in texts]
    offsets = np.zeros(len(hashed) + 1, dtype=np.uint64)
    np.cumsum([len(h) for h in hashed], out=offsets[1:])
    flat = np.concatenate(hashed) if hashed else np.zeros(0, dtype=np.uint64)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
    return np.array(matrix.to_rows(), dtype=np.uint32).reshape(len(texts), num_perm)


def exact_key(text):
    """Documents that differ only in whitespace are exact duplicates."""
    return hashlib.sha1(WHITESPACE.sub("", text).encode()).digest()

"""Exact and near duplicates from MinHash signatures held as arrays by visiting position: LSH band
keys, the bucket pairs whose estimated Jaccard reaches the threshold (one dedup_bands job per group
of bands), the exact copies among a group of exact keys (one dedup_exact job per group), and the
greedy pass over copies and pairs that keeps the first of each set of copies (one dedup_join job
per run of the visiting order, each given the fates its earlier runs decided).

The outcome is that of one pass over the documents in visiting order with datasketch's MinHashLSH
holding the kept ones (what dedup did as a single job; tests/test_dedup.py compares the two): a
document whose exact key an earlier one had shares that one's fate; otherwise it is removed as a
near copy of the earlier kept document, sharing a band bucket with it, of highest estimated
Jaccard (the smaller position on a tie) if that reaches the threshold.
"""
import numpy as np
from datasketch import MinHashLSH

# Pairs verified at once: their signatures take 64 MB (65,536 x 2 x 128 values x 4 bytes), where
# all pairs of a big bucket at once could take gigabytes.
PAIRS_PER_CHUNK = 1 << 16
KEY_MIX = np.uint64(0x100000001B3)
UNDECIDED, KEPT, REMOVED = 0, 1, 2
# A round that decides fewer than this share of the undecided documents hands the rest to a loop
# in visiting order (a chain of copies of copies decides one or two documents a round).
SEQUENTIAL_SHARE = 1 / 16


def band_shape(threshold, num_perm):
    """(bands, rows) of an LSH whose bands favour recall: every candidate's estimated Jaccard is
    checked against the threshold, so a false candidate costs one comparison while a missed one
    keeps a duplicate. datasketch's default, equal weights, puts the S-curve's midpoint at the
    threshold: at 0.5 with 128 permutations a pair of Jaccard 0.63 was a candidate with probability
    0.93 (25 bands of 5 rows), with these weights 0.996 (32 of 4); benchmarks/results/dedup_quality.md."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    return lsh.b, lsh.r


def band_keys(signatures, band, rows):
    """A 64-bit key per signature from its values in the band: equal values give equal keys, and
    the rare collision of unequal ones only adds a candidate that verified_pairs rejects."""
    keys = np.zeros(len(signatures), dtype=np.uint64)
    for column in signatures[:, band * rows:(band + 1) * rows].T:
        keys = (keys ^ column.astype(np.uint64)) * KEY_MIX
    return keys


def buckets(keys):
    """{size: (buckets x size) array of positions}: the documents (keys indexed by position) of
    every key shared by at least two, ascending within a bucket."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    return {int(size): order[starts[sizes == size][:, None] + np.arange(size)]
            for size in np.unique(sizes[sizes > 1])}


def bucket_pairs(groups):
    """(earlier, later) positions of every pair inside a bucket, about PAIRS_PER_CHUNK at a time;
    a bucket too big for one chunk goes a member at a time (a template's stubs can share one)."""
    for size, members in groups.items():
        if size * (size - 1) // 2 > PAIRS_PER_CHUNK:
            for bucket in members:
                for k in range(size - 1):
                    yield np.full(size - 1 - k, bucket[k]), bucket[k + 1:]
            continue
        first, second = np.triu_indices(size, 1)
        step = max(1, PAIRS_PER_CHUNK // len(first))
        for k in range(0, len(members), step):
            block = members[k:k + step]
            yield block[:, first].ravel(), block[:, second].ravel()


def verified_pairs(groups, signatures, rows_of, band, shape, threshold):
    """(earlier, later, similarity) of the bucket pairs whose estimated Jaccard (equal values over
    permutations, as datasketch computes it) reaches the threshold and whose first equal band of
    the LSH's `shape` (bands, rows) is this one: a pair that shares several bands is found in each
    of their buckets, and kept in its first only, so every job's pairs together hold it once (the
    band jobs' pairs were 4 times the distinct ones at 10 million documents). rows_of maps
    positions to rows of signatures."""
    bands, rows = shape
    found = [(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))]
    for earlier, later in bucket_pairs(groups):
        left, right = signatures[rows_of(earlier)], signatures[rows_of(later)]
        similarity = np.count_nonzero(left == right, axis=1) / signatures.shape[1]
        equal_bands = (left[:, :bands * rows] == right[:, :bands * rows]).reshape(len(left), bands, rows).all(axis=2)
        keep = (similarity >= threshold) & equal_bands[:, band] & (equal_bands.argmax(axis=1) == band)
        found.append((earlier[keep], later[keep], similarity[keep]))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def first_with_same_key(exact_keys):
    """For each position, the first position whose exact key is the same (itself if none earlier)."""
    order = np.argsort(exact_keys, kind="stable")
    ordered = exact_keys[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.empty(len(order), dtype=np.int64)
    first[order] = order[np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))]
    return first


def key_groups(exact_keys, groups):
    """The group of each exact key (20-byte SHA-1 digests, uniform in their first 8 bytes)."""
    heads = np.frombuffer(exact_keys.astype("S20").tobytes(), dtype=np.uint8).reshape(-1, 20)[:, :8]
    return np.ascontiguousarray(heads).view("<u8").ravel() % np.uint64(groups)


def exact_copies(exact_keys):
    """(copies, originals): the positions whose exact key an earlier position had, and that first one."""
    first = first_with_same_key(exact_keys)
    copies = np.flatnonzero(first != np.arange(len(first)))
    return copies, first[copies]


def decided_in_order(status, earlier, later):
    """Decides the undecided documents one at a time, ascending: each has its earlier ones decided."""
    order = np.argsort(later, kind="stable")
    earlier, later = earlier[order], later[order]
    documents, starts = np.unique(later, return_index=True)
    for document, start, end in zip(documents.tolist(), starts.tolist(), np.r_[starts[1:], len(later)].tolist()):
        status[document] = REMOVED if (status[earlier[start:end]] == KEPT).any() else KEPT


def fates(settled, copies, earlier, later):
    """KEPT or REMOVED for each document (numbered in visiting order), as one pass in that order
    decides them: copies are removed; a document is removed if it pairs with an earlier kept one,
    and kept otherwise; the `settled` ones (KEPT or REMOVED by an earlier join part) stay as they
    are. Decided in rounds over all pairs at once (numpy): a round removes every document with a
    kept earlier one and keeps every document whose earlier ones were all removed, so each round
    decides at least the first undecided document."""
    status = settled.copy()
    count = len(status)
    status[copies] = REMOVED
    live = (status[earlier] != REMOVED) & (status[later] != REMOVED)
    earlier, later = earlier[live], later[live]
    has_earlier = np.zeros(count, dtype=bool)
    has_earlier[later] = True
    status[(status == UNDECIDED) & ~has_earlier] = KEPT
    undecided = np.count_nonzero(status == UNDECIDED)
    while undecided:
        open_pairs = status[later] == UNDECIDED
        earlier, later = earlier[open_pairs], later[open_pairs]
        before = status[earlier]
        waiting = np.zeros(count, dtype=bool)
        waiting[later[before != REMOVED]] = True
        status[(status == UNDECIDED) & ~waiting] = KEPT
        status[later[before == KEPT]] = REMOVED
        remaining = np.count_nonzero(status == UNDECIDED)
        if undecided - remaining < undecided * SEQUENTIAL_SHARE:
            open_pairs = status[later] == UNDECIDED
            decided_in_order(status, earlier[open_pairs], later[open_pairs])
            return status
        undecided = remaining
    return status


def near_originals(status, copies, earlier, later, similarity):
    """(removed, original, similarity) of each document removed as a near copy: its kept earlier
    pair of highest similarity, the earlier on a tie."""
    is_copy = np.zeros(len(status), dtype=bool)
    is_copy[copies] = True
    chosen = (status[earlier] == KEPT) & (status[later] == REMOVED) & ~is_copy[later]
    earlier, later, similarity = earlier[chosen], later[chosen], similarity[chosen]
    order = np.lexsort((earlier, -similarity, later))
    best = order[np.r_[True, later[order][1:] != later[order][:-1]]] if len(order) else order
    return later[best], earlier[best], similarity[best]


def greedy_removals(count, copies, originals, earlier, later, similarity, settled=None):
    """(removed, exact, original, similarity) arrays, by removed document, of `count` documents
    numbered in visiting order: a copy (of an exact key seen earlier at originals) shares its
    original's fate, any other removed document points to its near original. The pairs are the
    verified ones of all bands, in any order, repeats allowed; a removed document always points to
    a kept one, but for a copy whose original `settled` (an int8 array, UNDECIDED where this call
    decides) says was removed: the caller knows that one's original."""
    settled = np.zeros(count, dtype=np.int8) if settled is None else settled
    near, near_of, near_similarity = near_originals(fates(settled, copies, earlier, later), copies, earlier, later,
                                                    similarity)
    original_of, similarity_of = np.full(count, -1, dtype=np.int64), np.ones(count)
    original_of[near], similarity_of[near] = near_of, near_similarity
    of_near = original_of[originals] >= 0
    removed = np.r_[near, copies]
    exact = np.r_[np.zeros(len(near), dtype=bool), ~of_near]
    original = np.r_[near_of, np.where(of_near, original_of[originals], originals)]
    similarity = np.r_[near_similarity, similarity_of[originals]]
    order = np.argsort(removed)
    return removed[order], exact[order], original[order], similarity[order]


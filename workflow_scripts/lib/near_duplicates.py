"""Exact and near duplicates from MinHash signatures held as arrays by visiting position: LSH band
keys, the bucket pairs whose estimated Jaccard reaches the threshold (one dedup_bands job per group
of bands), and the greedy pass that keeps the first of each set of copies (the dedup job).

The outcome is that of one pass over the documents in visiting order with datasketch's MinHashLSH
holding the kept ones (what dedup did as a single job; tests/test_stages.py compares the two): a
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


def verified_pairs(groups, signatures, rows_of, band, rows, threshold):
    """(earlier, later, similarity) of the bucket pairs whose band values are equal and whose
    estimated Jaccard (equal values over permutations, as datasketch computes it) reaches the
    threshold; rows_of maps positions to rows of signatures."""
    columns = slice(band * rows, (band + 1) * rows)
    found = [(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))]
    for earlier, later in bucket_pairs(groups):
        left, right = signatures[rows_of(earlier)], signatures[rows_of(later)]
        similarity = np.count_nonzero(left == right, axis=1) / signatures.shape[1]
        keep = (similarity >= threshold) & (left[:, columns] == right[:, columns]).all(axis=1)
        found.append((earlier[keep], later[keep], similarity[keep]))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def unique_pairs(earlier, later, similarity):
    """Each pair once (pairs that share several bands are found in each)."""
    _, first = np.unique(np.stack([earlier, later], axis=1), axis=0, return_index=True)
    return earlier[first], later[first], similarity[first]


def first_with_same_key(exact_keys):
    """For each position, the first position whose exact key is the same (itself if none earlier)."""
    order = np.argsort(exact_keys, kind="stable")
    ordered = exact_keys[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.empty(len(order), dtype=np.int64)
    first[order] = order[np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))]
    return first


def greedy_removals(exact_keys, earlier, later, similarity):
    """[(position, kind, original position, similarity)] of every document to remove, by position;
    a removed document always points to a kept one. The pairs are the verified ones of all bands."""
    first = first_with_same_key(exact_keys)
    by_later = np.lexsort((earlier, later))
    earlier, later, similarity = earlier[by_later], later[by_later], similarity[by_later]
    visited, starts = np.unique(later, return_index=True)
    ends = np.r_[starts[1:], len(later)]
    pairs_of = dict(zip(visited.tolist(), zip(starts.tolist(), ends.tolist())))
    kept = np.ones(len(exact_keys), dtype=bool)
    fate, removed = {}, []  # fate: removed position -> (kind, original, similarity) its exact copies share
    for position in np.union1d(visited, np.flatnonzero(first != np.arange(len(first)))).tolist():
        original = int(first[position])
        if original != position:
            entry = (position, *fate.get(original, ("exact", original, 1.0)))
        elif position in pairs_of:
            start, end = pairs_of[position]
            candidates = kept[earlier[start:end]]
            if not candidates.any():
                continue
            scores = similarity[start:end][candidates]
            best = np.lexsort((earlier[start:end][candidates], -scores))[0]
            entry = (position, "near", int(earlier[start:end][candidates][best]), float(scores[best]))
            fate[position] = entry[1:]
        else:
            continue
        kept[position] = False
        removed.append(entry)
    return removed


def find_duplicates(exact_keys, signatures, threshold):
    """greedy_removals over every band, in one process: for sets that fit in memory (benchmarks)."""
    bands, rows = band_shape(threshold, signatures.shape[1])
    pairs = [verified_pairs(buckets(band_keys(signatures, band, rows)), signatures, lambda p: p, band, rows,
                            threshold) for band in range(bands)]
    return greedy_removals(exact_keys, *unique_pairs(*(np.concatenate(parts) for parts in zip(*pairs))))

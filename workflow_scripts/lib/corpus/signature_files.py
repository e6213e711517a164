"""The minhash stage's signature files, read a shard at a time. A document is named in every dedup
job by its corpus rank (corpus by corpus in the configured order) and its id, and visited in that
order, so the outcome does not depend on the number of shards or their order; a job that needs a
dense index over all documents (dedup_bands) numbers them by that order, its visiting position.
The join parts cut that order into runs of equal length: part K of P starts at position
ceil(K * documents / P), and the dedup_bands jobs write where each starts (its first document's
rank and id) for the jobs that see only some documents."""
import zipfile

import numpy as np

from workflow_scripts.lib.atomic_files import atomic_path
from workflow_scripts.lib.stage_cli import StageError


def load_npz(path):
    try:
        return np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise StageError(f"{path}: not a readable signature file ({err}); rerun its minhash job") from None


def corpus_ranks(sources, corpus_order):
    """Each document's rank of its corpus in corpus_order; corpora it does not list come last."""
    rank = {name: k for k, name in enumerate(corpus_order)}
    names, inverse = np.unique(sources, return_inverse=True)
    return np.array([rank.get(name, len(rank)) for name in names.tolist()], dtype=np.int64)[inverse]


def visiting_order(ranks, ids):
    """The indices that sort documents corpus by corpus (by rank), each corpus by id."""
    return np.lexsort((ids, ranks))


def shard_documents(paths, corpus_order, key):
    """(sources, corpus ranks, ids, values of key) of each shard in turn."""
    for path in paths:
        shard = load_npz(path)
        yield shard["sources"], corpus_ranks(shard["sources"], corpus_order), shard["ids"], shard[key]


class SignatureFiles:
    def __init__(self, paths, corpus_order, num_perm):
        self.paths = list(paths)
        ranks, ids, sizes = [], [], []
        for _, shard_ranks, shard_ids, _ in shard_documents(self.paths, corpus_order, "ids"):
            ranks.append(shard_ranks)
            ids.append(shard_ids)
            sizes.append(len(shard_ids))
        self.num_perm = num_perm
        self.offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        ranks, ids = (np.concatenate(a) if a else np.empty(0, np.int64) for a in (ranks, ids))
        order = visiting_order(ranks, ids)
        self.position = np.empty(len(order), dtype=np.int64)
        self.position[order] = np.arange(len(order))
        self.ranks, self.ids = ranks[order], ids[order]

    def __len__(self):
        return len(self.position)

    def part_cuts(self, parts):
        """The first position of each part but the first."""
        return -(-np.arange(1, parts) * len(self) // parts)

    def part_starts(self, parts):
        """(ranks, ids) of the first document of each part; an empty part at the end starts after
        every document (the largest rank)."""
        starts = np.r_[0, self.part_cuts(parts)]
        inside = starts < len(self)
        ranks = np.full(parts, np.iinfo(np.int64).max)
        ids = np.zeros(parts, dtype=np.int64)
        ranks[inside], ids[inside] = self.ranks[starts[inside]], self.ids[starts[inside]]
        return ranks, ids

    def write_pairs_by_part(self, outs, earlier, later, similarity):
        """One .npz per join part (outs in part order): the pairs (positions) whose later document
        is in that part, by corpus rank and id, with where every part starts."""
        part = np.searchsorted(self.part_cuts(len(outs)), later, side="right")
        start_ranks, start_ids = self.part_starts(len(outs))
        for k, out in enumerate(outs):
            mine = part == k
            with atomic_path(out) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, earlier_ranks=self.ranks[earlier[mine]], earlier_ids=self.ids[earlier[mine]],
                         later_ranks=self.ranks[later[mine]], later_ids=self.ids[later[mine]],
                         similarity=similarity[mine], part_start_ranks=start_ranks, part_start_ids=start_ids,
                         documents=len(self))

    def shards(self, key):
        """(positions, values of key) for each shard in turn."""
        for k, path in enumerate(self.paths):
            values = load_npz(path)[key]
            if key == "signatures" and values.shape[1] != self.num_perm:
                raise StageError(f"{path}: signatures have {values.shape[1]} permutations, not {self.num_perm}; "
                                 "rerun minhash")
            yield self.position[self.offsets[k]:self.offsets[k + 1]], values

    def in_visiting_order(self, key):
        """Values of key for every document, by visiting position."""
        return assembled(len(self), list(self.shards(key)))

    def gather(self, key, positions):
        """Values of key at these positions (ascending), reading one shard at a time."""
        parts = []
        for shard_positions, shard_values in self.shards(key):
            wanted = np.isin(shard_positions, positions)
            parts.append((np.searchsorted(positions, shard_positions[wanted]), shard_values[wanted]))
        return assembled(len(positions), parts)


class NamedDocuments:
    """The documents some (corpus rank, id) arrays name, once each, numbered in visiting order."""

    def __init__(self, ranks, ids):
        order = visiting_order(ranks, ids)
        ranks, ids = ranks[order], ids[order]
        new = np.r_[True, (ranks[1:] != ranks[:-1]) | (ids[1:] != ids[:-1])] if len(ids) else np.empty(0, bool)
        self.ranks, self.ids = ranks[new], ids[new]

    def __len__(self):
        return len(self.ids)

    def index(self, ranks, ids):
        """The number of each named document, -1 for documents not among them."""
        numbers = np.full(len(ids), -1, dtype=np.int64)
        if not len(self):
            return numbers
        for rank in np.unique(ranks).tolist():
            low, high = np.searchsorted(self.ranks, [rank, rank + 1])
            wanted = ranks == rank
            found = np.minimum(low + np.searchsorted(self.ids[low:high], ids[wanted]), len(self) - 1)
            numbers[wanted] = np.where((self.ranks[found] == rank) & (self.ids[found] == ids[wanted]), found, -1)
        return numbers


def join_parts(ranks, ids, start_ranks, start_ids):
    """The join part of each document, from where each part starts (SignatureFiles.part_starts)."""
    part = np.zeros(len(ids), dtype=np.int64)
    for rank, first in zip(start_ranks[1:].tolist(), start_ids[1:].tolist()):
        part += (ranks > rank) | ((ranks == rank) & (ids >= first))
    return part


def assembled(length, parts):
    """One array of `length` rows from (rows, values) parts, its strings as wide as the widest part's."""
    values = np.empty((length, *parts[0][1].shape[1:]), dtype=np.result_type(*(v for _, v in parts)))
    for rows, part in parts:
        values[rows] = part
    return values

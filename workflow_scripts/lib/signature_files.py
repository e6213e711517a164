"""The minhash stage's signature files, read a shard at a time, with each document at its visiting
position: corpus by corpus in the configured order, each in ascending id. Positions do not depend
on the number of shards or their order, so dedup's jobs agree on them without passing them on."""
import zipfile

import numpy as np

from workflow_scripts.lib.stage_cli import StageError


def load_npz(path):
    try:
        return np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise StageError(f"{path}: not a readable signature file ({err}); rerun its minhash job") from None


class SignatureFiles:
    def __init__(self, paths, corpus_order, num_perm):
        self.paths = list(paths)
        rank = {name: k for k, name in enumerate(corpus_order)}
        ids, ranks, sizes = [], [], []
        for path in self.paths:
            shard = load_npz(path)
            ids.append(shard["ids"])
            ranks.append(np.array([rank.get(s, len(rank)) for s in shard["sources"].tolist()], dtype=np.int32))
            sizes.append(len(shard["ids"]))
        self.num_perm = num_perm
        self.offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        order = np.lexsort((np.concatenate(ids), np.concatenate(ranks))) if self.paths else np.empty(0, np.int64)
        self.position = np.empty(len(order), dtype=np.int64)
        self.position[order] = np.arange(len(order))

    def __len__(self):
        return len(self.position)

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


def assembled(length, parts):
    """One array of `length` rows from (rows, values) parts, its strings as wide as the widest part's."""
    values = np.empty((length, *parts[0][1].shape[1:]), dtype=np.result_type(*(v for _, v in parts)))
    for rows, part in parts:
        values[rows] = part
    return values

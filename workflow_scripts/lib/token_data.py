"""Token shards as training data: fixed-length windows, the per-rank sampler, bytes per token."""
from pathlib import Path

import numpy as np
import torch

from workflow_scripts.lib.atomic_files import read_json
from workflow_scripts.lib.stage_cli import StageError


class TokenWindows:
    """Fixed-length windows over the concatenated token shards of one split, memory-mapped."""

    def __init__(self, tokens_dir: Path, split, seq_len):
        index = read_json(tokens_dir / "index.json")
        if split not in index["splits"]:
            raise StageError(f"{tokens_dir / 'index.json'}: no {split!r} split; rerun the tokens rule")
        self.shards = [np.memmap(tokens_dir / s["file"], dtype=index["dtype"], mode="r")
                       for s in index["splits"][split]["shards"] if s["tokens"]]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])
        self.window = seq_len + 1
        self.count = int(self.starts[-1]) // self.window
        if self.count == 0:
            raise StageError(f"the {split} split has {self.starts[-1]} tokens, fewer than one window of "
                             f"{self.window}; lower pretrain.seq_len or use more data")

    def read(self, i):
        """Window i as int64 tokens (it may span two shards)."""
        start, end = i * self.window, (i + 1) * self.window
        parts = []
        while start < end:
            shard = int(np.searchsorted(self.starts, start, side="right")) - 1
            stop = min(end, int(self.starts[shard + 1]))
            parts.append(self.shards[shard][start - self.starts[shard]:stop - self.starts[shard]])
            start = stop
        return torch.from_numpy(np.concatenate(parts).astype(np.int64))

    def batch(self, indices):
        windows = torch.stack([self.read(i) for i in indices])
        return windows[:, :-1], windows[:, 1:]


class Sampler:
    """Which windows each rank reads at each micro-step: a seeded permutation per epoch, cut so
    that ranks never share a window within an epoch. Its whole state is the micro-step."""

    def __init__(self, count, seed, rank, world, micro_batch):
        self.count, self.seed, self.rank, self.world, self.micro_batch = count, seed, rank, world, micro_batch
        self._perms = {}

    def _perm(self, epoch):
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.count)}
        return self._perms[epoch]

    def indices(self, micro_step):
        first = (micro_step * self.world + self.rank) * self.micro_batch
        return [int(self._perm(k // self.count)[k % self.count]) for k in range(first, first + self.micro_batch)]


def window_batches(data: TokenWindows, windows, rank, world, micro_batch):
    """The first `windows` windows of a split, this rank's share, in micro-batches."""
    mine = list(range(rank, min(windows, data.count), world))
    return (data.batch(mine[start:start + micro_batch]) for start in range(0, len(mine), micro_batch))


def token_byte_lengths(tokenizer):
    """UTF-8 bytes each token stands for (0 for special tokens), for bits per byte."""
    # A ByteLevel vocabulary spells each byte as one character, so a token's length is its byte count.
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    for token, token_id in tokenizer.get_vocab().items():
        lengths[token_id] = 0 if token_id in special else len(token)
    return torch.from_numpy(lengths)

"""A multistream dump's index (offset:page_id:title per line, bz2): where its bz2 streams start, and
which of them make up each shard."""
import bz2
from pathlib import Path

from workflow_scripts.lib.stage_cli import StageError


def stream_offsets(index: Path, dump_size: int):
    """Sorted start offsets of the page streams, closed by the dump's size."""
    try:
        with bz2.open(index, "rt", encoding="utf-8") as fh:
            offsets = {int(line.split(":", 1)[0]) for line in fh if line.strip()}
    except (OSError, EOFError, ValueError) as err:
        raise StageError(f"{index}: not a readable multistream index ({err}); download it again") from None
    if not offsets or max(offsets) >= dump_size:
        raise StageError(f"{index}: offsets do not fit the dump ({dump_size} bytes); index and dump differ")
    return sorted(offsets) + [dump_size]


def shard_ranges(offsets, shard, shards):
    """Byte ranges of the streams that make up `shard`: contiguous, about equal in count."""
    streams = len(offsets) - 1
    first, last = streams * shard // shards, streams * (shard + 1) // shards
    return [(offsets[i], offsets[i + 1]) for i in range(first, last)]

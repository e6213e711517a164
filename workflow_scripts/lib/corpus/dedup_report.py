"""The dedup report: each removed document and the one it duplicated, written by each dedup_join
part and concatenated by dedup."""
from collections import Counter

import pyarrow as pa

REPORT_SCHEMA = pa.schema([("id", pa.int64()), ("title", pa.string()), ("source", pa.string()),
                           ("kind", pa.string()), ("duplicate_of", pa.int64()), ("duplicate_of_title", pa.string()),
                           ("duplicate_of_source", pa.string()), ("similarity", pa.float64())])


def removed_by_source(sources, exact):
    """{corpus: {"exact": removed as exact copies, "near": removed as near copies}}."""
    counts = Counter(zip(sources.tolist(), exact.tolist()))
    return {source: {"exact": counts[source, True], "near": counts[source, False]}
            for source in sorted({source for source, _ in counts})}

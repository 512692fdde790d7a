"""Arrow columns built straight from their buffers.

Workers build their columns here rather than with ``pyarrow.array``: pyarrow imports
pandas (about 0.35 s of CPU) the first time it converts a Python list, in every worker
of every build.  Filling an ``array.array`` and handing its buffer over is also faster.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

import pyarrow as pa

DATASET_FIELDS = pa.schema([
    ("session", pa.uint32()),  # position of the session in the batch's session list
    ("eid", pa.string()),  # the session's id
    ("rel_path", pa.string()),
    ("file_size", pa.uint64()),
    ("mtime_ns", pa.int64()),
    ("id_md5", pa.binary(16)),  # md5 of the uuid3 name; null with string ids
    ("md5", pa.string()),  # hex digests of the file, null when not hashed
    ("xxh3", pa.string()),
])
PROBLEM_FIELDS = pa.schema([
    ("path", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
])


def dataset_batch(session: list[int], eids: list[bytes], rel_path: list[bytes],
                  file_size: list[int], mtime_ns: list[int], id_md5: list[bytes] | None,
                  digests: dict[str, list[str]]) -> pa.RecordBatch:
    """A worker's datasets; ``session`` indexes ``eids``; ``rel_path`` UTF-8 encoded;
    ``id_md5`` None with string ids."""
    n = len(rel_path)
    ids = fixed_binary(id_md5, 16) if id_md5 is not None else pa.nulls(n, pa.binary(16))
    hashes = [strings([d.encode() for d in digests[a]]) if a in digests
              else pa.nulls(n, pa.string()) for a in ("md5", "xxh3")]
    return pa.RecordBatch.from_arrays([
        integers(session, pa.uint32()), strings([eids[s] for s in session]), strings(rel_path),
        integers(file_size, pa.uint64()), integers(mtime_ns, pa.int64()), ids, *hashes],
        schema=DATASET_FIELDS)


def problem_batch(problems: list[tuple[str, str, str]]) -> pa.RecordBatch:
    """A worker's problems: (path, reason, detail) rows as three columns."""
    found = list(zip(*problems)) if problems else [(), (), ()]
    return pa.RecordBatch.from_arrays([strings([v.encode() for v in col]) for col in found],
                                      schema=PROBLEM_FIELDS)


def strings(encoded: list[bytes]) -> pa.Array:
    """A utf8 column from UTF-8-encoded values (``large_string`` past 2 GiB of text)."""
    offsets = array("q", accumulate((len(b) for b in encoded), initial=0))
    kind = pa.large_string()
    if offsets[-1] < 2**31:
        offsets, kind = array("i", offsets), pa.string()
    return pa.Array.from_buffers(kind, len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def integers(values: list[int], kind: pa.DataType) -> pa.Array:
    """An integer column (``pa.uint32()``, ``pa.uint64()`` or ``pa.int64()``)."""
    code = {pa.uint32(): "I", pa.uint64(): "Q", pa.int64(): "q"}[kind]
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(array(code, values))])


def fixed_binary(values: list[bytes], width: int) -> pa.Array:
    """A ``binary(width)`` column from values of exactly ``width`` bytes."""
    return pa.Array.from_buffers(pa.binary(width), len(values),
                                 [None, pa.py_buffer(b"".join(values))])

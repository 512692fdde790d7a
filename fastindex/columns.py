"""The parent's side of the workers' batches: their Arrow schemas, and assembly.

``buffers.py`` builds the Arrow buffers in the workers; here they become record batches
without a copy, with ``pyarrow.Array.from_buffers``.  (``pyarrow.array`` on Python lists
would import pandas and convert value by value.)
"""

from __future__ import annotations

import pyarrow as pa

from fastindex import buffers
from fastindex.buffers import RawBatch

DATASET_FIELDS = pa.schema([
    ("rel_path", pa.string()),
    ("file_size", pa.uint64()),
    ("mtime_ns", pa.int64()),
    ("id_md5", pa.binary(16)),  # md5 of the uuid3 name; null with string ids
    ("md5", pa.string()),  # hex digests of the file, null when not hashed
    ("xxh3", pa.string()),
    ("etag", pa.string()),  # a bucket's object's ETag, null for a file
])
PROBLEM_FIELDS = pa.schema([
    ("path", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
])


def record_batch(raw: RawBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Wrap a worker's buffers as a record batch of ``schema``, without copying."""
    return pa.RecordBatch.from_arrays([column(raw.length, raw.columns[f.name], f.type)
                                       for f in schema], schema=schema)


def column(length: int, buffers_: buffers.Column | None, kind: pa.DataType) -> pa.Array:
    """One column from its buffers (None: all null)."""
    if buffers_ is None:
        return pa.nulls(length, kind)
    if kind == pa.string() and len(buffers_[0]) != 4 * (length + 1):
        raise ValueError("over 2 GiB of text in one batch of one column")
    return pa.Array.from_buffers(kind, length, [None, *map(pa.py_buffer, buffers_)])


def strings(encoded: list[bytes]) -> pa.Array:
    """A utf8 column from UTF-8-encoded values."""
    return column(len(encoded), buffers.strings(encoded), pa.string())

"""The workers' record batches, as Arrow buffers built without pyarrow.

A worker fills ``array.array``s and joins bytes: exactly the buffers of Arrow's columnar
layout (offsets and values; no validity bitmap, since a column is either all set or
all null).  The parent wraps them into record batches without copying (``columns.py``).
Workers never import pyarrow: each would pay for the import, and not importing it lets
the parent start them before it loads Arrow, while it is still a single-threaded process.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import accumulate

Column = tuple  # the buffers after the validity bitmap, as bytes; None: all null


@dataclass
class RawBatch:
    """A record batch in Arrow's layout: its length and each column's buffers."""

    length: int
    columns: dict[str, Column | None]


def strings(encoded: list[bytes]) -> Column:
    """Offsets and data of a utf8 column (64-bit offsets past 2 GiB of text)."""
    offsets = array("q", accumulate(map(len, encoded), initial=0))
    if offsets[-1] < 2**31:
        offsets = array("i", offsets)
    return offsets.tobytes(), b"".join(encoded)


def integers(values: list[int], code: str) -> Column:
    """The values buffer of an integer column (``array`` type code: I, Q, q)."""
    return (array(code, values).tobytes(),)


def dataset_batch(rel_path: list[bytes], file_size: list[int], mtime_ns: list[int],
                  id_md5: list[bytes] | None, digests: dict[str, list[str]],
                  etag: list[bytes] | None = None) -> RawBatch:
    """A worker's datasets: ``rel_path`` UTF-8 encoded; ``id_md5`` None with string ids;
    ``digests`` holds the algorithms computed; ``etag`` a bucket's ETags (None for
    files).  Which session a row belongs to is sent once per session, not per row
    (``index.BatchResult.rows``)."""
    return RawBatch(len(rel_path), {
        "rel_path": strings(rel_path),
        "file_size": integers(file_size, "Q"),
        "mtime_ns": integers(mtime_ns, "q"),
        "id_md5": (b"".join(id_md5),) if id_md5 is not None else None,
        **{a: strings([d.encode() for d in digests[a]]) if a in digests else None
           for a in ("md5", "xxh3")},
        "etag": strings(etag) if etag is not None else None,
    })


def problem_batch(problems: list[tuple[str, str, str]]) -> RawBatch:
    """A worker's problems: (path, reason, detail) rows as three columns."""
    found = list(zip(*problems)) if problems else [(), (), ()]
    return RawBatch(len(problems), {
        name: strings([v.encode() for v in values])
        for name, values in zip(("path", "reason", "detail"), found)})

"""Stage 4a: merge the workers' Arrow batches into the two tables, as polars frames.

Row order never depends on how sessions were batched or which worker finished first:
both frames are sorted by their ids here, which is what makes ``workers=1`` and
``workers=N`` give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from fastindex import alf
from fastindex.buffers import RawBatch
from fastindex.columns import DATASET_FIELDS, PROBLEM_FIELDS, record_batch
from fastindex.discover import Session
from fastindex.problems import Problem

#: The datasets frame's columns, in order: ``hash`` (md5) and ``xxh3`` only where they
#: were computed, ``etag`` only for a bucket's objects.
DATASET_COLUMNS = ("eid", "id", "rel_path", "file_size", "hash", "xxh3", "default_revision",
                   "mtime_ns", "etag")

#: Each byte's two hex digits, as one 16-bit value (``uuid3_text`` takes them at once).
_HEX_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)
#: (from, to, length): where the 32 hex digits go in the 36 characters of uuid text.
_UUID_GROUPS = ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12))


def uuid3_text(digests: bytes) -> pa.Array:
    """md5 digests (16 bytes each, end to end) as uuid3 text, as ``str(uuid.uuid3(...))``
    writes it: version and variant bits set, hex digits, dashes.

    Fixed-width text built in one array, so a million ids cost a few whole-array steps,
    not a string kernel per slice.
    """
    d = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16).copy()
    d[:, 6] = (d[:, 6] & 0x0F) | 0x30  # version 3
    d[:, 8] = (d[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hex_digits = _HEX_PAIRS[d].view(np.uint8)
    text = np.full((len(d), 36), ord("-"), dtype=np.uint8)
    for start, to, length in _UUID_GROUPS:
        text[:, to:to + length] = hex_digits[:, start:start + length]
    offsets = np.arange(0, 36 * (len(d) + 1), 36, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(d),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def sessions_frame(sessions: list[Session], eids: list[str]) -> pl.DataFrame:
    """One row per session, sorted by id.

    Dates and numbers are parsed by polars, column-wise, not per session in Python.
    """
    labs, subjects, dates, numbers = (
        map(list, zip(*(s.parts for s in sessions))) if sessions else ([], [], [], []))
    return pl.DataFrame(
        {"id": eids, "lab": labs, "subject": subjects, "date": dates, "number": numbers},
        schema={"id": pl.String, "lab": pl.String, "subject": pl.String, "date": pl.String,
                "number": pl.String},
    ).select(
        "id", "lab", "subject", pl.col("date").str.to_date("%Y-%m-%d"),
        pl.col("number").cast(pl.UInt16), task_protocol=pl.lit(""), projects=pl.lit(""),
    ).sort("id")


def datasets_frame(batches: list[RawBatch], eids: list[str], rows: list[int],
                   algorithms: tuple[str, ...] = (),
                   late: Sequence[tuple[str, str, dict | None]] = ()) -> pl.DataFrame:
    """All datasets, with their session's id, ``default_revision``, sorted by (eid, id).

    ``batches`` hold ``rows[i]`` rows of the session ``eids[i]`` in turn.  ``algorithms``
    names the digests computed: md5 becomes ONE's ``hash`` column, xxh3 an ``xxh3``
    column.  ``late`` holds (eid, rel_path, digests) of files hashed as tasks of their
    own (None: the file could not be read, and its row is dropped).

    ``default_revision`` is True on the lexicographically last revision of each dataset,
    grouping by rel_path without its ``#revision#/`` folder, as ONE groups them; no
    revision sorts before any revision.
    """
    arrow = [record_batch(b, DATASET_FIELDS) for b in batches]
    frame = _frame(pa.Table.from_batches(arrow, schema=DATASET_FIELDS))
    digests = [d[0] for b in batches if (d := b.columns["id_md5"]) is not None]
    frame = frame.with_columns(id=pl.Series(uuid3_text(b"".join(digests)))
                               if len(digests) == len(batches) and frame.height
                               else pl.col("rel_path"))
    frame = frame.with_columns(eid=_repeated(eids, rows))  # after the ids: less at peak
    if late:
        frame = _apply_late(frame, late)
    held = {"hash": "md5" in algorithms, "xxh3": "xxh3" in algorithms,
            "etag": frame["etag"].null_count() < frame.height}  # etag: a bucket's
    return (frame.with_columns(default_revision=_is_default_revision(frame))
            .rename({"md5": "hash"})
            .select([c for c in DATASET_COLUMNS if held.get(c, True)])
            .sort("eid", "id"))


def _repeated(eids: list[str], rows: list[int]) -> pl.Series:
    """Each session's id repeated once per row of it, in order, vectorized: positions
    repeated, then gathered (each id string made once per row, not once per list)."""
    positions = pl.Series(range(len(eids)), dtype=pl.UInt32).repeat_by(
        pl.Series(rows, dtype=pl.UInt32)).explode().drop_nulls()
    return pl.Series("eid", eids, dtype=pl.String).gather(positions)


def _apply_late(frame: pl.DataFrame, late: Sequence[tuple[str, str, dict | None]]
                ) -> pl.DataFrame:
    """Fill in the digests of separately hashed files; drop the ones that failed."""
    rows = pl.DataFrame({
        "eid": [s for s, _, _ in late], "rel_path": [r for _, r, _ in late],
        "ok": [d is not None for _, _, d in late],
        "md5_late": [(d or {}).get("md5") for _, _, d in late],
        "xxh3_late": [(d or {}).get("xxh3") for _, _, d in late],
    }, schema_overrides={"eid": pl.String, "md5_late": pl.String, "xxh3_late": pl.String})
    return (frame.join(rows, on=["eid", "rel_path"], how="left")
            .filter(pl.col("ok").fill_null(True))
            .with_columns(md5=pl.coalesce("md5_late", "md5"),
                          xxh3=pl.coalesce("xxh3_late", "xxh3"))
            .drop("ok", "md5_late", "xxh3_late"))


def _is_default_revision(frame: pl.DataFrame) -> pl.Expr:
    """True where a row's revision is the last of its dataset's (all True without any)."""
    if not frame["rel_path"].str.contains("#", literal=True).any():
        return pl.lit(True)  # no revision folder anywhere: skip the grouping
    revision = pl.col("rel_path").str.extract(alf.FILE_REVISION, 1).fill_null("")
    group = [pl.col("eid"), pl.col("rel_path").str.replace_all(alf.REVISION_FOLDER_RE.pattern, "")]
    return revision == revision.max().over(group)


def problems_frame(found: list[Problem], batches: list[RawBatch]) -> pl.DataFrame:
    """Every skipped file, from the parent and the workers, sorted by path."""
    own = pl.DataFrame(found, schema=PROBLEM_FIELDS.names, orient="row").cast(pl.String)
    workers = _frame(pa.Table.from_batches(
        [record_batch(b, PROBLEM_FIELDS) for b in batches], schema=PROBLEM_FIELDS))
    return pl.concat([own, workers]).sort("path", "reason")


def _frame(table: pa.Table) -> pl.DataFrame:
    """An Arrow table as a polars frame (``from_arrow`` gives a frame for a table)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame

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
from fastindex import problems as p
from fastindex.buffers import RawBatch
from fastindex.columns import DATASET_FIELDS, PROBLEM_FIELDS, record_batch
from fastindex.index import SessionColumns
from fastindex.problems import Problem

#: The datasets frame's columns, in order: ``hash`` (md5) and ``xxh3`` only where they
#: were computed, ``etag`` only for a bucket's objects.
DATASET_COLUMNS = ("eid", "id", "rel_path", "file_size", "hash", "xxh3", "default_revision",
                   "mtime_ns", "etag")

#: Each byte's two hex digits, as one 16-bit value (``uuid3_text`` takes them at once).
_HEX_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)
#: (from, to, length): where the 32 hex digits go in the 36 characters of uuid text.
_UUID_GROUPS = ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12))


def uuid3_bytes(digests: bytes) -> np.ndarray:
    """md5 digests (16 bytes each, end to end) as uuid3 bytes, one row each: version and
    variant bits set, as ``uuid.uuid3`` sets them."""
    d = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16).copy()
    d[:, 6] = (d[:, 6] & 0x0F) | 0x30  # version 3
    d[:, 8] = (d[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return d


def uuid3_text(digests: bytes) -> pa.Array:
    """md5 digests (16 bytes each, end to end) as uuid3 text, as ``str(uuid.uuid3(...))``
    writes it: version and variant bits set, hex digits, dashes."""
    return uuid_text(uuid3_bytes(digests))


def uuid_text(d: np.ndarray) -> pa.Array:
    """uuid bytes (one row of 16 each) as uuid text: hex digits, dashes.

    Fixed-width text built in one array, so a million ids cost a few whole-array steps,
    not a string kernel per slice.
    """
    hex_digits = _HEX_PAIRS[d].view(np.uint8)
    text = np.full((len(d), 36), ord("-"), dtype=np.uint8)
    for start, to, length in _UUID_GROUPS:
        text[:, to:to + length] = hex_digits[:, start:start + length]
    offsets = np.arange(0, 36 * (len(d) + 1), 36, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(d),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def sessions_frame(sessions: SessionColumns) -> pl.DataFrame:
    """One row per session, sorted by id.

    Dates and numbers are parsed by polars, column-wise, not per session in Python.
    """
    return pl.DataFrame(
        {"id": sessions.eid, "lab": sessions.lab, "subject": sessions.subject,
         "date": sessions.date, "number": sessions.number},
        schema={"id": pl.String, "lab": pl.String, "subject": pl.String, "date": pl.String,
                "number": pl.String},
    ).select(
        "id", "lab", "subject", pl.col("date").str.to_date("%Y-%m-%d"),
        pl.col("number").cast(pl.UInt16), task_protocol=pl.lit(""), projects=pl.lit(""),
    ).sort("id")


#: The columns of the workers' datasets that become the frame's (the ids are made apart).
_ROW_FIELDS = [f for f in DATASET_FIELDS if f.name != "id_md5"]


def datasets_frame(batches: list[RawBatch], eids: list[str], rows: list[int],
                   algorithms: tuple[str, ...] = (),
                   late: Sequence[tuple[str, str, dict | None]] = ()
                   ) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
    """All datasets, with their session's id, ``default_revision``, sorted by (eid, id);
    the files left out by ``uuid_file_names`` (eid, rel_path, reason, detail); and
    whether the tree's files carry their dataset's UUID.

    ``batches`` hold ``rows[i]`` rows of the session ``eids[i]`` in turn.  ``algorithms``
    names the digests computed: md5 becomes ONE's ``hash`` column, xxh3 an ``xxh3``
    column.  ``late`` holds (eid, rel_path, digests) of files hashed as tasks of their
    own (None: the file could not be read, and its row is dropped).

    ``default_revision`` is True on the lexicographically last revision of each dataset,
    grouping by rel_path without its ``#revision#/`` folder, as ONE groups them; no
    revision sorts before any revision.

    The order is found without comparing text: sessions are ranked by id (one string
    per session), and a uuid id sorts as its 16 bytes do, so rows are ordered by
    (session rank, id bytes) as numbers, each column is gathered once in that order, and
    the id and eid columns are made in it rather than sorted.  String ids (and UUIDs
    read from names) are sorted by (session rank, id).
    """
    n = sum(b.length for b in batches)
    counts = np.asarray(rows, dtype=np.int64)
    session_order = pl.Series(eids, dtype=pl.String).arg_sort().to_numpy()
    rank = np.empty(len(eids), dtype=np.uint32)
    rank[session_order] = np.arange(len(eids), dtype=np.uint32)
    digests = [d[0] for b in batches if (d := b.columns["id_md5"]) is not None]
    presorted = n > 0 and len(digests) == len(batches)
    if presorted:
        ids = uuid3_bytes(b"".join(digests))
        order = row_order(np.repeat(rank, counts), ids)
        in_order = counts[session_order]
        frame = pl.DataFrame([_gathered(batches, f, n, order) for f in _ROW_FIELDS]).with_columns(
            id=pl.Series(uuid_text(ids[order])),
            eid=_repeated(pl.Series(eids, dtype=pl.String).gather(session_order), in_order),
            _rank=np.repeat(np.arange(len(eids), dtype=np.uint32), in_order))
    else:
        frame = pl.DataFrame([_gathered(batches, f, n) for f in _ROW_FIELDS]).with_columns(
            id=pl.col("rel_path"), eid=_repeated(pl.Series(eids, dtype=pl.String), counts),
            _rank=pl.Series(np.repeat(rank, counts)))
    if late:
        frame = _apply_late(frame, late)
        presorted = False  # a join keeps no order
    frame, left_out, uuid_names = uuid_file_names(frame)  # before the revisions' grouping
    presorted = presorted and not uuid_names  # ids read from names
    held = {"hash": "md5" in algorithms, "xxh3": "xxh3" in algorithms,
            "etag": frame["etag"].null_count() < frame.height}  # etag: a bucket's
    frame = frame.with_columns(default_revision=_is_default_revision(frame))
    if not presorted:
        frame = frame.sort("_rank", "id")
    return (frame.rename({"md5": "hash"})
            .select([c for c in DATASET_COLUMNS if held.get(c, True)])), left_out, uuid_names


def row_order(rank: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The order of rows by (``rank``, their uuid's 16 bytes, one row of ``ids`` each).

    One 64-bit key (the rank, then the id's first 32 bits) is sorted; only when two keys
    tie is the exact order taken, by all three parts.
    """
    key = rank.astype(np.uint64) << np.uint64(32)
    key |= ids[:, :4].copy().view(">u4").ravel()
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    if (ordered[1:] != ordered[:-1]).all():
        return order
    head, tail = (ids[:, at:at + 8].copy().view(">u8").ravel() for at in (0, 8))
    return np.lexsort((tail, head, rank))


def _gathered(batches: list[RawBatch], field: pa.Field, n: int,
              order: np.ndarray | None = None) -> pl.Series:
    """One column of all the batches, as one array (their buffers joined, not a chunk
    per batch), its rows taken in ``order`` (None: as they are)."""
    parts = [b.columns[field.name] for b in batches]
    if all(part is None for part in parts):  # not taken (digests, ETags), or no batch
        return pl.Series(field.name, pa.nulls(n, field.type))
    present = [part for part in parts if part is not None]
    if len(present) < len(parts):  # not from every worker: Arrow joins them
        series = _frame(pa.Table.from_batches(
            [record_batch(b, pa.schema([field])) for b in batches]))[field.name]
    elif field.type == pa.string():
        series = pl.Series(field.name, _joined_strings([b.length for b in batches], present, n))
    else:
        values = np.frombuffer(b"".join(part[0] for part in present),
                               dtype=_NUMPY_TYPES[field.type])
        return pl.Series(field.name, values if order is None else values[order])
    return series if order is None else series.gather(order)


#: The numpy type of each fixed-width column the workers send.
_NUMPY_TYPES = {pa.uint64(): np.uint64, pa.int64(): np.int64}


def _joined_strings(lengths: list[int], parts: list[tuple[bytes, bytes]], n: int
                    ) -> pa.Array:
    """The workers' text columns (``lengths`` rows each, 32-bit offsets and data) as one
    ``large_string`` array: the data joined, each part's offsets moved by the data
    before it."""
    offsets = np.empty(n + 1, dtype=np.int64)
    at = done = 0
    for rows, (part_offsets, part_data) in zip(lengths, parts):
        if len(part_offsets) != 4 * (rows + 1):
            raise ValueError("over 2 GiB of text in one batch of one column")
        offsets[at:at + rows] = np.frombuffer(part_offsets, dtype=np.int32)[:-1]
        offsets[at:at + rows] += done
        at += rows
        done += len(part_data)
    offsets[n] = done
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(
        b"".join(part[1] for part in parts))])


LEFT_OUT = {"eid": pl.String, "rel_path": pl.String, "reason": pl.String, "detail": pl.String}


def uuid_file_names(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
    """The rows of a tree whose files carry their dataset's UUID (``alf.UUID_PART``), as
    ONE reads such a tree with ``uuid_filenames``: each ``id`` the UUID in its name, each
    ``rel_path`` the name without it; the files that cannot be such rows, with reasons;
    and whether the tree is one (its rows as they were, when it is not).

    ONE's switch is one for the whole tree, so the tree decides: it carries UUIDs when
    more of its files carry a valid one than not, and each file that does not follow the
    tree's naming is left out and reported (``mixed_uuid_names``) rather than written as
    a row ONE would look for elsewhere.  In a tree that carries them, a UUID-like part
    ONE would not read back as written (``invalid_uuid``), an id carried by two files
    (``duplicate_uuid``) and one session's name carried with two UUIDs
    (``duplicate_name``) are reported, never written.  The rows are the workers' (rel_path
    as listed); decided here, where the whole tree is seen.
    """
    left_out = pl.DataFrame(schema=LEFT_OUT)
    if frame.height == 0 or not frame["rel_path"].str.contains(alf.UUID_LIKE).any():
        return frame, left_out, False  # no file names a UUID: the common case, untouched
    # a dataset's name has two dots at least: its last two parts are in the name
    parts = pl.col("rel_path").str.split(".")
    ext, token = parts.list.get(-1, null_on_oob=True), parts.list.get(-2, null_on_oob=True)
    like = token.str.contains(f"^{alf.UUID_LIKE}$")
    frame = frame.lazy().with_columns(  # lazy: the split is made once for all three
        _token=pl.when(like).then(token),
        _bare=pl.when(like).then(pl.concat_str(pl.col("rel_path").str.head(
            pl.col("rel_path").str.len_chars() - ext.str.len_chars() - 38), pl.lit("."), ext)),
        _second=like & parts.list.get(-3, null_on_oob=True).str.contains(f"^{alf.UUID_READ}$")
    ).with_columns(_valid=pl.col("_token").str.contains(f"^{alf.UUID_PART}$").fill_null(False)
                   ).collect()
    valid = pl.col("_valid")
    carried = int(frame["_valid"].sum())
    total = frame.height
    if carried * 2 <= total:  # a tree of plain names: those carrying a UUID are out
        why = (f"its name carries a dataset's UUID, {total - carried} of the tree's {total} "
               f"files do not: ONE reads a tree with UUID names or without, not both")
        left_out = frame.filter(valid).select("eid", "rel_path", reason=pl.lit(
            p.UUID_NAMES_MIXED), detail=pl.lit(why))
        return frame.filter(~valid).drop("_token", "_bare", "_second", "_valid"), left_out, False
    token, second = pl.col("_token"), pl.col("_second")
    frame = frame.with_columns(
        _reason=pl.when(token.is_null()).then(pl.lit(p.UUID_NAMES_MIXED))
        .when(~valid | second).then(pl.lit(p.INVALID_UUID)),
        _detail=pl.when(token.is_null()).then(pl.lit(
            f"its name carries no dataset UUID, {carried} of the tree's {total} files do: "
            f"ONE (uuid_filenames) would look for it under its id"))
        .when(~valid).then(pl.format(
            "'{}' is not a UUID as ONE writes one in a name (lowercase, hyphenated, "
            "version 3, 4 or 5)", token))
        .when(second).then(pl.lit(
            "a second UUID-like part before its UUID: ONE would replace it with the row's id")))
    frame = _duplicates(frame)
    out = pl.col("_reason").is_not_null()
    left_out = frame.filter(out).select("eid", "rel_path", reason="_reason", detail="_detail")
    kept = (frame.filter(~out)
            .with_columns(id=pl.col("_token"), rel_path=pl.col("_bare"))
            .drop("_token", "_bare", "_second", "_valid", "_reason", "_detail"))
    return kept, left_out, True


def _duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    """Among the rows not yet left out, an id carried by two files (``duplicate_uuid``,
    every one of them), then one session's name carried with two UUIDs
    (``duplicate_name``): each left out, as ONE could load either.  Counted first, so
    that a tree without any (the usual one) pays for no window."""
    rest = pl.col("_reason").is_null()
    for reason, keys, detail in (
            (p.DUPLICATE_UUID, ["_token"], pl.format(
                "{} files carry the id {}", pl.len().over("_token", rest), "_token")),
            (p.DUPLICATE_NAME, ["eid", "_bare"], pl.lit(
                "another file of its session has this name with another UUID: ONE would "
                "load either"))):
        candidates = frame.filter(rest)
        if candidates.select(pl.struct(keys).n_unique()).item() == candidates.height:
            continue
        twice = rest & (pl.len().over(*keys, rest) > 1)
        frame = frame.with_columns(
            _reason=pl.when(twice).then(pl.lit(reason)).otherwise("_reason"),
            _detail=pl.when(twice).then(detail).otherwise("_detail"))
    return frame


def _repeated(eids: pl.Series, rows: np.ndarray) -> pl.Series:
    """Each session's id repeated once per row of it, in order, vectorized: positions
    repeated, then gathered (each id string made once per row, not once per list)."""
    return eids.gather(np.repeat(np.arange(len(eids), dtype=np.uint32), rows)).alias("eid")


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

"""ONE's ``load_tables``, vectorized for tables whose ids are uuid text.

one-api's ``one.alf.cache.load_tables`` turns every id into a ``uuid.UUID``, one Python
call at a time, and lets pandas sort those objects with Python comparisons to build the
index: on a million datasets that is most of the time a ``One`` takes to open.
:class:`FastLoad` gives ONE the same result (the same frames, index levels and their
order, dtypes, values, and the same ``_meta``) with the work done on arrays: each id
column's runs of equal texts are found, each run's text checked and decoded to 128 bits
by numpy, the distinct ids ordered by those integers (which is how ``uuid.UUID``
compares; already in order, as fastindex writes them, nothing is sorted), each distinct
UUID built once, and the index made from codes.

It does this only for what it was checked against: the one-api versions in
:data:`CHECKED_ONE_VERSIONS`, and tables of the shape ``load_tables`` casts to UUIDs
(``sessions`` indexed by ``id``, ``datasets`` by ``eid``, ``id``; every id canonical,
lowercase uuid text; ids unique). Anything else (string ids, empty tables, another
table in the folder, a table ONE would skip or patch differently) goes, whole, to ONE's
own ``load_tables``, so what ONE returns never depends on this module; the reason is
logged at DEBUG on the ``fastindex`` logger.

:func:`use_fast_load` installs it where one-api calls ``load_tables`` (``one.api`` for
``One.load_cache``/``save_cache``, ``one.alf.cache`` for the rest); :func:`restore_load`
puts ONE's back.
"""

from __future__ import annotations

import datetime
import functools
import json
import pickle
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastindex.gcpause import pauses_gc
from fastindex.log import logger

#: The one-api versions whose ``load_tables`` this loader was checked against (its
#: reading, index, patching, UUID cast, sort and ``_meta``: docs/ONE-CONTRACT.md).
CHECKED_ONE_VERSIONS = frozenset({"3.6.1"})

#: The index ONE sets on each table it casts (``load_tables``: sorted columns matching
#: ``.?id``), by table name.
INDEX_COLUMNS = {"sessions": ["id"], "datasets": ["eid", "id"]}

_ONE_INDEX_KEY = re.compile(".?id")  # load_tables' INDEX_KEY, as DataFrame.filter applies it
_HYPHENS = [8, 13, 18, 23]
_HEX_RUNS = [(0, 8), (9, 13), (14, 18), (19, 23), (24, 36)]  # the hex digits' columns

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq


class Unexpected(Exception):
    """Tables, or code, not of the shape the fast path was checked against."""


class FastLoad:
    """A drop-in for one-api's ``load_tables(tables_dir, glob_pattern='*.pqt')``.

    Called as ONE calls it, it returns what ``original`` (ONE's own ``load_tables``)
    returns for the same folder, computed on arrays when ``one_version`` is checked and
    the tables are of the expected shape, by ``original`` otherwise.
    """

    def __init__(self, original: Callable, one_version: str) -> None:
        functools.update_wrapper(self, original)
        self.original = original
        self.one_version = one_version

    def __call__(self, tables_dir, glob_pattern: str = "*.pqt"):
        try:
            if self.one_version not in CHECKED_ONE_VERSIONS:
                raise Unexpected(f"one-api {self.one_version} is not a checked version")
            _check_uuid_class()
            return _load(Path(tables_dir), glob_pattern)
        except Exception as why:  # noqa: BLE001 - ONE's own answer, or its own error
            logger.debug("ONE's own load_tables for %s: %s", tables_dir,
                         why if isinstance(why, Unexpected) else repr(why))
            return self.original(tables_dir, glob_pattern)


def use_fast_load(one_version: str | None = None) -> bool:
    """Make one-api load its tables with :class:`FastLoad`, for this process.

    Replaces ``load_tables`` in ``one.api`` and ``one.alf.cache``, where one-api looks
    it up when called; returns whether the fast path is installed.  Nothing is replaced
    when the one-api version (``one_version``, default the installed one's) is not in
    :data:`CHECKED_ONE_VERSIONS`.  Installing twice changes nothing; :func:`restore_load`
    undoes it.
    """
    try:
        import one
        import one.alf.cache
        import one.api
    except ModuleNotFoundError as err:
        if err.name not in ("one", "one.api", "one.alf", "one.alf.cache"):
            raise  # one-api is there, but something it needs is not: its own message
        raise ModuleNotFoundError("one-api is not installed: pip install 'fastindex[one]'",
                                  name=err.name) from None

    version = one.__version__ if one_version is None else one_version
    current = one.alf.cache.load_tables
    if isinstance(current, FastLoad):
        return True
    if version not in CHECKED_ONE_VERSIONS or one.api.load_tables is not current:
        logger.debug("ONE's own load_tables kept: one-api %s", version)
        return False
    fast = FastLoad(current, version)
    one.api.load_tables = one.alf.cache.load_tables = fast
    return True


def restore_load() -> None:
    """Put one-api's own ``load_tables`` back where :func:`use_fast_load` replaced it."""
    import one.alf.cache
    import one.api

    for module in (one.api, one.alf.cache):
        if isinstance(module.load_tables, FastLoad):
            module.load_tables = module.load_tables.original


def load_one_tables(tables_dir, glob_pattern: str = "*.pqt"):
    """One-api's ``load_tables(tables_dir, glob_pattern)``, fast where it can be.

    The same ``Bunch`` of frames and ``_meta`` as one-api's, whether or not
    :func:`use_fast_load` was called.
    """
    import one
    from one.alf.cache import load_tables

    original = load_tables.original if isinstance(load_tables, FastLoad) else load_tables
    return FastLoad(original, one.__version__)(tables_dir, glob_pattern)


@pauses_gc  # a million UUIDs and no cycle among them: the collector would rescan them
def _load(tables_dir: Path, glob_pattern: str):
    """``load_tables``' loop, every table's ids read and checked before any frame is made."""
    from iblutil.util import ensure_list
    from one.alf.cache import default_cache

    checked = [_checked(path) for path in tables_dir.glob(glob_pattern)]
    if len({c.name for c in checked}) != len(checked):
        raise Unexpected("two tables of one name")
    caches = default_cache()
    meta = caches["_meta"]
    for table in checked:
        meta["raw"][table.name] = table.raw
        meta["loaded_time"] = datetime.datetime.now()
        caches[table.name] = _frame(table)
        table.raw["origin"] = set(filter(None, ensure_list(table.raw.get("origin", "unknown"))))
    created = [datetime.datetime.fromisoformat(x["date_created"])
               for x in meta["raw"].values() if "date_created" in x]
    if created:
        meta["created_time"] = min(created)
    return caches


@dataclass(frozen=True)
class _Checked:
    """A table file found to be of the fast path's shape, its ids read."""

    name: str
    file: pq.ParquetFile
    raw: dict  # its one_metadata
    ids: list[_Ids]  # its index columns, in INDEX_COLUMNS order


@dataclass(frozen=True)
class _Ids:
    """An id column: its texts, each row's code, and the distinct ids' 16 bytes each
    (big-endian, as ``UUID.bytes``) in their integer order, the order of the codes."""

    texts: pa.Array
    codes: np.ndarray
    octets: np.ndarray


def _checked(path: Path) -> _Checked:
    """A table's ``one_metadata`` (as ``iblutil.io.parquet.load`` reads it) and its index
    columns, or why the fast path cannot load it as ``load_tables`` would."""
    import pyarrow.parquet as pq
    from one.alf.spec import is_uuid_string

    name = path.stem
    if name not in INDEX_COLUMNS or not path.is_file():
        raise Unexpected(f"{path.name} is not a sessions or datasets table file")
    file = pq.ParquetFile(path)
    try:
        raw = json.loads((file.schema_arrow.metadata or {})[b"one_metadata"])
    except (KeyError, ValueError) as err:
        raise Unexpected(f"{path.name}: no readable one_metadata") from err
    if not isinstance(raw, dict) or "date_created" not in raw:
        raise Unexpected(f"{path.name}: no date_created, a table ONE skips")
    columns = _index_columns(file.schema_arrow)
    if columns != INDEX_COLUMNS[name]:
        raise Unexpected(f"{name}: index {columns}, not {INDEX_COLUMNS[name]}")
    read = file.read(columns=columns)
    ids = [_id_texts(name, read.column(c)) for c in columns]
    if len(columns) == 1 and len(ids[0].octets) != read.num_rows:
        raise Unexpected(f"{name}: repeated ids")  # ONE's sort of one level is not stable
    if not any(is_uuid_string(text.as_py()) for text in ids[0].texts):
        raise Unexpected(f"{name}: no id ONE casts to a UUID")
    return _Checked(name, file, raw, ids)


def _frame(table: _Checked) -> pd.DataFrame:
    """The frame ``load_tables`` makes of one table: patched, UUID index, sorted."""
    import numpy as np
    import pandas as pd
    from one.alf.cache import patch_tables

    columns = INDEX_COLUMNS[table.name]
    levels = [pd.Index(_uuids(ids.octets), dtype=object) for ids in table.ids]
    codes = [ids.codes for ids in table.ids]
    body = [c for c in table.file.schema_arrow.names if c not in columns]
    frame = table.file.read(columns=body).to_pandas()
    frame = patch_tables(frame, table.raw.get("min_api_version"), table.name)
    if len(columns) == 1:
        frame.index = pd.Index(levels[0].to_numpy()[codes[0]], dtype=object, name=columns[0])
    else:
        frame.index = pd.MultiIndex(levels=levels, codes=codes, names=columns,
                                    verify_integrity=False)
    if not _in_order(*codes):  # ONE sorts only what is not sorted
        frame = frame.take(np.lexsort(codes[::-1]))  # stable, as ONE's sort of a MultiIndex
    return frame


def _index_columns(schema: pa.Schema) -> list[str]:
    """The columns ``load_tables`` ends up indexing by: those pandas metadata names,
    or, without them, the sorted columns matching ONE's ``.?id``."""
    pandas_meta = schema.pandas_metadata or {}
    named = pandas_meta.get("index_columns", [])
    if any(isinstance(c, str) for c in named):
        if not all(isinstance(c, str) for c in named):
            raise Unexpected(f"index {named}")
        return list(named)
    return sorted(c for c in schema.names if _ONE_INDEX_KEY.search(c))


def _id_texts(name: str, column: pa.ChunkedArray) -> _Ids:
    """An id column read as UUIDs' bytes, every id checked to be canonical uuid text
    (lowercase, hyphenated: the order of such texts is their integers')."""
    import numpy as np
    import pyarrow as pa

    if column.type not in (pa.string(), pa.large_string()) or column.null_count:
        raise Unexpected(f"{name}: ids of type {column.type}, or missing")
    if len(column) == 0:
        raise Unexpected(f"{name}: no rows")
    texts = column.combine_chunks()
    offsets = np.frombuffer(texts.buffers()[1],
                            np.int64 if texts.type == pa.large_string() else np.int32)
    if (np.diff(offsets[texts.offset:texts.offset + len(texts) + 1]) != 36).any():
        raise Unexpected(f"{name}: ids that are not 36 characters")
    chars = _chars(texts)
    starts = np.ones(len(chars), bool)  # where a run of equal texts starts
    starts[1:] = (chars[1:] != chars[:-1]).any(axis=1)
    run = np.cumsum(starts) - 1  # each row's run
    octets = _decoded(name, chars[starts])  # each run's id
    halves = octets.view(">u8").astype(np.uint64)
    high, low = halves[:, 0], halves[:, 1]
    if _in_order(high, low):  # rows in order: each run a distinct id, in order
        return _Ids(texts, run, octets)
    order = np.lexsort((low, high))
    high, low = high[order], low[order]
    first = np.ones(len(order), bool)  # where a run of equal ids starts, once sorted
    first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    code_of_run = np.empty(len(order), np.intp)
    code_of_run[order] = np.cumsum(first) - 1
    return _Ids(texts, code_of_run[run], octets[order][first])


def _decoded(name: str, chars: np.ndarray) -> np.ndarray:
    """Texts of 36 characters decoded as uuid text, (n, 16) bytes; ``Unexpected`` unless
    each is canonical: hyphens in place, lowercase hex digits elsewhere (``unhexlify``
    refuses any other character; upper case is refused here)."""
    import binascii

    import numpy as np

    if (chars[:, _HYPHENS] != ord("-")).any():
        raise Unexpected(f"{name}: ids that are not lowercase uuid text")
    hexes = np.empty((len(chars), 32), np.uint8)
    at = 0
    for start, stop in _HEX_RUNS:  # slices, not a fancy index: a copy at memory speed
        hexes[:, at:at + stop - start] = chars[:, start:stop]
        at += stop - start
    if ((hexes >= ord("A")) & (hexes <= ord("F"))).any():
        raise Unexpected(f"{name}: ids that are not lowercase uuid text")
    try:
        octets = binascii.unhexlify(hexes.tobytes())
    except binascii.Error:
        raise Unexpected(f"{name}: ids that are not lowercase uuid text") from None
    return np.frombuffer(octets, np.uint8).reshape(-1, 16)


def _chars(texts: pa.Array) -> np.ndarray:
    """Texts of 36 characters as a (n, 36) array of their bytes."""
    import numpy as np
    import pyarrow as pa

    try:
        fixed = texts.cast(pa.binary(36))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise Unexpected("ids that are not 36 characters") from err
    data = np.frombuffer(fixed.buffers()[1], np.uint8)
    return data[fixed.offset * 36:(fixed.offset + len(fixed)) * 36].reshape(-1, 36)


def _in_order(*keys: np.ndarray) -> bool:
    """Whether rows are in the lexicographic order of ``keys`` (most significant first)."""
    import numpy as np

    after = np.zeros(max(len(keys[0]) - 1, 0), bool)
    tied = np.ones_like(after)
    for key in keys:
        after |= tied & (key[1:] > key[:-1])
        tied &= key[1:] == key[:-1]
    return bool((after | tied).all())


_SAFETY = uuid.SafeUUID.unknown
_SLOTS: dict[str, Any] = dict(vars(uuid.UUID))  # the slots' descriptors, among the rest


def _uuids(octets: np.ndarray) -> np.ndarray:
    """``uuid.UUID(bytes=row)`` for each row of 16 bytes, with no Python call per UUID:
    the two slots ``UUID.__init__`` sets, set by their descriptors, as checked by
    :func:`_check_uuid_class` (the bytes come from text already checked)."""
    import numpy as np

    rows = np.ascontiguousarray(octets, np.uint8).view("V16").ravel().tolist()
    big: Literal["big"] = "big"
    ints = list(map(int.from_bytes, rows, repeat(big)))
    made = list(map(object.__new__, repeat(uuid.UUID, len(ints))))
    deque(map(_SLOTS["int"].__set__, made, ints), maxlen=0)
    deque(map(_SLOTS["is_safe"].__set__, made, repeat(_SAFETY)), maxlen=0)
    out = np.empty(len(made), dtype=object)
    out[:] = made
    return out


@functools.cache
def _uuid_class_as_checked() -> bool:
    import numpy as np

    text = "7c2fa0d2-3b5e-4f16-9a8b-0c1d2e3f4a5b"
    ours = _uuids(np.frombuffer(uuid.UUID(text).bytes, np.uint8).reshape(1, 16))[0]
    theirs = uuid.UUID(text)
    return (getattr(uuid.UUID, "__slots__", None) == ("int", "is_safe", "__weakref__")
            and ours == theirs and str(ours) == text and hash(ours) == hash(theirs)
            and pickle.dumps(ours) == pickle.dumps(theirs)
            and ours.is_safe is theirs.is_safe and ours.version == theirs.version)


def _check_uuid_class() -> None:
    if not _uuid_class_as_checked():
        raise Unexpected("uuid.UUID is not built as checked")


__all__ = ["CHECKED_ONE_VERSIONS", "FastLoad", "load_one_tables", "restore_load",
           "use_fast_load"]

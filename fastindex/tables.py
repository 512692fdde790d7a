"""Stage 4b: the two tables exactly as ONE reads them, as Arrow tables.

The schemas below are the contract checked against one-api (see
``docs/ONE-CONTRACT.md``).  ONE skips any table whose ``one_metadata``
lacks ``date_created``.  The pandas metadata names the index columns: without it ONE
sets the index itself with ``set_index(inplace=True)``, which warns under pandas 3.1.
Writing them to a folder, and the order of the swap, are ``store.py``'s.
"""

from __future__ import annotations

import datetime
import io
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from fastindex.columns import strings

QC_VALUES = ["NOT_SET", "PASS", "WARNING", "FAIL", "CRITICAL"]
QC_TYPE = pa.dictionary(pa.int8(), pa.string(), ordered=True)

SESSIONS_SCHEMA = pa.schema([
    ("id", pa.large_string()),
    ("lab", pa.string()),
    ("subject", pa.string()),
    ("date", pa.date32()),
    ("number", pa.uint16()),
    ("task_protocol", pa.string()),
    ("projects", pa.string()),
])
DATASETS_SCHEMA = pa.schema([
    ("eid", pa.large_string()),
    ("id", pa.large_string()),
    ("rel_path", pa.string()),
    ("file_size", pa.uint64()),
    ("hash", pa.string()),  # pa.null() when nothing was hashed: see datasets_table
    ("exists", pa.bool_()),
    ("qc", QC_TYPE),
    ("default_revision", pa.bool_()),
])


def sessions_table(frame: pl.DataFrame) -> pa.Table:
    """The sessions frame in ONE's exact column types."""
    return _conform(_to_arrow(frame), SESSIONS_SCHEMA)


def datasets_table(frame: pl.DataFrame, record_mtime: bool = False) -> pa.Table:
    """The datasets frame in ONE's exact column types; qc NOT_SET, exists True.

    ``exists`` comes from the frame when it has one (``update --keep-missing``).  With
    ``record_mtime`` an extra ``mtime_ns`` column keeps each file's modification time
    when its digests were computed, for ``update``.  A bucket's frame has an ``etag``
    column, kept as an extra column: what ``verify`` and ``update`` compare objects by.

    Without md5s the ``hash`` column has Arrow type null, not a null string: ONE skips
    its md5 check only when ``hash is None``, and pandas 3 reads null strings as NaN,
    but a null-typed column as None.
    """
    n = frame.height
    hashed = "hash" in frame.columns
    schema = DATASETS_SCHEMA if hashed else DATASETS_SCHEMA.set(
        DATASETS_SCHEMA.get_field_index("hash"), pa.field("hash", pa.null()))
    if "xxh3" in frame.columns:  # an extra column: ONE carries it along and ignores it
        schema = schema.append(pa.field("xxh3", pa.string()))
    if record_mtime:
        schema = schema.append(pa.field("mtime_ns", pa.int64()))
    if "etag" in frame.columns:  # a bucket's: what verify and update compare objects by
        schema = schema.append(pa.field("etag", pa.string()))
    if n == 0:  # parquet keeps no dictionary without rows: pandas would read a
        # categorical without categories, and ONE's qc filters raise TypeError on it
        schema = schema.set(schema.get_field_index("qc"), pa.field("qc", pa.string()))
    table = _to_arrow(frame)
    made = {"qc": _qc_not_set(n) if n else pa.array([], pa.string()), "hash": pa.nulls(n),
            "exists": pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(
                b"\xff" * ((n + 7) // 8))])}
    for name, column in made.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.chunked_array([column], column.type))
    return _conform(table, schema)


def _to_arrow(frame: pl.DataFrame) -> pa.Table:
    """polars' Arrow export, with strings as ``large_string`` whatever its default."""
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types, without ``pyarrow.compute``.

    ``Table.cast`` would do this, but its first use imports ``pyarrow.compute``, which
    costs more than writing both tables.  The one retyping the tables need is
    polars' ``large_string`` to ``string``, done here on the offsets buffer.
    """
    columns = []
    for field in schema:
        column = table[field.name]
        if column.type != field.type:
            if (column.type, field.type) != (pa.large_string(), pa.string()):
                raise TypeError(f"{field.name}: {column.type} is not {field.type}")
            column = pa.chunked_array([_narrow(c) for c in column.chunks], pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _narrow(chunk: pa.Array) -> pa.Array:
    """A ``large_string`` array as ``string``: the same bytes, 32-bit offsets."""
    validity, offsets, data = chunk.buffers()
    wide = np.frombuffer(offsets, dtype=np.int64)[: chunk.offset + len(chunk) + 1]
    if len(wide) and wide[-1] >= 2**31:  # over 2 GiB of text in one chunk: let Arrow say so
        return chunk.cast(pa.string())
    return pa.Array.from_buffers(pa.string(), len(chunk),
                                 [validity, pa.py_buffer(wide.astype(np.int32)), data],
                                 chunk.null_count, chunk.offset)


def _qc_not_set(n: int) -> pa.Array:
    """ONE's ordered qc dictionary, every row NOT_SET."""
    values = strings([v.encode() for v in QC_VALUES])
    indices = pa.Array.from_buffers(pa.int8(), n, [None, pa.py_buffer(bytes(n))])
    return pa.DictionaryArray.from_arrays(indices, values, ordered=True)


# How each Arrow type of the tables reads back in pandas (the pandas metadata format).
_PANDAS_TYPES = {
    pa.large_string(): ("unicode", "object"), pa.string(): ("unicode", "object"),
    pa.date32(): ("date", "object"), pa.uint16(): ("uint16", "uint16"),
    pa.uint64(): ("uint64", "UInt64"), pa.bool_(): ("bool", "bool"),
    pa.int64(): ("int64", "int64"),
    pa.null(): ("empty", "object"),
    QC_TYPE: ("categorical", "int8"),
}


def pandas_metadata(schema: pa.Schema, index: list[str] | None, rows: int) -> dict:
    """The ``pandas`` schema metadata that makes ``to_pandas`` set ONE's index.

    ``index`` None: a RangeIndex, with every column a column, as one-api writes its
    string-id tables (code that reads them with pandas uses ``df.loc[0]``).
    """
    columns = []
    for f in schema:
        pandas_type, numpy_type = _PANDAS_TYPES[f.type]
        meta = {"num_categories": len(QC_VALUES), "ordered": True} if f.type == QC_TYPE else None
        columns.append({"name": f.name, "field_name": f.name, "pandas_type": pandas_type,
                        "numpy_type": numpy_type, "metadata": meta})
    index_columns: list = [{"kind": "range", "name": None, "start": 0, "stop": rows,
                            "step": 1}] if index is None else index
    return {
        "index_columns": index_columns,
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": columns, "attributes": {},
        "creator": {"library": "fastindex", "version": ""}, "pandas_version": "2.0.0",
    }


def one_metadata(origin: object, created: datetime.datetime) -> dict:
    """ONE's own metadata: ``date_created`` (required by ONE) and ``origin``."""
    return {"date_created": created.isoformat(sep=" ", timespec="minutes"),
            "origin": str(origin)}


def finished(arrow: dict[str, pa.Table], metadata: dict[str, dict], id_index: bool = True
             ) -> dict[str, pa.Table]:
    """The tables as they are written: ``metadata`` (schema-metadata keys to JSON-able
    dicts) and pandas' own entry in each table's schema.

    ``arrow`` maps file names (sessions first) to tables.  ``id_index``: pandas reads the
    id columns as the index (one-api's uuid tables), else a RangeIndex (its string-id
    tables).
    """
    indexes = (["id"], ["eid", "id"]) if id_index else (None, None)
    done = {}
    for (name, table), index in zip(arrow.items(), indexes):
        meta = {**metadata, "pandas": pandas_metadata(table.schema, index, table.num_rows)}
        done[name] = table.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})
    return done


def republished(table: pa.Table, updates: dict[str, dict], drop: tuple[str, ...] = ()) -> bytes:
    """A table's parquet bytes with metadata entries replaced (``updates``: key -> the
    fields to replace in that entry) and the columns ``drop`` left out: what a release
    publishes says nothing about when or where it was packed, so the same tree gives the
    same bytes."""
    table = table.drop_columns([c for c in drop if c in table.column_names])
    meta = {k.decode(): json.loads(v) for k, v in (table.schema.metadata or {}).items()}
    for key, fields in updates.items():
        meta[key] = {**meta.get(key, {}), **fields}
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()}),
                   sink)
    return sink.getvalue()

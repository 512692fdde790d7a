"""Stage 4b: write the two tables exactly as ONE reads them.

The schemas below are the contract measured against one-api (see
``shared/reference/one-cache-tables.md``).  ONE skips any table whose ``one_metadata``
lacks ``date_created``.  The pandas metadata names the index columns: without it ONE
sets the index itself with ``set_index(inplace=True)``, which warns under pandas 3.1.
Both tables are written to temporary files in the output folder and renamed into place
only after both are complete.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

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
    return frame.to_arrow().select(SESSIONS_SCHEMA.names).cast(SESSIONS_SCHEMA)


def datasets_table(frame: pl.DataFrame, record_mtime: bool = False) -> pa.Table:
    """The datasets frame in ONE's exact column types; qc NOT_SET, exists True.

    ``exists`` comes from the frame when it has one (``update --keep-missing``).  With
    ``record_mtime`` an extra ``mtime_ns`` column keeps each file's modification time
    when its digests were computed, for ``update``.

    Without md5s the ``hash`` column has Arrow type null, not a null string: ONE skips
    its md5 check only when ``hash is None``, and pandas 3 reads null strings as NaN,
    but a null-typed column as None.
    """
    hashed = "hash" in frame.columns
    schema = DATASETS_SCHEMA if hashed else DATASETS_SCHEMA.set(
        DATASETS_SCHEMA.get_field_index("hash"), pa.field("hash", pa.null()))
    if "xxh3" in frame.columns:  # an extra column: ONE carries it along and ignores it
        schema = schema.append(pa.field("xxh3", pa.string()))
    if record_mtime:
        schema = schema.append(pa.field("mtime_ns", pa.int64()))
    frame = frame.with_columns(
        qc=pl.lit(QC_VALUES[0]).cast(pl.Enum(QC_VALUES)),
        **({} if "exists" in frame.columns else {"exists": pl.lit(True)}),
        **({} if hashed else {"hash": pl.lit(None, pl.Null)}))
    return frame.to_arrow().select(schema.names).cast(schema)


# How each Arrow type of the tables reads back in pandas (the pandas metadata format).
_PANDAS_TYPES = {
    pa.large_string(): ("unicode", "object"), pa.string(): ("unicode", "object"),
    pa.date32(): ("date", "object"), pa.uint16(): ("uint16", "uint16"),
    pa.uint64(): ("uint64", "UInt64"), pa.bool_(): ("bool", "bool"),
    pa.int64(): ("int64", "int64"),
    pa.null(): ("empty", "object"),
    QC_TYPE: ("categorical", "int8"),
}


def pandas_metadata(schema: pa.Schema, index: list[str]) -> dict:
    """The ``pandas`` schema metadata that makes ``to_pandas`` set ONE's index."""
    columns = []
    for f in schema:
        pandas_type, numpy_type = _PANDAS_TYPES[f.type]
        meta = {"num_categories": len(QC_VALUES), "ordered": True} if f.type == QC_TYPE else None
        columns.append({"name": f.name, "field_name": f.name, "pandas_type": pandas_type,
                        "numpy_type": numpy_type, "metadata": meta})
    return {
        "index_columns": index,
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": columns, "attributes": {},
        "creator": {"library": "fastindex", "version": ""}, "pandas_version": "2.0.0",
    }


def one_metadata(origin: Path, created: datetime.datetime) -> dict:
    """ONE's own metadata: ``date_created`` (required by ONE) and ``origin``."""
    return {"date_created": created.isoformat(sep=" ", timespec="minutes"),
            "origin": str(origin)}


def write_tables(out_dir: Path, sessions: pa.Table, datasets: pa.Table,
                 metadata: dict[str, dict], tag: str) -> tuple[Path, Path]:
    """Write both tables beside their final names, then rename both into place.

    ``metadata`` maps schema-metadata keys to JSON-able dicts; ``tag`` makes the
    temporary names unique to this build.  A failure before the renames leaves the
    previous tables untouched and removes the temporary files.
    """
    targets = [out_dir / "sessions.pqt", out_dir / "datasets.pqt"]
    temps = [t.with_name(f".{t.name}.{tag}.tmp") for t in targets]
    try:
        for table, temp, index in zip((sessions, datasets), temps, (["id"], ["eid", "id"])):
            meta = {**metadata, "pandas": pandas_metadata(table.schema, index)}
            table = table.replace_schema_metadata({k: json.dumps(v) for k, v in meta.items()})
            pq.write_table(table, temp)
            _fsync(temp)
        for temp, target in zip(temps, targets):
            os.replace(temp, target)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return targets[0], targets[1]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

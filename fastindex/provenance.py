"""What the tables' ``fastindex`` metadata records: written by ``render``, read back
(untrusted) by ``recorded``.

Both tables record the same entry: fastindex's version, the build id, the spec's options
(``BuildSpec.to_provenance``), the counts, the ignore rules read from the tree, and when
the walk began (``listed_at_ns``, what ``update`` decides racy files by), and, for a
tree whose files carry their dataset's UUID, ``uuid_filenames: true`` (``uuid_names``
reads it back).  ONE's own ``one_metadata`` is written beside it, with the same
``uuid_filenames`` for ONE's users (``one._cache['_meta']['raw']``).
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex.errors import InputError
from fastindex.gcpause import pauses_gc
from fastindex.results import Rendered
from fastindex.safefile import open_untrusted
from fastindex.tablefiles import DATASETS_FILE, SESSIONS_FILE
from fastindex.version import __version__

if TYPE_CHECKING:
    from fastindex.engine import TreeIndex
    from fastindex.spec import BuildSpec


@pauses_gc
def render(index: TreeIndex, spec: BuildSpec) -> Rendered:
    """An index's two tables with fastindex's provenance, as they will be written."""
    from fastindex import tables

    build_id = str(uuid.uuid4())
    counts = {"sessions": index.sessions.height, "datasets": index.datasets.height,
              "skipped": index.skipped.height, "warnings": len(index.warnings),
              "ignored": index.ignored,
              "bytes": int(index.datasets["file_size"].sum() or 0)}
    # a tree's naming, found, not asked for: recorded beside the spec, not in it, and
    # only when the files carry UUIDs (other tables stay as they were, byte for byte)
    named = {UUID_NAMES: True} if index.uuid_names else {}
    metadata = {
        "one_metadata": {**tables.one_metadata(index.root, datetime.datetime.now()), **named},
        "fastindex": {"version": __version__, "build_id": build_id,
                      "options": spec.to_provenance(), "counts": counts,
                      "ignore_rules": list(index.rules.patterns),
                      "listed_at_ns": index.listed_at_ns, **named},
    }
    arrow = {SESSIONS_FILE: tables.sessions_table(index.sessions),
             DATASETS_FILE: tables.datasets_table(index.datasets,
                                                  record_mtime=bool(spec.digests))}
    return Rendered(index, tables.finished(arrow, metadata, id_index=spec.uuid_ids),
                    build_id, counts["bytes"])


#: The metadata key (in ``fastindex`` and ``one_metadata``) of a tree whose files carry
#: their dataset's UUID: ONE's own name for the setting that reads it.
UUID_NAMES = "uuid_filenames"


def uuid_names(fastindex_meta: dict | None, named: object = "the tables") -> bool:
    """Whether tables say their tree's files carry their dataset's UUID (``alf.file_name``);
    checked, since tables may come from anyone: anything but a boolean is refused."""
    value = (fastindex_meta or {}).get(UUID_NAMES, False)
    if not isinstance(value, bool):
        raise InputError(f"{named}: the provenance has a bad {UUID_NAMES}: {value!r}")
    return value


def recorded(path: Path) -> dict | None:
    """A table's ``fastindex`` metadata (None: not written by fastindex)."""
    import pyarrow.parquet as pq

    try:
        with open_untrusted(path, "table") as f:
            meta = pq.read_schema(f).metadata or {}
    except InputError:
        raise
    except Exception as err:  # Arrow raises several types for a damaged file
        raise InputError(f"cannot read {path}: {err}") from None
    if b"fastindex" not in meta:
        return None
    try:
        value = json.loads(meta[b"fastindex"])
    except ValueError:
        raise InputError(f"{path}: its fastindex metadata is not JSON") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: its fastindex metadata is not an object")
    return value

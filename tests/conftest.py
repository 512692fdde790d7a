"""Shared helpers: small ALF trees written from a list of relative paths."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import settings

# Property tests check results, never speed: no per-example deadline (the first example
# also pays for loading polars, which on a busy machine can take a second).
settings.register_profile("fastindex", deadline=None)
settings.load_profile("fastindex")


def npy(rows: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(rows, dtype=np.float64))
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes | int] | list[str]) -> Path:
    """Create ``files`` (relative path -> content, or a size of zero bytes) under root."""
    if isinstance(files, list):
        files = {f: npy(3) for f in files}
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else bytes(content))
    return root


def age_files(root: Path, seconds: int = 86_400) -> None:
    """Date every file back, as in a tree written well before it was indexed: update
    trusts no mtime from the last seconds before a walk (racily clean files)."""
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))


def table_bytes(path: Path) -> tuple:
    """A table's content and metadata, less the keys that change on every run."""
    table = pq.read_table(path)
    meta = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    meta["one_metadata"].pop("date_created")
    meta["fastindex"].pop("build_id")
    meta["fastindex"].pop("listed_at_ns")
    return table.replace_schema_metadata(None).to_pylist(), table.schema.remove_metadata(), meta


@pytest.fixture(scope="session")
def two_workers():
    """Two worker processes, started once, for builds that many examples of a property
    test run (``executor=``): the same pool as ``workers=2`` makes, without starting one
    per example (a quarter of a second each)."""
    from fastindex.executors import executor_for

    with executor_for(None, 2, None, fork_now=True) as pool:
        yield pool


@pytest.fixture
def strict_warnings():
    """Turn warnings into errors, except pandas' deprecations of one-api's own calls."""
    import pandas

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pandas_deprecation = getattr(pandas.errors, "Pandas4Warning", None)  # pandas >= 3
        if pandas_deprecation is not None:
            warnings.filterwarnings("ignore", category=pandas_deprecation)
        # their own deprecated calls, not our tables; and Python 3.12+'s generic warning
        # on forking a process that runs threads (see executors.executor_for)
        for library in ("one", "iblutil", "multiprocessing"):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=library)
        yield


BEHAVIOUR = [
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/_ibl_trials.choice.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/_ibl_trials.intervals.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/#2021-01-01#/_ibl_trials.choice.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/probe00/pykilosort/spikes.times.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/probe00/pykilosort/#v2#/spikes.times.npy",
    "cortexlab/Subjects/KS001/2020-01-01/002/alf/_ibl_wheel.timestamps_bpod.npy",
    "cortexlab/Subjects/KS001/2020-01-02/001/_iblrig_taskData.raw.abc-123.jsonable",
    "cortexlab/Subjects/KS002/2020-01-01/001/alf/_ibl_trials.choice.npy",
    "hoferlab/Subjects/SWC_01/2021-06-30/003/raw_video_data/_iblrig_leftCamera.raw.mp4",
]


class StaleScandir:
    """``os.scandir`` whose listing goes stale: once ``victim`` is listed (with its stat
    fetched, as a walk on slow storage does), ``change(victim)`` runs."""

    def __init__(self, real, victim: Path, change) -> None:
        self.real, self.victim, self.change = real, victim, change

    def __call__(self, path):
        with self.real(path) as it:
            entries = list(it)
        listed = [e for e in entries if e.path == str(self.victim)]
        if listed and self.victim.is_file():
            listed[0].stat()
            self.change(self.victim)
        return _Listing(entries)


class _Listing(list):
    def __enter__(self):
        return iter(self)

    def __exit__(self, *exc):
        return False

"""The one-api edge: make_parquet_db's signature, setup without prompts, One.setup."""

from __future__ import annotations

import inspect

import pyarrow.parquet as pq
from conftest import BEHAVIOUR, write_tree
from one.alf import cache as one_cache

import fastindex


def _made_by_fastindex(path) -> bool:
    return b"fastindex" in (pq.read_schema(path).metadata or {})


def test_make_parquet_db_has_one_apis_signature(tmp_path) -> None:
    assert (inspect.signature(fastindex.make_parquet_db).parameters.keys()
            == inspect.signature(one_cache.make_parquet_db).parameters.keys())
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    out = tmp_path / "out"
    out.mkdir()
    ses, ds = fastindex.make_parquet_db(root, out, hash_ids=False, lab=None)
    assert (ses, ds) == (out / "sessions.pqt", out / "datasets.pqt")


def test_setup_builds_once_and_returns_a_local_one(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    one = fastindex.setup(root)
    assert one.offline and len(one.search()) == 5
    before = (root / "datasets.pqt").stat().st_mtime_ns
    fastindex.setup(root)  # tables exist: kept
    assert (root / "datasets.pqt").stat().st_mtime_ns == before


def test_use_fastindex_makes_one_setup_build_with_fastindex(tmp_path, monkeypatch) -> None:
    import one.api

    monkeypatch.setattr(one.api, "make_parquet_db", one.api.make_parquet_db)  # restored after
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.use_fastindex()
    one_ = one.api.One.setup(root, silent=True)
    assert _made_by_fastindex(root / "datasets.pqt")
    assert len(one_.search(subject="KS001")) == 3

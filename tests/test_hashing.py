"""Digests streamed in chunks, in the workers, in ONE's hash column or an xxh3 column."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest
import xxhash
from conftest import BEHAVIOUR, table_bytes, write_tree

import fastindex
from fastindex import hashing
from fastindex.index import hash_files

SIZES = [0, 1, hashing.CHUNK - 1, hashing.CHUNK, hashing.CHUNK + 1, 3 * hashing.CHUNK + 7]


@pytest.mark.parametrize("size", SIZES)
def test_digests_equal_hashlib_and_xxhash(tmp_path, size) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    nbytes, digests = hashing.digest_file(str(path), ("xxh3", "md5"))
    assert nbytes == size
    assert digests == {"md5": hashlib.md5(data).hexdigest(),
                       "xxh3": xxhash.xxh3_128(data).hexdigest()}


def test_parse_hash_choices() -> None:
    both = hashing.Digests.parse("xxh3+md5")
    assert both.algorithms == ("xxh3", "md5") and both.choice == "xxh3+md5"
    assert both.columns == ["xxh3", "hash"]
    none = hashing.Digests.parse("none")
    assert none == hashing.Digests.parse(None) and not none and none.choice == "none"
    with pytest.raises(ValueError, match="unknown hash"):
        hashing.Digests.parse("sha1")


def _tree(tmp_path):
    files = {f: bytes(i * 1000 + 1) for i, f in enumerate(BEHAVIOUR)}
    files[BEHAVIOUR[0]] = b"x" * (2 * hashing.CHUNK + 5)  # a "large" file
    return write_tree(tmp_path / "t", files)


def _disk_paths(root, ds) -> list[str]:
    ses = pl.read_parquet(root / "sessions.pqt")
    where = {i: f"{lab}/Subjects/{s}/{d}/{n:03d}" for i, lab, s, d, n in
             zip(ses["id"], ses["lab"], ses["subject"], ses["date"], ses["number"])}
    return [f"{where[e]}/{r}" for e, r in zip(ds["eid"], ds["rel_path"])]


@pytest.mark.parametrize("choice", ["md5", "xxh3", "xxh3+md5"])
def test_build_hashes_every_file(tmp_path, choice) -> None:
    deferred = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            if fn is hash_files:  # a task of its own: (root, paths, algorithms)
                deferred.extend(args[1])
            return super().submit(fn, *args, **kwargs)

    root = _tree(tmp_path)
    with Recording(2) as pool:  # the big file is deferred, the others are not
        result = fastindex.build(root, executor=pool, hash=choice, defer_size=hashing.CHUNK)
    assert deferred == [str(root / BEHAVIOUR[0])]  # hashed as a task of its own, and only it
    ds = pl.read_parquet(root / "datasets.pqt")
    paths = [root / p for p in _disk_paths(root, ds)]
    if "md5" in choice:
        assert ds["hash"].to_list() == [hashlib.md5(p.read_bytes()).hexdigest() for p in paths]
    else:
        assert ds["hash"].is_null().all()
    if "xxh3" in choice:
        assert ds["xxh3"].to_list() == [xxhash.xxh3_128(p.read_bytes()).hexdigest()
                                        for p in paths]
    else:
        assert "xxh3" not in ds.columns
    assert result.n_datasets == len(BEHAVIOUR)


def test_hashing_serial_and_parallel_agree(tmp_path) -> None:
    root = _tree(tmp_path)
    outs = []
    for i, kwargs in enumerate([dict(workers=1), dict(workers=2),
                                dict(executor=ThreadPoolExecutor(2))]):
        out = tmp_path / f"o{i}"
        out.mkdir()
        fastindex.build(root, out, hash="xxh3+md5", defer_size=hashing.CHUNK, **kwargs)
        outs.append(table_bytes(out / "datasets.pqt"))
    assert outs[0] == outs[1] == outs[2]


def test_make_parquet_db_hash_files_is_md5(tmp_path) -> None:
    root = _tree(tmp_path)
    _, ds_path = fastindex.make_parquet_db(root, hash_files=True)
    ds = pl.read_parquet(ds_path)
    assert ds["hash"].str.len_chars().to_list() == [32] * ds.height


def test_one_checks_md5_and_ignores_xxh3(tmp_path, caplog, strict_warnings) -> None:
    from one.api import One

    root = _tree(tmp_path)
    fastindex.build(root, workers=2, hash="xxh3+md5")
    one = One(cache_dir=root, mode="local")
    eid = one.path2eid(root / "cortexlab/Subjects/KS001/2020-01-01/002")
    with caplog.at_level(logging.WARNING):
        one.load_dataset(eid, "_ibl_wheel.timestamps_bpod.npy", download_only=True,
                         check_hash=True)
        assert one.search(subject="KS001", datasets=["_ibl_trials.choice.npy"])
        saved = tmp_path / "saved"
        saved.mkdir()
        one.save_cache(save_dir=saved, clobber=True)
        reloaded = One(cache_dir=root, tables_dir=saved, mode="local")
    assert [r.getMessage() for r in caplog.records] == []
    assert "xxh3" in reloaded._cache.datasets.columns
    assert reloaded._cache.datasets["xxh3"].equals(one._cache.datasets["xxh3"])

    target = root / "cortexlab/Subjects/KS001/2020-01-01/002/alf/_ibl_wheel.timestamps_bpod.npy"
    target.write_bytes(b"\xff" * target.stat().st_size)  # same size, other content
    with caplog.at_level(logging.WARNING):
        one.load_dataset(eid, "_ibl_wheel.timestamps_bpod.npy", download_only=True,
                         check_hash=True)
    assert any("md5 mismatch" in r.getMessage() for r in caplog.records)

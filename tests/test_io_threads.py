"""Listings in flight (``folderlister.py``): any number of I/O threads gives the same tables."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, table_bytes, write_tree

import fastindex
from fastindex import folderlister
from fastindex.cli import main
from fastindex.treegen import make_tree
from fastindex.verify import verify

SES = "lab/Subjects/sub/2021-01-01/001"


@pytest.fixture(scope="module")
def messy_tree(tmp_path_factory) -> Path:
    """Sessions at every depth, with what a walk must report or pass over."""
    root = tmp_path_factory.mktemp("messy")
    make_tree(root, files=600, shape="ephys", seed=5)
    write_tree(root, BEHAVIOUR)
    write_tree(root, {
        f"{SES}/alf/_ibl_trials.choice.npy": b"x",
        f"{SES}/alf/not an alf name.txt": b"x",
        f"{SES}/scratch/big.bin": b"x",  # excluded below
        f"{SES}/alf/.DS_Store": b"x",
        "sub2/2021-01-01/1/alf/trials.table.npy": b"x",  # ONE looks in .../001
        "sub2/2021-02-30/001/alf/trials.table.npy": b"x",  # no such date
        "lab/Subjects/sub/notes.txt": b"x",
        "lab/Subjects/sub/2021-01-02/001/#2021-02-02#/alf/trials.table.npy": b"x",
    })
    os.symlink(root / SES / "alf", root / SES / "linked")
    os.symlink(root / "nowhere", root / SES / "alf" / "broken.link.npy")
    (root / SES / "alf" / "closed.x.npy").write_bytes(b"x")
    (root / SES / "alf" / "closed.x.npy").chmod(0)
    return root


def _build(root: Path, out: Path, **kwargs) -> tuple:
    out.mkdir()
    result = fastindex.build(root, out, exclude=["scratch/"], **kwargs)
    return (table_bytes(out / "sessions.pqt"), table_bytes(out / "datasets.pqt"),
            result.skipped.sort("path").rows(), result.ignored)


@pytest.fixture
def fresh_decisions():
    """Each test decides about its storage afresh (the finding is kept per process)."""
    folderlister.StorageProbe.forget()
    yield
    folderlister.StorageProbe.forget()


def test_any_number_of_io_threads_gives_the_same_tables(messy_tree, tmp_path,
                                                        fresh_decisions) -> None:
    expected = _build(messy_tree, tmp_path / "serial", workers=1, io_threads=0)
    assert expected[2] and expected[3] == 2  # problems reported, scratch/ and .DS_Store ignored
    runs = {"default": {}, "one": dict(io_threads=1), "many": dict(io_threads=64),
            "many, 1 worker": dict(workers=1, io_threads=64),
            "many, spawn": dict(workers=3, start_method="spawn", io_threads=16)}
    for name, kwargs in runs.items():
        assert _build(messy_tree, tmp_path / name.replace(" ", ""), **kwargs) == expected, name


def test_hashing_on_io_threads_gives_the_same_digests(messy_tree, tmp_path) -> None:
    expected = _build(messy_tree, tmp_path / "serial", workers=1, io_threads=0,
                      hash="xxh3+md5")
    assert _build(messy_tree, tmp_path / "threads", workers=2, io_threads=8,
                  hash="xxh3+md5") == expected


class _Listers(list):
    """The listers the walks of this process make (``folderlister.FolderLister``, recorded)."""

    def __init__(self, monkeypatch) -> None:
        super().__init__()
        listers = self

        class Recorded(folderlister.FolderLister):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                listers.append(self)

        monkeypatch.setattr(folderlister, "FolderLister", Recorded)


@pytest.mark.parametrize("slow", [True, False])
def test_slow_listings_turn_threads_on_and_fast_ones_do_not(messy_tree, tmp_path, monkeypatch,
                                                            fresh_decisions, slow) -> None:
    """The automatic default: timed listings decide, and the walk's result is the same."""
    monkeypatch.setattr(folderlister, "SLOW_ENTRY_S", -1.0 if slow else float("inf"))
    listers = _Listers(monkeypatch)
    expected = _build(messy_tree, tmp_path / "serial", workers=1, io_threads=0)
    assert listers and not any(lister.turned_on for lister in listers)
    assert folderlister.finding(str(messy_tree)) is None  # told 0 threads: nothing timed
    listers.clear()
    assert _build(messy_tree, tmp_path / "auto", workers=1) == expected
    assert listers and any(lister.turned_on for lister in listers) == slow
    # later walks on the device, and workers told of it, need not time again
    threads = folderlister.DEFAULT_THREADS if slow else 0
    assert folderlister.finding(str(messy_tree)) == folderlister.IoThreads(threads)
    listers.clear()
    assert _build(messy_tree, tmp_path / "again", workers=1) == expected
    assert listers and not any(lister.turned_on for lister in listers)


@pytest.mark.parametrize("slow", [True, False])
def test_a_lister_remembers_its_decision_where_it_is_told(tmp_path, monkeypatch,
                                                          fresh_decisions, slow) -> None:
    """``decisions``: what the timed listings found, kept for the next walks given the
    same mapping; they start threaded, or serial, without timing again."""
    monkeypatch.setattr(folderlister, "SLOW_ENTRY_S", -1.0 if slow else float("inf"))
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    folders = sorted({str(p.parent) for p in root.rglob("*.npy")})
    decisions: dict[int, bool] = {}
    for walk in ("first", "again"):
        with folderlister.FolderLister(folderlister.IoThreads(), lambda rel, name: True, str(root),
                         decisions=decisions) as lister:
            for folder in folders:
                assert {e.name for e in lister.entries(folder, "")} == set(os.listdir(folder))
            assert lister.turned_on == (slow and walk == "first")
            assert lister.pool.on == slow
        assert decisions == {os.stat(root).st_dev: slow}
    assert folderlister.finding(str(root)) is None  # kept there, not in the process's


def test_a_listing_error_is_the_walks_to_report(tmp_path) -> None:
    for threads in (0, 4):
        with folderlister.FolderLister(folderlister.IoThreads(threads), lambda rel, name: True,
                                       str(tmp_path)) as s:
            s.start(str(tmp_path / "missing"), "missing")
            with pytest.raises(FileNotFoundError):
                s.entries(str(tmp_path / "missing"), "missing")
            with pytest.raises(NotADirectoryError):
                write_tree(tmp_path, {"file": b"x"})
                s.entries(str(tmp_path / "file"), "file")


def test_update_and_verify_take_io_threads(messy_tree, tmp_path, monkeypatch) -> None:
    """Each command's --io-threads reaches the walks (in this process: one worker)."""
    asked = []
    init = folderlister.FolderLister.__init__

    def spy(self, io, *args, **kwargs):
        asked.append(io.threads)
        init(self, io, *args, **kwargs)

    monkeypatch.setattr(folderlister.FolderLister, "__init__", spy)
    out = tmp_path / "out"
    out.mkdir()
    fastindex.build(messy_tree, out, hash="xxh3", io_threads=8, workers=1)
    assert asked and set(asked) == {8}
    asked.clear()
    assert verify(messy_tree, out, hash=True, io_threads=5, workers=1).ok
    assert asked and set(asked) == {5}
    asked.clear()
    assert main(["update", str(messy_tree), "--out", str(out), "--io-threads", "3",
                 "--workers", "1", "--quiet"]) == 0
    assert asked and set(asked) == {3}
    assert pl.read_parquet(out / "datasets.pqt")["xxh3"].null_count() == 0


def test_io_threads_from_the_environment_and_bad_values(tmp_path, monkeypatch, capsys) -> None:
    write_tree(tmp_path / "root", BEHAVIOUR)
    monkeypatch.setenv(folderlister.ENV, "5")
    assert folderlister.io_threads() == folderlister.IoThreads(5)
    assert folderlister.io_threads(2) == folderlister.IoThreads(2)  # the argument wins
    monkeypatch.setenv(folderlister.ENV, "many")
    assert main(["build", str(tmp_path / "root"), "--quiet"]) == 2
    assert "FASTINDEX_IO_THREADS='many'" in capsys.readouterr().err
    assert not (tmp_path / "root" / "datasets.pqt").exists()
    monkeypatch.delenv(folderlister.ENV)
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(tmp_path / "root"), "--io-threads", "-1"])
    assert exit_.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err

"""Parity with one-api's make_parquet_db, and ONE reading fastindex tables without warning.

Every dataset one-api indexes that ONE can load (its file is where ONE's own path rules
look) is in fastindex's table with the same session, rel_path and file_size; the only
rows that differ are the documented ones.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, npy, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from one.alf.cache import make_parquet_db as one_make_parquet_db
from one.alf.path import get_session_path, session_path_parts
from one.converters import session_record2path

import fastindex
from fastindex import problems as p

BARE = [f.split("Subjects/", 1)[1] for f in BEHAVIOUR]
MESSY = BEHAVIOUR + [
    "cortexlab/Subjects/KS001/2020-01-01/001/bad name.with space.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/.hidden.file.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/my coll/trials.table.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/my coll/x/trials.table.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/notes.txt",
    "cortexlab/Subjects/KS001/2020-01-01/2/alf/trials.table.npy",
    "cortexlab/Subjects/KS001/2020-01-01/002/alf/trials.table.npy",
    "cortexlab/Subjects/KS001/README.md",
]
SHAPES = {
    "lab_subjects": (BEHAVIOUR, ""),
    "bare_subjects": (BARE, ""),
    "root_is_lab": (BEHAVIOUR, "cortexlab"),
    "root_is_subject": (BEHAVIOUR, "cortexlab/Subjects/KS001"),
    "messy": (MESSY, ""),
}


def one_rows(root: Path, out: Path) -> pl.DataFrame:
    """one-api's datasets that ONE can load, as (eid, rel_path, file_size), string ids.

    A row loads when the path ONE computes for it (``session_record2path``) is its own
    file.  one-api's string id keeps the number folder as spelled, which tells a ``2``
    row (that ONE sends to ``002``'s file) from the ``002`` row.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sessions, datasets = one_make_parquet_db(root, out, hash_ids=False)
    folders = {r["id"]: session_record2path(r, root)
               for r in pl.read_parquet(sessions).iter_rows(named=True)}
    frame = pl.read_parquet(datasets).filter(pl.col("rel_path").is_not_null())
    loads = [folders[eid].name == eid.rsplit("/", 1)[1] and (folders[eid] / rel).is_file()
             for eid, rel in zip(frame["eid"], frame["rel_path"])]
    return frame.filter(pl.Series(loads, dtype=pl.Boolean)).select(
        "eid", "rel_path", pl.col("file_size").cast(pl.UInt64))


def fastindex_rows(root: Path, out: Path, executor=None
                   ) -> tuple[pl.DataFrame, fastindex.BuildResult]:
    """fastindex's rows, built on two workers (``executor``: a pool of two, lent)."""
    how = {"executor": executor} if executor is not None else {"workers": 2}
    result = fastindex.build(root, out, hash_ids=False, **how)
    frame = pl.read_parquet(result.datasets_path)
    return frame.select("eid", "rel_path", "file_size"), result


def assert_parity(root: Path, tmp: Path, executor=None) -> None:
    (tmp / "one").mkdir()
    (tmp / "fi").mkdir()
    theirs = one_rows(root, tmp / "one")
    ours, result = fastindex_rows(root, tmp / "fi", executor)
    # one-api's defects, each a documented difference: rows that ONE cannot load (left
    # out by one_rows), a null rel_path for a non-ALF name; for a file in a folder that is
    # not a collection, a row with the bare file name.
    expected = Counter(theirs.iter_rows())
    for rel in result.skipped.filter(pl.col("reason") == p.BAD_COLLECTION)["path"]:
        path = root / rel
        lab, subject, date, number = session_path_parts(get_session_path(path))
        eid = "/".join(filter(None, (lab, subject, date, number)))
        expected[(eid, path.name, path.stat().st_size)] -= 1
    assert Counter(ours.iter_rows()) == +expected
    # and nothing is lost without a reason
    bad = {p.NOT_ALF_NAME, p.BAD_COLLECTION, p.OUTSIDE_SESSION, p.UNLOADABLE_SESSION}
    assert set(result.skipped["reason"]) <= bad


@pytest.mark.parametrize("shape", SHAPES)
def test_parity_with_one_api(shape, tmp_path) -> None:
    files, sub = SHAPES[shape]
    write_tree(tmp_path / "tree", files)
    assert_parity(tmp_path / "tree" / sub, tmp_path)


def test_parity_on_generated_ephys_tree(tmp_path) -> None:
    from fastindex.treegen import make_tree

    make_tree(tmp_path / "tree", files=400, shape="ephys", seed=1)
    assert_parity(tmp_path / "tree", tmp_path)


def test_empty_sessions_are_rows(tmp_path) -> None:
    root = write_tree(tmp_path / "tree", BEHAVIOUR)
    (root / "cortexlab/Subjects/KS003/2020-03-03/001").mkdir(parents=True)
    result = fastindex.build(root, workers=1, hash_ids=False)
    assert "cortexlab/KS003/2020-03-03/001" in pl.read_parquet(result.sessions_path)["id"]
    with pytest.raises(AssertionError):  # one-api's uuid ids cannot have an empty session
        one_make_parquet_db(root, hash_ids=True)


def test_one_api_crashes_on_impossible_date_and_fastindex_reports_it(tmp_path) -> None:
    root = write_tree(tmp_path / "tree", ["sub/2021-02-30/001/alf/trials.table.npy"])
    with pytest.raises(Exception):  # noqa: B017 - pandas' own date error
        one_make_parquet_db(root, hash_ids=False)
    result = fastindex.build(root, workers=1)
    assert result.skipped["reason"].to_list() == [p.IMPOSSIBLE_DATE]


name = st.sampled_from(["trials.table.npy", "_ibl_wheel.position.npy", "x.y_bpod.z.npy",
                        "spikes.times.abc-1.npy", "bad name.x.npy", "noext", "a.b"])
folder = st.sampled_from(["alf", "probe00", "#v1#", "#2020-01-01#", "raw_data", "my coll"])
session = st.sampled_from(["lab/Subjects/s1/2020-01-01/001", "lab/Subjects/s1/2020-01-02/1",
                           "s2/2020-01-01/003", "lab/Subjects/s.3-x/2021-12-31/002"])
trees = st.lists(st.tuples(session, st.lists(folder, max_size=3), name), min_size=1,
                 max_size=25)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trees)
def test_parity_on_random_trees(tmp_path_factory, two_workers, tree) -> None:
    tmp = tmp_path_factory.mktemp("random")
    files = {"/".join([s, *f, n]): os.urandom(len(n)) for s, f, n in tree}
    write_tree(tmp / "tree", files)
    assert_parity(tmp / "tree", tmp, two_workers)


@pytest.fixture(scope="module")
def loaded_tree(tmp_path_factory) -> Path:
    """A tree with real arrays, revisions and a second lab; tables built by both tools."""
    root = tmp_path_factory.mktemp("load")
    files = {f: npy(5) for f in BEHAVIOUR}
    revised = "cortexlab/Subjects/KS001/2020-01-01/001/alf/#2021-01-01#"
    files[f"{revised}/_ibl_trials.choice.npy"] = npy(7)
    files[f"{revised}/_ibl_trials.intervals.npy"] = npy(7)
    write_tree(root / "fi", files)
    write_tree(root / "one", files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_make_parquet_db(root / "one")
    fastindex.build(root / "fi", workers=2)
    return root


def _queries(one) -> dict:
    """The same questions to ONE, answers expressed in paths (ids differ between tools)."""
    def paths(eids):
        return sorted(str(one.eid2path(e).relative_to(one.cache_dir)) for e in eids)

    eid = one.path2eid(Path(one.cache_dir) / "cortexlab/Subjects/KS001/2020-01-01/001")
    return {
        "glob": paths(one.search(subject="KS*")),
        "regex": paths(one.search(subject="KS00[12]")),
        "datasets": paths(one.search(datasets=["_ibl_trials.choice.npy"])),
        "date_range": paths(one.search(date_range=["2020-01-01", "2020-01-01"])),
        "qc": paths(one.search(dataset_qc_lte="FAIL")),
        "lab": paths(one.search(laboratory="hoferlab")),
        "list": sorted(one.list_datasets(eid)),
        "object": len(one.load_object(eid, "trials", collection="alf").choice),
        "dataset": len(one.load_dataset(eid, "_ibl_trials.choice.npy", collection="alf")),
        "old_revision": len(one.load_dataset(eid, "_ibl_trials.choice.npy",
                                             collection="alf", revision="2020-12-31")),
    }


def test_one_answers_the_same_and_warns_only_on_ones_tables(loaded_tree, caplog,
                                                            strict_warnings) -> None:
    from one.api import One

    with caplog.at_level(logging.WARNING):
        ours = _queries(One(cache_dir=loaded_tree / "fi", mode="local"))
    assert [r.getMessage() for r in caplog.records] == []
    assert ours["object"] == 7 and ours["old_revision"] == 5  # default vs named revision
    assert len(ours["datasets"]) == 2 and len(ours["glob"]) == 4

    warnings.simplefilter("default")
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        theirs = _queries(One(cache_dir=loaded_tree / "one", mode="local"))
    assert theirs == ours
    complaints = [str(w.message) for w in seen] + [r.getMessage() for r in caplog.records]
    assert any("No default revision" in c for c in complaints)  # the check can fail
    assert any("md5 mismatch" in c for c in complaints)

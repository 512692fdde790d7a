"""Every row loads: a row is written only where ONE's own path rules find its file.

ONE rebuilds a session's folder from its row on every load
(``one.converters.session_record2path``); these tests hold fastindex's tables to that
function and to real ``One(mode='local')`` loads, on the six layouts where one-api's own
tables send ONE to the wrong place, and on random trees.
"""

from __future__ import annotations

import json
import logging
import os
import random
import uuid
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import npy, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from one.alf.path import add_uuid_string
from one.converters import session_record2path

import fastindex
from fastindex import problems as p
from fastindex.cli import main

OWN = {"sessions.pqt", "datasets.pqt", ".fastindex.lock"}
FILE = "alf/_ibl_trials.choice.npy"


def files_under(root: Path) -> set[str]:
    return {f.relative_to(root).as_posix() for f in root.rglob("*")
            if f.is_file() and f.name not in OWN}


def uuid_filenames(tables: Path) -> bool:
    """What the tables tell ONE's users to set ``One.uuid_filenames`` to."""
    meta = pq.read_schema(tables / "datasets.pqt").metadata[b"one_metadata"]
    return json.loads(meta).get("uuid_filenames", False)


def one_paths(tables: Path, root: Path) -> pl.DataFrame:
    """Each dataset row with the path ONE loads it from, by one-api's own functions
    (``session_record2path``; ``add_uuid_string`` of the row's id, as ONE with
    ``uuid_filenames`` does, when the tables say their files carry it)."""
    sessions = pl.read_parquet(tables / "sessions.pqt")
    folders = {r["id"]: session_record2path(r, root) for r in sessions.iter_rows(named=True)}
    datasets = pl.read_parquet(tables / "datasets.pqt")
    named = uuid_filenames(tables)
    return datasets.with_columns(path=pl.Series(
        [str(add_uuid_string(folders[e] / rel, did) if named else folders[e] / rel)
         for e, rel, did in zip(datasets["eid"], datasets["rel_path"], datasets["id"])]))


def assert_every_row_loads(root: Path, result: fastindex.BuildResult, caplog,
                           sample: int = 5) -> None:
    """Every row's ONE path is a file of its size; a sample loads through ``One`` with no
    warning; every file under the root is a row or reported, never both, never neither."""
    from one.api import One

    rows = one_paths(result.datasets_path.parent, root)
    for path, size in zip(rows["path"], rows["file_size"]):
        assert Path(path).is_file() and Path(path).stat().st_size == size, path
    indexed = {Path(x).relative_to(root).as_posix() for x in rows["path"]}
    reported = set(result.skipped["path"]) & files_under(root)
    assert not indexed & reported
    assert indexed | reported == files_under(root)

    one = One(cache_dir=result.datasets_path.parent, mode="local")
    one.uuid_filenames = uuid_filenames(result.datasets_path.parent)
    loadable = list(rows.filter("default_revision").iter_rows(named=True))  # by name alone
    picked = random.Random(0).sample(loadable, min(sample, len(loadable)))
    caplog.clear()  # the build's own warning of what it skipped is not ONE's
    with caplog.at_level(logging.WARNING):
        for row in picked:
            *folders, name = row["rel_path"].split("/")
            revision = folders.pop()[1:-1] if folders and folders[-1].startswith("#") else None
            got = one.load_dataset(row["eid"], name, collection="/".join(folders) or None,
                                   revision=revision, download_only=True)
            assert Path(got) == Path(row["path"])
    assert [r.getMessage() for r in caplog.records] == []


def _unloadable(result) -> dict[str, str]:
    rows = result.skipped.filter(pl.col("reason") == p.UNLOADABLE_SESSION)
    return dict(zip(rows["path"], rows["detail"]))


def _fix_then_build(root: Path, caplog, *fix_args: str) -> fastindex.BuildResult:
    assert main(["fix", str(root), "--apply", "--journal", str(root.parent / "j"), *fix_args]) == 0
    result = fastindex.build(root, workers=2)
    assert result.skipped.height == 0
    assert_every_row_loads(root, result, caplog)
    return result


@pytest.mark.parametrize("number", ["1", "12"])
def test_a_number_not_spelled_with_three_digits(tmp_path, number, caplog,
                                                strict_warnings) -> None:
    root = write_tree(tmp_path / "t", {f"lab/Subjects/s/2020-01-01/{number}/{FILE}": npy(2),
                                       f"lab/Subjects/s/2020-01-01/003/{FILE}": npy(3)})
    result = fastindex.build(root, workers=2)
    assert _unloadable(result) == {
        f"lab/Subjects/s/2020-01-01/{number}/{FILE}":
            f"ONE looks for this session in lab/Subjects/s/2020-01-01/{int(number):03d}"}
    assert_every_row_loads(root, result, caplog)
    assert _fix_then_build(root, caplog).n_sessions == 2


def test_two_spellings_of_one_number_never_load_each_others_files(tmp_path, caplog, capsys,
                                                                  strict_warnings) -> None:
    root = write_tree(tmp_path / "t", {f"s/2020-01-01/2/{FILE}": npy(2),
                                       f"s/2020-01-01/002/{FILE}": npy(9)})
    result = fastindex.build(root, workers=2)
    assert result.n_datasets == 1
    assert _unloadable(result) == {f"s/2020-01-01/2/{FILE}": (
        "ONE looks for this session in s/2020-01-01/002, another folder: its files would "
        "load instead")}
    assert_every_row_loads(root, result, caplog)
    before = files_under(root)
    assert main(["fix", str(root), "--apply", "--journal", str(tmp_path / "j")]) == 1
    assert "refused\ts/2020-01-01/2\ts/2020-01-01/002 exists" in capsys.readouterr().out
    assert files_under(root) == before  # never merged


def test_a_lab_folder_without_subjects(tmp_path, caplog, strict_warnings) -> None:
    root = write_tree(tmp_path / "t", {f"labB/m2/2021-05-05/001/{FILE}": npy(2),
                                       f"labB/m2/2021-05-06/1/{FILE}": npy(2)})
    result = fastindex.build(root, workers=2)
    assert _unloadable(result)[f"labB/m2/2021-05-05/001/{FILE}"] == (
        "ONE looks for this session in m2/2021-05-05/001")
    assert result.n_sessions == 0
    fixed = _fix_then_build(root, caplog)
    assert set(pl.read_parquet(fixed.sessions_path)["lab"]) == {"labB"}
    assert (root / "labB/Subjects/m2/2021-05-06/001").is_dir()


def test_a_release_one_folder_down(tmp_path, caplog, strict_warnings) -> None:
    root = write_tree(tmp_path / "t", {f"release_v1/labD/Subjects/s/2021-01-01/001/{FILE}":
                                       npy(2)})
    result = fastindex.build(root, workers=2)
    assert list(_unloadable(result).values()) == [
        "ONE looks for this session in labD/Subjects/s/2021-01-01/001"]
    assert _fix_then_build(root, caplog).n_sessions == 1
    assert (root / "labD/Subjects/s").is_dir()


def test_a_root_inside_a_lab_gives_lab_less_rows_that_load(tmp_path, caplog, capsys,
                                                           strict_warnings) -> None:
    tree = write_tree(tmp_path / "data", {f"labF/Subjects/s/2021-01-01/001/{FILE}": npy(2)})
    root = tree / "labF/Subjects"
    result = fastindex.build(root, workers=2)
    assert pl.read_parquet(result.sessions_path)["lab"].to_list() == [""]
    assert [(w.reason, w.detail) for w in result.warnings] == [(
        p.LAB_ABOVE_ROOT, f"the root is inside lab labF: the rows have no lab; index {tree} "
                          f"to keep it")]
    assert_every_row_loads(root, result, caplog)
    assert main(["fix", str(root)]) == 0
    assert "nothing to rename" in capsys.readouterr().err


def test_lab_on_a_tree_without_lab_folders_is_refused(tmp_path, caplog, capsys,
                                                      strict_warnings) -> None:
    root = write_tree(tmp_path / "t", {f"s/2020-01-01/001/{FILE}": npy(2)})
    assert main(["build", str(root), "--lab", "mylab", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no row would load" in err and "fastindex fix ROOT --lab mylab" in err
    assert not (root / "sessions.pqt").exists()
    with pytest.raises(AssertionError):  # as one-api's make_parquet_db raises
        fastindex.make_parquet_db(root, lab="mylab")
    _fix_then_build(root, caplog, "--lab", "mylab")
    result = fastindex.build(root, workers=1, lab="mylab")  # now the lab is the tree's
    assert pl.read_parquet(result.sessions_path)["lab"].to_list() == ["mylab"]
    with pytest.raises(fastindex.InputError, match="lab name conflict"):
        fastindex.build(root, workers=1, lab="otherlab")


@pytest.mark.parametrize("root_at", ["s", "s/2020-01-01", "s/2020-01-01/001"])
def test_a_root_inside_the_subject_is_reported_not_indexed(tmp_path, root_at, capsys) -> None:
    tree = write_tree(tmp_path / "t", {f"s/2020-01-01/001/{FILE}": npy(2)})
    result = fastindex.build(tree / root_at, tmp_path, workers=1)
    assert result.n_datasets == 0 and set(_unloadable(result)) == {
        (tree / f"s/2020-01-01/001/{FILE}").relative_to(tree / root_at).as_posix()}
    assert main(["fix", str(tree / root_at)]) == 1
    assert f"index {tree} instead" in capsys.readouterr().out


def test_fix_on_a_loadable_tree_does_nothing(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {f"lab/Subjects/s/2020-01-01/001/{FILE}": npy(2)})
    before = files_under(root)
    assert main(["fix", str(root), "--apply", "--journal", str(tmp_path / "j")]) == 0
    assert "nothing to rename" in capsys.readouterr().err
    assert files_under(root) == before and not (tmp_path / "j").exists()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every folder and file under root, files with their bytes."""
    return {f.relative_to(root).as_posix(): (f.read_bytes() if f.is_file() else None)
            for f in root.rglob("*")}


def test_undo_restores_the_tree_exactly(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {
        f"labB/m2/2021-05-05/1/{FILE}": npy(2), f"release/labD/Subjects/s/2021-01-01/7/{FILE}":
        npy(3), f"s/2020-01-01/12/{FILE}": npy(4), "s/2020-01-01/12/notes.txt": b"x",
        f"s/2020-01-01/012/{FILE}": npy(5)})
    before = snapshot(root)
    journal = tmp_path / "journal.jsonl"
    assert main(["fix", str(root), "--lab", "mylab", "--apply", "--journal", str(journal)]) == 1
    assert snapshot(root) != before
    assert set(snapshot(root).values()) == set(before.values())  # the same files, moved
    assert main(["fix", str(root), "--undo", str(journal)]) == 0
    assert snapshot(root) == before


def test_undo_refuses_what_is_not_a_journal(tmp_path, capsys) -> None:
    (tmp_path / "j").write_text("{}\n")
    assert main(["fix", str(tmp_path), "--undo", str(tmp_path / "j")]) == 2
    assert "not a fastindex fix journal" in capsys.readouterr().err


# Random trees: the six layouts above, random spellings of numbers and of lab folders.
LABS = st.sampled_from(["lab/Subjects/", "labB/", "release_v1/labD/Subjects/", "",
                        "a/b/", "Subjects/"])
NUMBERS = st.sampled_from(["001", "1", "01", "002", "2", "12", "012", "0", "000"])
SESSIONS = st.tuples(LABS, st.sampled_from(["s1", "s.2-x"]),
                     st.sampled_from(["2020-01-01", "2021-12-31"]), NUMBERS)
NAMES = st.sampled_from([FILE, "alf/#v1#/_ibl_trials.choice.npy", "raw/x.y.npy",
                         "spikes.times.npy", "notes.txt"])


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(SESSIONS, NAMES), min_size=1, max_size=12), st.booleans(),
       st.sampled_from([0, 1, 2]), st.randoms(use_true_random=False))
def test_every_row_loads_on_random_trees(tmp_path_factory, caplog, two_workers, tree,
                                         inside_lab, named, rng) -> None:
    """``named``: no file carries its dataset's UUID (0), every file (1), every other
    file (2: the tree's naming is its majority's, the others are reported)."""
    base = tmp_path_factory.mktemp("random")
    paths = sorted({"".join([lab, subject, "/", date, "/", number, "/", name])
                    for (lab, subject, date, number), name in tree})
    files = {(add_uuid_string(path, str(uuid.UUID(int=rng.getrandbits(128), version=4)))
              .as_posix() if named and (named == 1 or i % 2) else path): os.urandom(8)
             for i, path in enumerate(paths)}
    root = base / ("labF/Subjects" if inside_lab else "tree")
    write_tree(root, files)
    result = fastindex.build(root, executor=two_workers)
    if named == 1 and result.n_datasets:  # the rows' ids are the ones in their names
        assert uuid_filenames(result.datasets_path.parent)
    caplog.clear()
    assert_every_row_loads(root, result, caplog)


def test_verify_reports_rows_of_one_apis_tables_that_one_cannot_load(tmp_path) -> None:
    import warnings

    from one.alf.cache import make_parquet_db as one_make_parquet_db

    from fastindex.verify import MISSING, SAME_PATH, verify

    root = write_tree(tmp_path / "t", {f"s/2020-01-01/1/{FILE}": npy(1),
                                       f"s/2020-01-01/2/{FILE}": npy(2),
                                       f"s/2020-01-01/002/{FILE}": npy(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_make_parquet_db(root, hash_ids=False)
    result = verify(root, workers=1)
    assert sorted(result.differences.select("kind", "path").rows()) == [
        (MISSING, f"s/2020-01-01/001/{FILE}"),  # ONE looks there; the file is in 1/
        (SAME_PATH, f"s/2020-01-01/002/{FILE}"),  # the 2 row loads 002's file
    ]


def test_files_named_with_their_dataset_uuid_load_by_name(tmp_path, caplog,
                                                         strict_warnings) -> None:
    """IBL's public bucket names files ``_ibl_trials.table.<uuid>.pqt``: the row's id is
    that UUID, its rel_path the name without it, and ONE with ``uuid_filenames`` (which
    the tables' ``one_metadata`` names) loads it by its name."""
    from one.api import One

    uid = "4a1ba1e8-5c5d-4b1e-8b4e-0d1b2e3f4a5b"
    ses = "cortexlab/Subjects/KS001/2020-01-01/001"
    root = write_tree(tmp_path / "t", {
        f"{ses}/alf/_ibl_trials.table.{uid}.npy": npy(3),
        f"{ses}/alf/_ibl_wheel.position.6a1ba1e8-5c5d-4b1e-8b4e-0d1b2e3f4a5b.npy": npy(3)})
    result = fastindex.build(root, workers=1)
    assert result.skipped.height == 0
    one = One(cache_dir=root, mode="local")
    one.uuid_filenames = True
    eid = one.search()[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        got = one.load_dataset(eid, "_ibl_trials.table.npy", collection="alf",
                               download_only=True)
    assert Path(got) == root / ses / "alf" / f"_ibl_trials.table.{uid}.npy"
    assert [r.getMessage() for r in caplog.records] == []
    assert_every_row_loads(root, result, caplog)

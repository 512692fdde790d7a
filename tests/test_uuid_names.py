"""Trees whose files carry their dataset's UUID (``_ibl_trials.table.<uuid>.pqt``), as
IBL's public bucket names them, held to ``One`` itself.

The tree is one-api's own IBL fixture tables (sessions and datasets of IBL, 693 rows)
rebuilt with one-api's own functions: each session where ``session_record2path`` puts
it, each file named by ``add_uuid_string`` with its real dataset id.  fastindex's rows
must carry those ids, and ``One`` with ``uuid_filenames`` must load them by name; a
bucket holding the tree must give the same tables.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import age_files, npy, write_tree

import fastindex
from fastindex import problems as p
from fastindex.cli import main
from fastindex.update import update
from fastindex.verify import MISSING, UNINDEXED, verify, verify_zip

FIXTURES = Path(__import__("one").__file__).parent / "tests" / "fixtures"
SES = "lab/Subjects/s/2020-01-01/001"


def ibl_fixture() -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """one-api's IBL fixture, read by ONE's own loader: each session's folder (as ONE
    rebuilds it) by eid, and (eid, rel_path, dataset id) of every dataset."""
    from one.alf.cache import load_tables
    from one.converters import session_record2path

    with warnings.catch_warnings():  # one-api's own, on pandas 3.1 (inplace=True)
        warnings.simplefilter("ignore")
        tables = load_tables(FIXTURES)
    folders = {str(eid): session_record2path(row.to_dict()).as_posix()
               for eid, row in tables["sessions"].iterrows()}
    rows = [(str(eid), rel, str(did)) for (eid, did), rel in
            tables["datasets"]["rel_path"].items()]
    return folders, rows


def ibl_tree(root: Path) -> tuple[Path, dict[str, str]]:
    """The fixture as a tree of files named with their ids (every ``.npy`` a real array
    of 4 rows, so that ONE loads whole objects): {on-disk path: dataset id}."""
    from one.alf.path import add_uuid_string

    folders, rows = ibl_fixture()
    named = {}
    for eid, rel, did in rows:
        path = add_uuid_string(f"{folders[eid]}/{rel}", did).as_posix()
        named[path] = did
    write_tree(root, {path: npy(4) if path.endswith(".npy") else os.urandom(16)
                      for path in named})
    return root, named


def _ids_by_file(tables: Path) -> dict[str, str]:
    """{session folder/rel_path: id} of a folder's tables, by ONE's own functions."""
    from one.converters import session_record2path

    sessions = pl.read_parquet(tables / "sessions.pqt")
    folders = {r["id"]: session_record2path(r).as_posix()
               for r in sessions.iter_rows(named=True)}
    datasets = pl.read_parquet(tables / "datasets.pqt")
    return {f"{folders[e]}/{rel}": did for e, rel, did in
            datasets.select("eid", "rel_path", "id").iter_rows()}


def test_the_ibl_fixture_as_a_tree_keeps_every_dataset_id_and_loads_by_name(
        tmp_path, caplog, strict_warnings) -> None:
    from one.alf.path import remove_uuid_string
    from one.api import One

    root, named = ibl_tree(tmp_path / "ibl")
    result = fastindex.build(root, workers=2)
    # the fixture gives one id to two files of a session (``alf/`` and ``alf/ks2/``
    # ``spikes.clusters.npy``): the duplicate case, from IBL's own tables
    twice = {path for path, did in named.items()
             if list(named.values()).count(did) == 2}
    assert len(named) == 693 and len(twice) == 2
    assert sorted(result.skipped.select("path", "reason").rows()) == sorted(
        (path, p.DUPLICATE_UUID) for path in twice)
    # every row's id is the fixture's, its rel_path the name without it
    expected = {remove_uuid_string(path).as_posix(): did
                for path, did in named.items() if path not in twice}
    assert _ids_by_file(root) == expected and result.n_datasets == 691
    meta = pq.read_schema(result.datasets_path).metadata
    assert json.loads(meta[b"one_metadata"])["uuid_filenames"] is True
    assert json.loads(meta[b"fastindex"])["uuid_filenames"] is True

    one = One(cache_dir=root, mode="local")
    one.uuid_filenames = True
    session = "cortexlab/Subjects/KS005/2019-04-04/004"  # the fixture's trials session
    eid = one.path2eid(root / session)
    trials = {path: did for path, did in named.items()
              if path.startswith(f"{session}/alf/_ibl_trials.")}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        got = one.load_dataset(eid, "_ibl_trials.repNum.npy", download_only=True)
        assert got.relative_to(root).as_posix() == next(
            path for path in trials if ".repNum." in path)
        loaded = one.load_object(eid, "trials", collection="alf")
    assert len(loaded) == len(trials) >= 10
    # ONE's keys keep the name's UUID (its own parsing, keep_uuid=uuid_filenames)
    assert sorted(loaded) == sorted(Path(path).name.removeprefix("_ibl_trials.")
                                    .removesuffix(".npy") for path in trials)
    assert all(np.array_equal(v, np.arange(4.0)) for v in loaded.values())
    assert [r.getMessage() for r in caplog.records] == []
    assert verify(root, workers=1).ok


def test_a_tree_named_so_verifies_updates_and_releases_under_its_names(tmp_path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    root = write_tree(tmp_path / "t", {f"{SES}/alf/_ibl_trials.a.{ids[0]}.npy": npy(2),
                                       f"{SES}/alf/_ibl_trials.b.{ids[1]}.npy": npy(3),
                                       f"{SES}/_ibl_wheel.position.{ids[2]}.npy": npy(4)})
    age_files(root)
    assert main(["build", str(root), "--hash", "md5", "--quiet"]) == 0
    assert verify(root, workers=1, hash=True).ok
    # a file's id and name change (a new version): update matches rows by the name on
    # disk, so the new file is hashed and the old row gone, never given the old digest
    old = root / SES / f"alf/_ibl_trials.a.{ids[0]}.npy"
    new_id = str(uuid.uuid4())
    old.rename(root / SES / f"alf/_ibl_trials.a.{new_id}.npy")
    (root / SES / f"alf/_ibl_trials.a.{new_id}.npy").write_bytes(npy(5))
    os.utime(root / SES / f"alf/_ibl_trials.a.{new_id}.npy", ns=(10**18, 10**18))
    differences = verify(root, workers=1).differences
    assert sorted(differences["kind"]) == [MISSING, UNINDEXED]
    done = update(root, workers=1)
    assert done.incremental and done.rehashed == 1 and done.reused == 2
    assert verify(root, workers=1, hash=True).ok
    rows = pl.read_parquet(root / "datasets.pqt")
    assert sorted(rows["id"]) == sorted([new_id, *ids[1:]])
    # the release's members are the files as named, and it verifies as a zip
    assert main(["release", str(root), str(tmp_path / "r.zip"), "--quiet"]) == 0
    import zipfile

    names = set(zipfile.ZipFile(tmp_path / "r.zip").namelist())
    assert f"{SES}/alf/_ibl_trials.a.{new_id}.npy" in names
    assert verify_zip(tmp_path / "r.zip", hash=True).ok


def test_keep_missing_refuses_rows_named_the_other_way(tmp_path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    files = {f"{SES}/alf/_ibl_trials.{a}.npy": npy(2) for a in "abc"}
    root = write_tree(tmp_path / "t", files)
    fastindex.build(root, workers=1)
    for (path, _), did in zip(files.items(), ids):
        (root / path).rename(root / path.replace(".npy", f".{did}.npy"))
    with pytest.raises(fastindex.InputError, match="now carry their dataset's UUID"):
        update(root, workers=1, keep_missing=True)
    update(root, workers=1)  # without it: the tree's rows, named as it names them
    assert sorted(pl.read_parquet(root / "datasets.pqt")["id"]) == sorted(ids)


def _reasons(root: Path) -> dict[str, str]:
    result = fastindex.build(root, workers=1)
    return dict(zip(result.skipped["path"], result.skipped["reason"]))


def test_files_that_do_not_follow_the_trees_naming_are_reported(tmp_path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    bad = {
        "plain": f"{SES}/alf/_ibl_trials.plain.npy",
        "upper": f"{SES}/alf/_ibl_trials.upper.{ids[0].upper()}.npy",
        "v1": f"{SES}/alf/_ibl_trials.v1.{uuid.uuid1()}.npy",
        "two": f"{SES}/alf/_ibl_trials.two.{uuid.uuid4()}.{ids[1]}.npy",
        "dup_a": f"{SES}/alf/_ibl_trials.x.{ids[2]}.npy",
        "dup_b": f"lab/Subjects/s/2020-01-02/001/alf/_ibl_trials.x.{ids[2]}.npy",
        "name_a": f"{SES}/_ibl_wheel.position.{ids[3]}.npy",
        "name_b": f"{SES}/_ibl_wheel.position.{uuid.uuid4()}.npy",
    }
    good = {f"{SES}/alf/_ibl_trials.g{i}.{uuid.uuid4()}.npy": npy(2) for i in range(10)}
    root = write_tree(tmp_path / "t", {**good, **{path: npy(1) for path in bad.values()}})
    assert _reasons(root) == {
        bad["plain"]: p.UUID_NAMES_MIXED, bad["upper"]: p.INVALID_UUID,
        bad["v1"]: p.INVALID_UUID, bad["two"]: p.INVALID_UUID,
        bad["dup_a"]: p.DUPLICATE_UUID, bad["dup_b"]: p.DUPLICATE_UUID,
        bad["name_a"]: p.DUPLICATE_NAME, bad["name_b"]: p.DUPLICATE_NAME}
    assert pl.read_parquet(root / "datasets.pqt").height == len(good)


def test_in_a_tree_of_plain_names_a_file_carrying_a_uuid_is_reported(tmp_path) -> None:
    named = f"{SES}/alf/_ibl_trials.table.{uuid.uuid4()}.npy"
    root = write_tree(tmp_path / "t", {named: npy(2), f"{SES}/alf/_ibl_trials.a.npy": npy(2),
                                       f"{SES}/alf/_ibl_trials.b.npy": npy(2)})
    assert _reasons(root) == {named: p.UUID_NAMES_MIXED}
    meta = pq.read_schema(root / "datasets.pqt").metadata
    assert "uuid_filenames" not in json.loads(meta[b"one_metadata"])
    assert "uuid_filenames" not in json.loads(meta[b"fastindex"])


def test_forged_uuid_flag_is_refused(tmp_path) -> None:
    root = write_tree(tmp_path / "t", {f"{SES}/alf/_ibl_trials.a.{uuid.uuid4()}.npy": npy(2)})
    fastindex.build(root, workers=1)
    table = pq.read_table(root / "datasets.pqt")
    meta = dict(table.schema.metadata)
    meta[b"fastindex"] = json.dumps({**json.loads(meta[b"fastindex"]),
                                     "uuid_filenames": "yes"}).encode()
    pq.write_table(table.replace_schema_metadata(meta), root / "datasets.pqt")
    assert main(["verify", str(root), "--quiet"]) == 2


# A bucket holding the tree gives the same tables as its local copy.
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def endpoint():
    from test_bucket import _moto

    with _moto() as url:
        yield url


@pytest.fixture
def credentials(monkeypatch):
    from test_bucket import CREDENTIALS

    from fastindex import s3client

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3client.forget_clients()


def test_a_bucket_of_the_ibl_fixture_and_its_local_copy_give_the_same_tables(
        tmp_path, endpoint, credentials) -> None:
    from test_bucket import _rows, _upload

    tree, _ = ibl_tree(tmp_path / "ibl")
    url = _upload(endpoint, "ibl-uuid-names", tree)
    local, remote = tmp_path / "local", tmp_path / "remote"
    for out, root, extra in ((local, tree, []), (remote, url, ["--endpoint-url", endpoint])):
        out.mkdir()
        assert main(["build", str(root), "--out", str(out), "--hash", "md5", "--quiet",
                     "--workers", "2", *extra]) == 0
    assert _rows(remote) == _rows(local)
    assert pl.read_parquet(remote / "datasets.pqt").height == 691
    for folder in (local, remote):
        meta = pq.read_schema(folder / "datasets.pqt").metadata
        assert json.loads(meta[b"one_metadata"])["uuid_filenames"] is True


def test_setup_opens_a_tree_of_uuid_names_with_ones_switch_on(tmp_path) -> None:
    """``fastindex.setup`` gives a ``One`` that finds such a tree's files by name."""
    named = "_ibl_trials.repNum.da32e4c9-e2f6-4380-b02a-17f9d2ef2ff4.npy"
    uuid_tree = write_tree(tmp_path / "u", {f"lab/Subjects/s/2021-01-01/001/alf/{named}":
                                            npy(3)})
    one = fastindex.setup(uuid_tree)
    assert one.uuid_filenames is True
    eid = one.search()[0]
    assert list(one.load_dataset(eid, "_ibl_trials.repNum.npy")) == [0, 1, 2]
    plain = write_tree(tmp_path / "p", ["lab/Subjects/s/2021-01-01/001/alf/a.b.npy"])
    assert fastindex.setup(plain).uuid_filenames is False

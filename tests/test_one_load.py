"""ONE's tables loaded by fastindex's fast path give ONE exactly what its own loader gives.

Every comparison is against one-api's own ``load_tables`` on the same folder, through
``One(mode='local')`` where the question is what a user gets: the frames
(``DataFrame.equals`` and ``assert_frame_equal`` with exact types), the index (its
levels, their order, codes, the types of their values), the columns' arrays (type,
writeable or not) and ``_meta``.  Which path was taken is read from the DEBUG record the
fast path writes when it hands over to ONE's loader.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import BEHAVIOUR, age_files, npy, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from one.alf import cache as one_cache

import fastindex
from fastindex.oneload import FastLoad, load_one_tables, restore_load, use_fast_load
from fastindex.treegen import make_tree
from fastindex.update import update

HANDED_OVER = "ONE's own load_tables"


def assert_same(fast, theirs) -> None:
    """Two results of ``load_tables`` are the same, to the types of the index values."""
    assert list(fast) == list(theirs)
    meta_fast, meta_theirs = dict(fast["_meta"]), dict(theirs["_meta"])
    assert (meta_fast.pop("loaded_time") is None) == (meta_theirs.pop("loaded_time") is None)
    assert meta_fast == meta_theirs
    for name in (k for k in fast if k != "_meta"):
        a, b = fast[name], theirs[name]
        assert a.equals(b), name
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_index_type=True,
                                      check_column_type=True, check_flags=True)
        assert a.attrs == b.attrs and list(a.dtypes) == list(b.dtypes)
        assert type(a.index) is type(b.index) and a.index.names == b.index.names
        if isinstance(a.index, pd.MultiIndex):
            for x, y in zip(a.index.levels, b.index.levels, strict=True):
                assert x.dtype == y.dtype and list(x) == list(y)
                assert [type(v) for v in x] == [type(v) for v in y]
            for x, y in zip(a.index.codes, b.index.codes, strict=True):
                assert x.dtype == y.dtype and (x == y).all()
        else:
            assert a.index.dtype == b.index.dtype
            assert [type(v) for v in a.index] == [type(v) for v in b.index]
        for column in a.columns:
            x, y = a[column].array, b[column].array
            assert type(x) is type(y), column
            assert _writeable(x) == _writeable(y), column


def _writeable(array) -> bool | None:
    data = getattr(array, "_ndarray", getattr(array, "_data", None))
    flags = getattr(data, "flags", None)
    return None if flags is None else flags.writeable


def loads(folder: Path, caplog) -> tuple[dict, dict, list[str]]:
    """The fast path's result, ONE's, and the reasons the fast path handed over."""
    with caplog.at_level(logging.DEBUG, logger="fastindex"):
        caplog.clear()
        fast = load_one_tables(folder)
        reasons = [r.getMessage() for r in caplog.records if HANDED_OVER in r.getMessage()]
    return fast, one_cache.load_tables(folder), reasons


@pytest.fixture
def installed():
    """The fast path installed for one test, and ONE's own loader put back after."""
    assert use_fast_load()
    yield
    restore_load()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A generated tree's tables by fastindex (uuid and string ids) and by one-api."""
    home = tmp_path_factory.mktemp("oneload")
    make_tree(home / "tree", files=600, shape="behaviour", seed=3)
    fastindex.build(home / "tree", home / "uuid")
    fastindex.build(home / "tree", home / "string", hash_ids=False)
    for kind, hash_ids in (("one-uuid", True), ("one-string", False)):
        (home / kind).mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one_cache.make_parquet_db(home / "tree", home / kind, hash_ids=hash_ids)
    return home


@pytest.mark.parametrize("kind, fast", [("uuid", True), ("one-uuid", True),
                                        ("string", False), ("one-string", False)])
def test_one_gets_the_frames_of_its_own_loader(built, kind, fast, caplog) -> None:
    """uuid ids (fastindex's, and one-api's, whose dataset ids repeat across sessions)
    take the fast path; string ids go to ONE's loader; both equal ONE's."""
    fast_result, theirs, reasons = loads(built / kind, caplog)
    assert_same(fast_result, theirs)
    assert len(fast_result["datasets"]) > 500
    assert isinstance(fast_result["datasets"].index[0][1], uuid.UUID if fast else str)
    assert (reasons == []) == fast, reasons


def test_one_built_with_the_fast_path_installed_is_ones(built, installed) -> None:
    from one.api import One

    ours = One(cache_dir=built / "uuid", mode="local")
    restore_load()
    theirs = One(cache_dir=built / "uuid", mode="local")
    assert_same(ours._cache, theirs._cache)


def test_rows_kept_for_missing_files_and_empty_tables(tmp_path, caplog) -> None:
    """``update --keep-missing`` rows (``exists`` False) take the fast path; tables
    without rows go to ONE's loader; both as ONE loads them."""
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    age_files(root)
    fastindex.build(root)
    (root / BEHAVIOUR[0]).unlink()
    update(root, keep_missing=True)
    fast, theirs, reasons = loads(root, caplog)
    assert_same(fast, theirs)
    assert reasons == [] and (~fast["datasets"]["exists"]).sum() == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    fastindex.build(empty, allow_shrink=True)
    fast, theirs, reasons = loads(empty, caplog)
    assert_same(fast, theirs)
    assert len(fast["datasets"]) == 0 and "no rows" in reasons[0]


def test_rows_in_any_order_take_the_fast_path(built, tmp_path, caplog) -> None:
    """fastindex writes rows in the order ONE sorts them to; shuffled rows are sorted
    as ONE sorts them (the frames' arrays then copies, as ONE's are)."""
    shutil.copytree(built / "uuid", tmp_path / "t")
    for name in ("sessions.pqt", "datasets.pqt"):
        _rewrite(tmp_path / "t" / name, lambda t: t.take(
            np.random.default_rng(0).permutation(t.num_rows)))
    fast, theirs, reasons = loads(tmp_path / "t", caplog)
    assert_same(fast, theirs)
    assert reasons == [] and len(fast["sessions"]) > 10


def test_one_apis_own_fixture_tables(tmp_path, caplog) -> None:
    """The tables one-api ships for its own tests load as ONE loads them."""
    fixtures = Path(one_cache.__file__).parent.parent / "tests" / "fixtures"
    if not (fixtures / "datasets.pqt").exists():
        pytest.skip("this one-api ships no fixture tables")
    for name in ("sessions.pqt", "datasets.pqt"):
        shutil.copy(fixtures / name, tmp_path / name)
    fast, theirs, _ = loads(tmp_path, caplog)
    assert_same(fast, theirs)
    assert len(fast["datasets"]) > 100


def _rewrite(path: Path, change) -> None:
    """A table written again with ``change(table)``, its schema metadata kept."""
    changed = change(pq.read_table(path))
    assert b"pandas" in changed.schema.metadata
    pq.write_table(changed, path)


def _ids(table: pa.Table, column: str, fn) -> pa.Table:
    ids = pa.array([fn(x) for x in table.column(column).to_pylist()], pa.large_string())
    return table.set_column(table.schema.get_field_index(column), column, ids)


def _one_metadata(table: pa.Table, **change) -> pa.Table:
    meta = dict(table.schema.metadata)
    one_meta = {**json.loads(meta[b"one_metadata"]), **change}
    meta[b"one_metadata"] = json.dumps({k: v for k, v in one_meta.items()
                                        if v is not None}).encode()
    return table.replace_schema_metadata(meta)


UPPER = {"datasets.pqt": lambda t: _ids(t, "id", str.upper)}
NULL_ID = {"datasets.pqt": lambda t: _ids(t, "id", lambda x: None if x.startswith("0")
                                          else x)}
REPEATED_SESSION = {"sessions.pqt": lambda t: pa.concat_tables([t, t.slice(0, 1)])}
UUID1 = {"sessions.pqt": lambda t: _ids(t, "id", lambda x: x[:14] + "1" + x[15:])}
NO_DATE = {"datasets.pqt": lambda t: _one_metadata(t, date_created=None)}


@pytest.mark.parametrize("change, reason", [
    (UPPER, "not lowercase uuid text"),
    (NULL_ID, "missing"),
    (REPEATED_SESSION, "repeated ids"),
    (UUID1, "no id ONE casts to a UUID"),
    (NO_DATE, "no date_created"),
])
def test_tables_of_another_shape_go_to_ones_loader(built, tmp_path, change, reason,
                                                   caplog) -> None:
    """Each shape the fast path was not checked on is handed to ONE's loader, with the
    reason, and ONE's answer (or ONE's error) is what the caller gets."""
    shutil.copytree(built / "uuid", tmp_path / "t")
    for name, fn in change.items():
        _rewrite(tmp_path / "t" / name, fn)
    with caplog.at_level(logging.DEBUG, logger="fastindex"):
        try:
            theirs = one_cache.load_tables(tmp_path / "t")
        except Exception as err:  # ONE's own error, which the fast path must raise too
            with pytest.raises(type(err), match=str(err)[:40].replace("(", ".")):
                load_one_tables(tmp_path / "t")
        else:
            assert_same(load_one_tables(tmp_path / "t"), theirs)
    assert any(HANDED_OVER in r.getMessage() and reason in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_folder_with_another_table_or_an_unreadable_one_goes_to_ones_loader(
        built, tmp_path, caplog) -> None:
    shutil.copytree(built / "uuid", tmp_path / "t")
    shutil.copy(tmp_path / "t" / "sessions.pqt", tmp_path / "t" / "subjects.pqt")
    fast, theirs, reasons = loads(tmp_path / "t", caplog)
    assert_same(fast, theirs)
    assert "subjects" in fast and "not a sessions or datasets table" in reasons[0]

    (tmp_path / "t" / "subjects.pqt").unlink()
    (tmp_path / "t" / "datasets.pqt").write_bytes(b"PAR1 not parquet")
    with pytest.raises(Exception) as theirs_err:
        one_cache.load_tables(tmp_path / "t")
    with caplog.at_level(logging.DEBUG, logger="fastindex"), \
            pytest.raises(theirs_err.type):
        load_one_tables(tmp_path / "t")


def test_an_unchecked_one_api_version_gets_ones_loader(built, caplog) -> None:
    """The version check: a one-api the fast path was not checked against gets its own
    loader, and ``use_fast_load`` replaces nothing."""
    import one.api

    slow = FastLoad(one_cache.load_tables, "2.0.0")
    with caplog.at_level(logging.DEBUG, logger="fastindex"):
        assert_same(slow(built / "uuid"), one_cache.load_tables(built / "uuid"))
    assert any("one-api 2.0.0 is not a checked version" in r.getMessage()
               for r in caplog.records)
    original = one.api.load_tables
    assert use_fast_load(one_version="2.0.0") is False
    assert one.api.load_tables is original and one_cache.load_tables is original


def test_installing_is_idempotent_and_reversible() -> None:
    import one.api

    original = one.api.load_tables
    assert not isinstance(original, FastLoad)
    assert use_fast_load() and use_fast_load()
    fast = one.api.load_tables
    assert isinstance(fast, FastLoad) and one_cache.load_tables is fast
    assert fast.original is original and fast.__wrapped__ is original
    restore_load()
    restore_load()
    assert one.api.load_tables is original and one_cache.load_tables is original


def test_use_fastindex_installs_the_fast_path(monkeypatch) -> None:
    import one.api

    monkeypatch.setattr(one.api, "make_parquet_db", one.api.make_parquet_db)  # restored after
    try:
        fastindex.use_fastindex()
        assert isinstance(one.api.load_tables, FastLoad)
    finally:
        restore_load()


def test_one_searches_lists_and_loads_with_the_fast_path(tmp_path, installed) -> None:
    from one.api import One

    files = {f: npy(5) for f in BEHAVIOUR}
    root = write_tree(tmp_path / "t", files)
    fastindex.build(root)
    one = One(cache_dir=root, mode="local")
    assert isinstance(one._cache["datasets"].index[0][0], uuid.UUID)
    eid = one.path2eid(root / "cortexlab/Subjects/KS001/2020-01-01/001")
    answers = (sorted(map(str, one.search(subject="KS*"))), sorted(one.list_datasets(eid)),
               one.load_dataset(eid, "_ibl_trials.choice.npy", collection="alf").tolist())
    restore_load()
    one = One(cache_dir=root, mode="local")
    assert answers == (sorted(map(str, one.search(subject="KS*"))),
                       sorted(one.list_datasets(eid)),
                       one.load_dataset(eid, "_ibl_trials.choice.npy",
                                        collection="alf").tolist())
    assert len(answers[0]) == 4 and len(answers[2]) == 5


# Random small tables written as one-api writes them (iblutil's parquet.save).
_hex_uuid = st.uuids(version=4).map(str)
_id = st.one_of(_hex_uuid, _hex_uuid.map(str.upper), st.uuids(version=1).map(str),
                st.sampled_from(["a/b/2020-01-01/001", "x"]))


@st.composite
def tables(draw):
    sessions = draw(st.lists(_hex_uuid, min_size=0, max_size=6, unique=True))
    if draw(st.booleans()) and sessions:
        sessions[draw(st.integers(0, len(sessions) - 1))] = draw(_id)
    rows = draw(st.lists(st.tuples(st.sampled_from(sessions or ["x"]), _hex_uuid),
                         max_size=12))
    if rows and draw(st.booleans()):
        rows.append(rows[0])  # a repeated (eid, id)
    return sessions, rows


@given(tables())
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_tables_load_the_same_both_ways(tmp_path_factory, drawn) -> None:
    from iblutil.io import parquet

    sessions, rows = drawn
    folder = tmp_path_factory.mktemp("random")
    meta = {"date_created": "2024-01-01 00:00", "origin": "random"}
    ses = pd.DataFrame({"id": sessions, "lab": "lab", "subject": "s",
                        "date": pd.Timestamp("2020-01-01").date(), "number": 1,
                        "task_protocol": "", "projects": ""}).astype(one_cache.SESSIONS_COLUMNS)
    dsets = pd.DataFrame({"eid": [e for e, _ in rows], "id": [i for _, i in rows],
                          "rel_path": "alf/a.b.npy", "file_size": 1, "hash": None,
                          "exists": True, "qc": "NOT_SET"}
                         ).astype(one_cache.DATASETS_COLUMNS)
    parquet.save(folder / "sessions.pqt", ses.set_index("id"), meta)
    parquet.save(folder / "datasets.pqt", dsets.set_index(["eid", "id"]), meta)
    try:
        theirs = one_cache.load_tables(folder)
    except Exception as err:
        with pytest.raises(type(err)):
            load_one_tables(folder)
    else:
        assert_same(load_one_tables(folder), theirs)

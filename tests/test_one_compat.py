"""The one-api edge: make_parquet_db's signature, setup without prompts, One.setup."""

from __future__ import annotations

import inspect
import multiprocessing
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
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
    monkeypatch.setattr(one.api, "load_tables", one.api.load_tables)
    monkeypatch.setattr(one_cache, "load_tables", one_cache.load_tables)
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.use_fastindex()
    one_ = one.api.One.setup(root, silent=True)
    assert _made_by_fastindex(root / "datasets.pqt")
    assert len(one_.search(subject="KS001")) == 3


UNGUARDED = """\
import multiprocessing, sys
multiprocessing.set_start_method({method!r})
import one.api  # starts threads
import polars  # and so does polars

import fastindex

print("the script ran", flush=True)
fastindex.use_fastindex()
one_ = one.api.One.setup({root!r}, silent=True)
assert len(one_.search(subject="KS001")) == 3
result = fastindex.build({root!r}, workers=2, start_method={method!r})
print("built", result.n_datasets, flush=True)
"""


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_a_script_without_a_main_guard_builds_once(tmp_path, method) -> None:
    """Workers never run the user's main module, whatever the start method."""
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    script = tmp_path / "analysis.py"
    script.write_text(UNGUARDED.format(method=method, root=str(root)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["the script ran", f"built {len(BEHAVIOUR)}"]
    assert _made_by_fastindex(root / "datasets.pqt")


def _pandas_view(path) -> tuple:
    frame = pd.read_parquet(path)
    return list(frame.index.names), list(frame.columns), dict(frame.dtypes.astype(str)), frame


@pytest.mark.parametrize("hash_ids", [True, False])
def test_pandas_reads_the_tables_as_one_apis(tmp_path, hash_ids) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    for name, make in (("one", one_cache.make_parquet_db), ("fi", fastindex.make_parquet_db)):
        (tmp_path / name).mkdir()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make(root, tmp_path / name, hash_ids=hash_ids)
    for table in ("sessions.pqt", "datasets.pqt"):
        theirs, ours = (_pandas_view(tmp_path / name / table) for name in ("one", "fi"))
        assert ours[0] == theirs[0]  # index names
        # documented differences: fastindex adds default_revision; hash is None, not ''
        extra = ["default_revision"] if table == "datasets.pqt" else []
        assert ours[1] == theirs[1] + extra
        differ = [*extra, "hash"]  # pandas reads fastindex's null-typed hash as object
        assert ({k: v for k, v in ours[2].items() if k not in differ}
                == {k: v for k, v in theirs[2].items() if k not in differ})
        if not hash_ids:  # string ids are the same in both: compare every value
            t, o = theirs[3], ours[3][theirs[1]]
            key = ["eid", "id"] if table == "datasets.pqt" else ["id"]
            t, o = (x.sort_values(key, ignore_index=True) for x in (t, o))
            if table == "datasets.pqt":
                assert (t.pop("hash") == "").all() and o.pop("hash").isna().all()
            pd.testing.assert_frame_equal(o, t)
    if not hash_ids:
        assert pd.read_parquet(tmp_path / "fi/sessions.pqt").loc[0, "subject"] == "KS001"


def test_a_lab_conflict_is_an_assertion_error_as_in_one_api(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    with pytest.raises(AssertionError, match="lab name conflict"):
        fastindex.make_parquet_db(root, lab="otherlab")


def readme_python_blocks() -> list[str]:
    """The README's ```python blocks (other fences, such as ```python dask-cluster,
    say what they need that this machine has not)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readmes_python_examples_run_as_written(tmp_path) -> None:
    from fastindex.treegen import make_tree

    blocks = readme_python_blocks()
    assert blocks, "the README has no runnable Python example"
    root = tmp_path / "release"
    make_tree(root, files=300, seed=3)
    for i, block in enumerate(blocks):
        script = tmp_path / f"readme_{i}.py"
        script.write_text(block.replace("/data/release", str(root)))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
        assert done.returncode == 0, f"README example {i}:\n{block}\n{done.stderr}"

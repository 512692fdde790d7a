"""The two table renames both happen, or the next writer finishes them, whatever lands
between them; and what an interrupted command says is what is on disk (issue 34)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile

import pyarrow.parquet as pq
import pytest
from conftest import BEHAVIOUR, write_tree

import fastindex
from fastindex.errors import Interrupted
from fastindex.provenance import render
from fastindex.release import Landed
from fastindex.spec import BuildSpec
from fastindex.store import TableStore


def _ids(folder) -> tuple:
    return tuple(json.loads(pq.read_schema(folder / name).metadata[b"fastindex"])["build_id"]
                 for name in ("sessions.pqt", "datasets.pqt"))


def _temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


@pytest.fixture
def built(tmp_path):
    """A tree with tables, and a new build of it rendered, ready to be swapped in."""
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    old = _ids(root)
    write_tree(root, {"lab/Subjects/s9/2021-01-01/001/alf/new.object.npy": b"x"})
    rendered = render(fastindex.check(root, workers=1), BuildSpec())
    return root, old, rendered


def test_ctrl_c_between_the_renames_lands_after_both(built) -> None:
    root, old, rendered = built

    def ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, whatever this process inherited: a shell starts a
    # background job with SIGINT ignored, and then no Ctrl-C reaches the test at all
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(Interrupted, match="the new tables are in"):
            TableStore(root, between_renames=ctrl_c).write_rendered(rendered, 0.0)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert _ids(root) == (rendered.build_id, rendered.build_id) != old
    assert _temporaries(root) == []


def test_a_failed_second_rename_is_finished_by_the_next_writer(built) -> None:
    root, old, rendered = built

    def in_the_way() -> None:  # the second rename will fail: a folder is at its target
        (root / "datasets.pqt").unlink()
        write_tree(root, {"datasets.pqt/x": b"x"})

    with pytest.raises(IsADirectoryError):
        TableStore(root, between_renames=in_the_way).write_rendered(rendered, 0.0)
    # the datasets temporary is kept: without it, the pair could never be finished
    assert _temporaries(root) == [f".datasets.pqt.{rendered.build_id}.tmp"]
    (root / "datasets.pqt" / "x").unlink()
    (root / "datasets.pqt").rmdir()
    with TableStore(root).lock():  # the next writer settles it
        pass
    assert _ids(root) == (rendered.build_id, rendered.build_id) != old
    assert _temporaries(root) == []


def test_sigterm_between_the_renames_kills_after_both(built) -> None:
    """SIGTERM's default action (no handler: the process dies) waits for the second
    rename too."""
    root, old, _ = built
    code = textwrap.dedent(f"""
        import os, signal
        import fastindex
        from fastindex.provenance import render
        from fastindex.spec import BuildSpec
        from fastindex.store import TableStore
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        rendered = render(fastindex.check({str(root)!r}, workers=1), BuildSpec())
        print(rendered.build_id, flush=True)
        store = TableStore(__import__("pathlib").Path({str(root)!r}),
                           between_renames=lambda: os.kill(os.getpid(), signal.SIGTERM))
        store.write_rendered(rendered, 0.0)
        print("not reached", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -signal.SIGTERM, done.stderr
    build_id, *rest = done.stdout.split()
    assert rest == []
    assert _ids(root) == (build_id, build_id) != old
    assert _temporaries(root) == []


def test_an_interrupted_release_says_what_is_on_disk(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    result = fastindex.release(root, tmp_path / "r.zip", workers=1)
    assert zipfile.ZipFile(result.path).namelist()
    store = TableStore(root)
    build_id = store.build_ids()[0]
    # interrupted after the zip's rename, before any note of it
    landed = Landed(result.path, store, build_id, os.stat(result.path))
    assert landed.say() == f"the release is complete: {result.path}"
    # after the tables' renames, before the zip's
    landed = Landed(result.path, store, build_id, os.stat(root / "sessions.pqt"))
    assert landed.say() == f"the tables in {root} are the release's; no zip was written"
    # before either
    assert Landed(result.path, store, "another").say() == (
        f"no zip was written and the tables in {root} are unchanged")

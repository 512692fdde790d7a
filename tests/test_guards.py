"""No tables lost without a word: a tree that could not be listed whole writes nothing,
tables are not emptied (or halved) unless the user says so, and a missing extra is one
line.  The bucket's side of these guards is in ``test_bucket.py``.

A folder that fails to list is a ``LocalRoot`` whose lister fails for one folder (a
root passed to the API, as any caller may), the way an NFS mount answers EIO.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, age_files, write_tree

from fastindex import problems as p
from fastindex.build import build, check
from fastindex.cli import main
from fastindex.errors import ListingFailed, ShrinkRefused
from fastindex.root import LocalRoot
from fastindex.update import update

SESSIONS = 5  # in BEHAVIOUR


class _FailingLister:
    """A folder lister that fails to list one folder (``OSError`` with ``code``), and
    lists every other as the lister it wraps."""

    def __init__(self, inner, failing: str, code: int) -> None:
        self._inner, self._failing, self._code = inner, failing, code

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._inner.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def entries(self, path: str, rel: str) -> list:
        if path == self._failing:
            raise OSError(self._code, os.strerror(self._code), path)
        return self._inner.entries(path, rel)


@dataclasses.dataclass(frozen=True)
class _FailingRoot(LocalRoot):
    """A folder whose ``fails`` (root-relative, '' the root) cannot be listed."""

    fails: str = ""
    code: int = errno.EIO

    def lister(self, io, descend, probe_path=None, stat_files=False):
        return _FailingLister(super().lister(io, descend, probe_path, stat_files),
                              self.join(self.fails), self.code)


def _tables(folder: Path) -> tuple[bytes, bytes]:
    return ((folder / "sessions.pqt").read_bytes(), (folder / "datasets.pqt").read_bytes())


@pytest.fixture
def built(tmp_path) -> tuple[Path, Path]:
    """A tree with good tables (hashed: update keeps digests) in a folder of their own."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    age_files(tree)
    out = tmp_path / "out"
    assert build(tree, out, hash="md5", workers=1).n_sessions == SESSIONS
    return tree, out


@pytest.mark.parametrize("fails", [
    "",  # the root: nothing would be indexed
    "cortexlab/Subjects",  # listed by the parent's walk: a lab's subjects
    "cortexlab/Subjects/KS001/2020-01-01",  # a date folder, listed by a worker
])
def test_a_folder_that_cannot_be_listed_writes_no_tables(built, fails) -> None:
    tree, out = built
    before = _tables(out)
    root = _FailingRoot(tree.resolve(), fails)
    where = str(tree.resolve() / fails) if fails else str(tree.resolve())
    run_on = {"workers": 1}  # a worker's batch runs here: its date folders, listed
    for run in (lambda: build(root, out, hash="md5", **run_on),
                lambda: build(root, out, allow_shrink=True, **run_on),
                lambda: update(root, out, **run_on),
                lambda: update(root, out, keep_missing=True, **run_on)):
        with pytest.raises(ListingFailed) as failed:
            run()
        message = str(failed.value)
        assert message.startswith(f"cannot list {where}: ") and "Input/output error" in message
        assert "nothing was written" in message and "no sessions" not in message
        assert failed.value.exit_code == 3
        assert _tables(out) == before
    # check writes no tables: it reports the folder, as any problem
    index = check(root, **run_on)
    assert (fails or ".", p.UNREADABLE) in [(r[0], r[1]) for r in index.skipped.iter_rows()]


def test_a_folder_without_read_permission_is_a_problem_not_a_failure(built) -> None:
    """Permissions are a fact of the tree, the same on every run: reported, the rest
    built (only a permission on the root itself fails the build)."""
    tree, out = built
    root = _FailingRoot(tree.resolve(), "hoferlab/Subjects", errno.EACCES)
    result = build(root, out, hash="md5", workers=1)
    assert result.n_sessions == SESSIONS - 1
    assert ("hoferlab/Subjects", p.UNREADABLE) in [
        (r[0], r[1]) for r in result.skipped.iter_rows()]
    with pytest.raises(ListingFailed, match="Permission denied"):
        build(_FailingRoot(tree.resolve(), "", errno.EACCES), out, workers=1)


def _release(tmp_path: Path) -> tuple[Path, Path]:
    """A tree published under ``release1`` (as in s3://lab-data/release1), and its
    tables, built from the right folder."""
    tree = write_tree(tmp_path / "lab-data" / "release1", BEHAVIOUR)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["build", str(tree), "--out", str(out), "--quiet"]) == 0
    return tree, out


@pytest.mark.parametrize("command", ["build", "update"])
def test_a_root_one_level_too_high_does_not_empty_the_tables(tmp_path, capsys,
                                                            command) -> None:
    tree, out = _release(tmp_path)
    before = _tables(out)
    capsys.readouterr()
    assert main([command, str(tree.parent), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"the tables in {out.resolve()} hold {SESSIONS} sessions" in err
    assert f"this {command} of {tree.parent} found 0" in err and "--allow-shrink" in err
    assert _tables(out) == before
    assert main([command, str(tree.parent), "--out", str(out), "--quiet",
                 "--allow-shrink"]) == 0
    assert pl.read_parquet(out / "sessions.pqt").height == 0


def test_losing_more_than_half_the_sessions_needs_the_users_word(tmp_path) -> None:
    tree, out = _release(tmp_path)
    subjects = tree / "cortexlab" / "Subjects"
    shutil.rmtree(subjects / "KS002")  # 4 of 5 sessions left: updated
    assert update(tree, out).build.n_sessions == SESSIONS - 1
    shutil.rmtree(subjects / "KS001" / "2020-01-01")  # 2 of 4 left: half is not fewer
    assert update(tree, out).build.n_sessions == SESSIONS - 3
    shutil.rmtree(subjects / "KS001")  # 1 of 2 left: still half
    shutil.rmtree(tree / "hoferlab")  # none: refused
    before = _tables(out)
    for run in (lambda: update(tree, out), lambda: build(tree, out)):
        with pytest.raises(ShrinkRefused, match="hold 2 sessions; this .* found 0"):
            run()
        assert _tables(out) == before
    assert update(tree, out, keep_missing=True).build.n_sessions == 2  # nothing lost
    assert build(tree, out, allow_shrink=True).n_sessions == 0
    assert build(tree / "cortexlab", out).n_sessions == 0  # no session to lose
    write_tree(tree, BEHAVIOUR)
    (out / "sessions.pqt").write_bytes(b"not parquet")  # protects nothing: rebuilt
    assert build(tree, out).n_sessions == SESSIONS


BLOCK_BOTO3 = ("import sys; sys.modules['boto3'] = sys.modules['botocore'] = None; "
               "from fastindex.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["build", "check", "update", "verify"])
def test_a_bucket_without_the_s3_extra_is_one_line(tmp_path, command) -> None:
    """Installed without ``fastindex[s3]`` (boto3 and botocore cannot be imported)."""
    args = [command, "s3://lab-data/release1", "--endpoint-url", "http://127.0.0.1:9"]
    if command in ("build", "update"):
        args += ["--out", str(tmp_path)]
    done = subprocess.run([sys.executable, "-c", BLOCK_BOTO3, *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("fastindex: error: indexing a bucket needs boto3: "
                           "pip install 'fastindex[s3]'\n")

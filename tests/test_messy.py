"""Messy trees and faults: every file indexed or reported, never a crash or a broken index."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, StaleScandir, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastindex
import fastindex.hashing
from fastindex import problems as p
from fastindex.cli import main

SES = "lab/Subjects/sub/2021-01-01/001"


def _reasons(result) -> dict[str, str]:
    return dict(zip(result.skipped["path"], result.skipped["reason"]))


def test_root_that_is_a_file_is_bad_input(tmp_path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["build", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "root is not a folder" in err and "Traceback" not in err


def test_symlinks_follow_the_documented_policy(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy",
                                       "elsewhere/probe/spikes.times.npy"])
    alf = root / SES / "alf"
    (alf / "linked.file.npy").symlink_to(alf / "trials.table.npy")
    (alf / "broken.link.npy").symlink_to(alf / "nothing.here.npy")
    (alf / "probe00").symlink_to(root / "elsewhere/probe")
    (alf / "loop").symlink_to(root / SES)
    result = fastindex.build(root, workers=1)
    reasons = _reasons(result)
    assert reasons[f"{SES}/alf/broken.link.npy"] == p.BROKEN_SYMLINK
    assert reasons[f"{SES}/alf/probe00"] == p.SYMLINK_DIR
    assert reasons[f"{SES}/alf/loop"] == p.SYMLINK_DIR
    assert result.n_datasets == 2  # the file and the link to it

    followed = fastindex.build(root, workers=1, follow_symlinks=True)
    assert _reasons(followed)[f"{SES}/alf/loop"] == p.SYMLINK_LOOP
    ds = pl.read_parquet(followed.datasets_path)
    assert "alf/probe00/spikes.times.npy" in ds["rel_path"].to_list()


def test_followed_links_report_loops_at_the_link_and_walk_shared_folders(tmp_path) -> None:
    """A loop is a link back to a folder the walk is inside, wherever it is (above the
    sessions or in them); a folder also linked from a sibling is walked from both,
    never reported in place of its own files, whatever order the folder lists in."""
    root = write_tree(tmp_path / "t", [f"{SES}/alf/probe00/spikes.times.npy"])
    alf = root / SES / "alf"
    (alf / "probe01").symlink_to(alf / "probe00")
    (alf / "again").symlink_to(alf)
    (root / "lab/Subjects/sub/alias").symlink_to(root / "lab/Subjects/sub")
    result = fastindex.build(root, workers=1, follow_symlinks=True)
    reasons = _reasons(result)
    assert reasons == {f"{SES}/alf/again": p.SYMLINK_LOOP,
                       "lab/Subjects/sub/alias": p.SYMLINK_LOOP}
    ds = pl.read_parquet(result.datasets_path)
    assert sorted(ds["rel_path"]) == ["alf/probe00/spikes.times.npy",
                                      "alf/probe01/spikes.times.npy"]


def test_odd_names_are_reported_and_the_report_parses(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy"])
    folder = os.fsencode(root / SES / "alf")
    for name in (b"bad\xff.name.npy", b"new\nline.x.npy", b"x" * 240 + b".a.npy"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"1")
    os.mkdir(os.path.join(folder, b"coll\xfe"))
    with open(os.path.join(folder, b"coll\xfe", b"spikes.times.npy"), "wb") as f:
        f.write(b"1")
    report = tmp_path / "r.json"
    assert main(["build", str(root), "--quiet", "--report", str(report)]) == 0
    rows = json.loads(report.read_text())["problems"]
    reasons = {r["path"].split("/alf/", 1)[1]: r["reason"] for r in rows}
    assert reasons == {"bad\\xff.name.npy": p.INVALID_ENCODING,
                       "new\nline.x.npy": p.NOT_ALF_NAME,
                       "coll\\xfe/spikes.times.npy": p.INVALID_ENCODING}
    assert len(rows) == 3  # the 246-character name is valid ALF, and indexed
    csv = tmp_path / "r.csv"
    assert main(["build", str(root), "--quiet", "--report", str(csv)]) == 0
    assert pl.read_csv(csv).height == 3


@pytest.mark.parametrize("folder", ["2021-02-30/001", "2020-13-01/001", "0000-01-01/001",
                                    "2021-01-01/0001"])
def test_impossible_dates_and_long_numbers_are_not_sessions(tmp_path, folder) -> None:
    root = write_tree(tmp_path / "t", [f"sub/{folder}/alf/trials.table.npy"])
    result = fastindex.build(root, workers=1)
    assert result.n_sessions == 0
    expected = p.OUTSIDE_SESSION if folder.endswith("0001") else p.IMPOSSIBLE_DATE
    assert list(_reasons(result).values()) == [expected]


def test_a_second_build_of_the_same_tables_is_refused(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    held = os.open(root, os.O_RDONLY)  # what a running build holds: its output folder
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["build", str(root), "--quiet"]) == 2
        assert "another fastindex build" in capsys.readouterr().err
        assert main(["update", str(root), "--quiet"]) == 2
    finally:
        os.close(held)
    assert main(["build", str(root), "--quiet"]) == 0
    assert main(["update", str(root), "--quiet"]) == 0
    assert sorted(f.name for f in root.iterdir() if f.is_file()) == [
        "datasets.pqt", "sessions.pqt"]  # no lock file left in the tree


def test_the_lock_file_where_folders_cannot_be_locked(tmp_path) -> None:
    from fastindex.store import _lock_file

    path = tmp_path / "lock"
    with _lock_file(path):
        assert path.exists()
        with pytest.raises(fastindex.InputError, match="another fastindex build"):
            with _lock_file(path):
                pass
    assert not path.exists()  # removed on release
    with _lock_file(path):  # and taken again
        assert path.exists()


def test_strict_and_check(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, f"{SES}/notes.txt"])
    assert main(["build", str(root), "--quiet"]) == 0
    assert main(["build", str(root), "--quiet", "--strict"]) == 1
    capsys.readouterr()
    assert main(["check", str(root), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"kind": "skipped", "path": f"{SES}/notes.txt",
                     "reason": p.NOT_ALF_NAME, "detail": ""}]
    (root / SES / "notes.txt").unlink()
    assert main(["check", str(root)]) == 0


def test_the_command_flushes_its_output_before_its_fast_exit(tmp_path) -> None:
    """``python -m fastindex`` leaves with ``os._exit``: piped output must still be whole."""
    names = [f"{SES}/alf/trials.table.npy"] + [f"{SES}/raw/note {i}.txt" for i in range(2000)]
    root = write_tree(tmp_path / "t", names)
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-m", "fastindex", "check", str(root)],
                          capture_output=True, text=True, env=buffered)
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) == 2000  # one print each: the last ones buffered
    assert "1 dataset, 2000 skipped" in done.stderr


def _processes_on(path: Path) -> list[int]:
    """Running processes whose command line names ``path`` (a build and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.fsencode(path) in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("io_threads", [0, 4])  # hashed in line, or on I/O threads
def test_files_that_vanish_or_change_while_read_are_reported(tmp_path, monkeypatch,
                                                             io_threads) -> None:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy", f"{SES}/alf/a.b.npy",
                                       f"{SES}/alf/c.d.npy"])
    monkeypatch.setattr(os, "scandir",
                        StaleScandir(os.scandir, root / SES / "alf/a.b.npy", Path.unlink))
    real_digest = fastindex.hashing.digest_file

    def grow_then_read(path, *args, **kwargs):
        if path.endswith("c.d.npy"):
            with open(path, "ab") as f:
                f.write(b"more")
        return real_digest(path, *args, **kwargs)

    monkeypatch.setattr(fastindex.hashing, "digest_file", grow_then_read)
    result = fastindex.build(root, workers=1, hash="md5", io_threads=io_threads)
    assert _reasons(result) == {f"{SES}/alf/a.b.npy": p.VANISHED,
                                f"{SES}/alf/c.d.npy": p.CHANGED}
    assert result.n_datasets == 1


def _die(*args):
    os._exit(1)


class _DyingWorkers(ProcessPoolExecutor):
    """Worker processes that die in the first task they run."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_die)


def test_a_killed_worker_fails_the_build_and_keeps_the_old_tables(tmp_path):
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    before = (root / "datasets.pqt").read_bytes()
    with _DyingWorkers(2, mp_context=multiprocessing.get_context("fork")) as pool:
        with pytest.raises(fastindex.FastindexError, match="worker process died"):
            fastindex.build(root, executor=pool)
    assert (root / "datasets.pqt").read_bytes() == before


#: ``fastindex build``, with every batch held in the workers until the build is stopped
#: from outside, so that a signal sent once they run always lands in the middle of it.
_STALLED_BUILD = """
import time
import fastindex.index as ix
def _stalled(*args):
    while True:
        time.sleep(1)
ix.BatchIndexer.index = _stalled
from fastindex.cli import run
run()
"""


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 130),
                                      (signal.SIGKILL, -signal.SIGKILL)])
def test_a_signal_leaves_the_old_tables(tmp_path, sig, code) -> None:
    from fastindex.treegen import make_tree

    root = tmp_path / "t"
    make_tree(root, files=1_000, seed=2)
    fastindex.build(root, workers=2)
    before = (root / "sessions.pqt").read_bytes(), (root / "datasets.pqt").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_BUILD, "build", str(root),
                             "--quiet", "--hash", "md5", "--workers", "2"],
                            stderr=subprocess.PIPE)
    # Signal once the workers run: earlier, Python is still importing, and an interrupt
    # there ends it the standard way (killed by SIGINT) before fastindex can answer.
    deadline = time.monotonic() + 60
    while len(_processes_on(root)) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == code, err
    if sig != signal.SIGKILL:  # after SIGKILL nothing can clean up; the renames still hold
        assert "interrupted" in err and "Traceback" not in err
        assert not list(root.glob(".*.tmp"))
    assert ((root / "sessions.pqt").read_bytes(), (root / "datasets.pqt").read_bytes()) == before
    deadline = time.monotonic() + 30  # workers of a killed build notice and exit
    while _processes_on(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_on(root) == []
    from one.api import One

    assert len(One(cache_dir=root, mode="local").search()) > 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop the power to read everything")
def test_unreadable_folders_and_unwritable_output(tmp_path) -> None:
    """As root without CAP_DAC_OVERRIDE, so permissions apply as to any user."""
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy",
                                       f"{SES}/secret/spikes.times.npy",
                                       "lab/Subjects/locked/2021-01-01/001/alf/a.b.npy"])
    (root / SES / "secret").chmod(0o000)
    (root / "lab/Subjects/locked").chmod(0o000)
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
           sys.executable, "-m", "fastindex", "build"]
    try:
        denied = subprocess.run([*cmd, str(root), "--out", str(out)], capture_output=True,
                                text=True)
        assert denied.returncode == 2 and "not writable" in denied.stderr
        assert "Traceback" not in denied.stderr and not list(out.iterdir())
        report = tmp_path / "report.json"
        ran = subprocess.run([*cmd, str(root), "--quiet", "--report", str(report)],
                             capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
    finally:
        (root / SES / "secret").chmod(0o755)
        (root / "lab/Subjects/locked").chmod(0o755)
    reasons = {r["path"]: r["reason"] for r in json.loads(report.read_text())["problems"]}
    assert reasons == {f"{SES}/secret": p.UNREADABLE, "lab/Subjects/locked": p.UNREADABLE}
    assert pl.read_parquet(root / "datasets.pqt").height == 1


name_bytes = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
alf_names = st.sampled_from([b"trials.table.npy", b"_ns_obj.attr_ts.x.npy", b"a.b"])
folders = st.sampled_from([b"alf", b"#v1#", b"probe00", b"my coll", b"\xff\xfe"])


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([b"lab/Subjects/s/2020-01-01/001", b"s/2020-01-01/2",
                                           b"s/2021-02-30/1", b"other"]),
                          st.lists(st.one_of(folders, name_bytes), max_size=2),
                          st.one_of(alf_names, name_bytes)), max_size=15))
def test_every_file_is_indexed_or_reported_never_both(tmp_path_factory, two_workers,
                                                      tree) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    written = set()
    for session, parts, name in tree:
        folder = os.path.join(os.fsencode(root), session, *parts)
        try:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, name)
            with open(path, "wb") as f:
                f.write(b"1")
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            continue
        written.add(os.path.relpath(path, os.fsencode(root)))
    written = {w for w in written if os.path.isfile(os.path.join(os.fsencode(root), w))}
    result = fastindex.build(root, executor=two_workers)
    ses = pl.read_parquet(result.sessions_path)
    ds = pl.read_parquet(result.datasets_path).join(
        ses.select(pl.col("id").alias("eid"), "subject", "date"), on="eid")
    indexed = len(ds)
    reported = set(result.skipped["path"])
    assert indexed + len(reported) + result.ignored == len(written)  # ._x: OS litter
    shown = {os.fsdecode(w).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
             for w in written}
    assert reported <= shown

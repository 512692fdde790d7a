"""Hostile input: names, links, ignore files, journals, tables and zips that someone else
controls (docs/THREAT-MODEL.md).  Each answer is a one-line refusal with a documented
exit code, or a reported problem; never a traceback, a hang, or a write outside the
root and the output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import BEHAVIOUR, StaleScandir, write_tree

import fastindex
from fastindex import hashing
from fastindex import problems as p
from fastindex.cli import main
from fastindex.errors import InputError
from fastindex.store import TableStore

SES = "lab/Subjects/sub/2021-01-01/001"


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """The command as a user runs it, in its own process (a hang fails, not blocks)."""
    return subprocess.run([sys.executable, "-m", "fastindex", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_line_refusal(done: subprocess.CompletedProcess, code: int = 2) -> str:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def _reasons(index) -> dict[str, str]:
    return dict(zip(index.skipped["path"], index.skipped["reason"]))


# Names ---------------------------------------------------------------------------------

def test_dates_in_other_scripts_digits_are_reported_not_a_crash(tmp_path) -> None:
    arabic = "\u0662\u0660\u0662\u0660-\u0660\u0661-\u0660\u0661"
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, f"lab/Subjects/sub/{arabic}/001/alf/a.b.npy"])
    index = fastindex.check(root, workers=1)
    assert _reasons(index) == {f"lab/Subjects/sub/{arabic}/001/alf/a.b.npy": p.OUTSIDE_SESSION}
    assert fastindex.build(root, workers=2).n_datasets == len(BEHAVIOUR)


def test_a_session_folder_that_is_not_utf8_is_invalid_encoding(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/a.b.npy"])
    bad = os.fsencode(root / "lab/Subjects") + b"/SW_\xff03/2021-01-01/001/alf"
    os.makedirs(bad)
    open(bad + b"/a.b.npy", "wb").close()
    index = fastindex.check(root, workers=1)
    assert list(index.skipped["reason"]) == [p.INVALID_ENCODING]
    assert "\\xff" in index.skipped["path"][0]


# Run options ---------------------------------------------------------------------------

def test_workers_and_threads_have_an_upper_limit(tmp_path) -> None:
    assert "from 1 to 256" in _one_line_refusal(_cli("check", str(tmp_path), "--workers",
                                                     "100000"))
    assert "from 0 to 1024" in _one_line_refusal(_cli("check", str(tmp_path), "--io-threads",
                                                      "5000"))
    assert "from 1 to 256" in _one_line_refusal(_cli("check", str(tmp_path), "--scheduler",
                                                     "local:100000"))
    with pytest.raises(InputError):
        fastindex.check(tmp_path, workers=10**6)


def test_a_bogus_scheduler_is_one_line(tmp_path) -> None:
    pytest.importorskip("distributed")
    assert "cannot reach the Dask scheduler" in _one_line_refusal(
        _cli("check", str(tmp_path), "--scheduler", "bogus"))


# .fastindexignore ----------------------------------------------------------------------

def test_an_ignore_file_that_is_a_link_is_refused_not_read(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    secret = tmp_path / "secret"
    secret.write_text("password-hunter2\n")
    (root / ".fastindexignore").symlink_to(secret)
    assert "is a link" in _one_line_refusal(_cli("build", str(root), "--quiet"))
    assert not (root / "datasets.pqt").exists()


def test_an_ignore_file_that_is_a_fifo_or_huge_is_refused_without_hanging(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    os.mkfifo(root / ".fastindexignore")
    assert "not a regular file" in _one_line_refusal(_cli("check", str(root), timeout=60))
    os.unlink(root / ".fastindexignore")
    with open(root / ".fastindexignore", "wb") as f:
        f.truncate(64 << 20)  # sparse: no disk space
    assert "larger than" in _one_line_refusal(_cli("check", str(root), timeout=60))


def test_a_byte_order_mark_does_not_disable_the_first_rule(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, "notes.txt"])
    (root / ".fastindexignore").write_bytes(b"\xef\xbb\xbfnotes.txt\n")
    index = fastindex.check(root, workers=1)
    assert index.skipped.height == 0 and index.ignored == 1


# Links ---------------------------------------------------------------------------------

def test_links_to_outside_the_root_are_listed_and_never_released_unasked(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$secret\n")
    (root / SES / "alf").mkdir(parents=True)
    (root / SES / "alf/_ibl_secret.table.npy").symlink_to(secret)
    inside = root / SES / "alf/_ibl_inside.table.npy"
    inside.symlink_to(root / BEHAVIOUR[0])  # a link within the root is fine
    index = fastindex.check(root, workers=1)
    assert [(w.path, w.reason) for w in index.warnings] == [
        (f"{SES}/alf/_ibl_secret.table.npy", p.LINK_OUTSIDE_ROOT)]
    assert str(secret) in index.warnings[0].detail
    checked = _cli("check", str(root))
    assert checked.returncode == 1 and p.LINK_OUTSIDE_ROOT in checked.stdout
    built = fastindex.build(root, workers=2)  # indexed, as one-api would, and said
    assert built.n_datasets == len(BEHAVIOUR) + 2 and len(built.warnings) == 1
    out = tmp_path / "r.zip"
    refused = _cli("release", str(root), str(out), "--allow-skipped")
    assert refused.returncode == 1 and "--allow-outside-links" in refused.stderr
    assert not out.exists()
    assert _cli("release", str(root), str(out), "--allow-outside-links").returncode == 0
    with zipfile.ZipFile(out) as z:
        assert z.read(f"{SES}/alf/_ibl_secret.table.npy") == secret.read_bytes()


# Files swapped or rewritten while they are read ----------------------------------------

def _swap_for_fifo(victim: Path) -> None:
    victim.unlink()
    os.mkfifo(victim)


@pytest.mark.parametrize("io_threads", [0, 4])
def test_a_file_swapped_for_a_fifo_is_reported_not_waited_for(tmp_path, monkeypatch,
                                                              io_threads) -> None:
    root = write_tree(tmp_path / "t", {f"{SES}/alf/a.b.npy": b"x" * 10,
                                       f"{SES}/alf/c.d.npy": b"y" * 10})
    monkeypatch.setattr(os, "scandir", StaleScandir(
        os.scandir, root / SES / "alf/a.b.npy", _swap_for_fifo))
    result = fastindex.build(root, workers=1, hash="md5", io_threads=io_threads)
    assert _reasons(result) == {f"{SES}/alf/a.b.npy": p.NOT_REGULAR}
    assert result.n_datasets == 1


@pytest.mark.parametrize("io_threads", [0, 4])
def test_a_file_rewritten_in_place_while_hashed_is_changed(tmp_path, monkeypatch,
                                                           io_threads) -> None:
    root = write_tree(tmp_path / "t", {f"{SES}/alf/a.b.npy": b"x" * 10,
                                       f"{SES}/alf/c.d.npy": b"y" * 10})
    real = hashing.digest_stream

    def rewritten_meanwhile(source, *args, **kwargs):
        result = real(source, *args, **kwargs)
        if os.readlink(f"/proc/self/fd/{source.fileno()}").endswith("c.d.npy"):
            os.utime(source.fileno(), ns=(1, 2))  # same size, another version
        return result

    monkeypatch.setattr(hashing, "digest_stream", rewritten_meanwhile)
    result = fastindex.build(root, workers=1, hash="md5", io_threads=io_threads)
    assert _reasons(result) == {f"{SES}/alf/c.d.npy": p.CHANGED}


# Temporary files and half-done swaps ---------------------------------------------------

def test_outputs_replace_planted_links_and_never_write_through_them(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, "notes.txt"])
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in ("sessions.pqt", "datasets.pqt", "report.json", "r.zip"):
        (root / name if name.endswith(".pqt") else tmp_path / name).symlink_to(victim)
    assert main(["build", str(root), "--quiet", "--report", str(tmp_path / "report.json")]) == 0
    assert main(["release", str(root), str(tmp_path / "r.zip"), "--allow-skipped",
                 "--quiet"]) == 0
    assert victim.read_text() == "precious\n"
    for path in (root / "sessions.pqt", root / "datasets.pqt", tmp_path / "report.json",
                 tmp_path / "r.zip"):
        assert path.is_file() and not path.is_symlink()


def _build_id(path: Path) -> str:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"fastindex"])["build_id"]


def test_a_half_done_table_swap_is_finished_by_the_next_writer(tmp_path) -> None:
    """Killed between the two renames: the new sessions table beside the old datasets
    table and the new one's temporary file."""
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    newer = tmp_path / "newer"
    fastindex.build(root, newer, workers=1, hash="md5")
    new_id = _build_id(newer / "sessions.pqt")
    shutil.copy(newer / "sessions.pqt", root / "sessions.pqt")
    shutil.copy(newer / "datasets.pqt", root / f".datasets.pqt.{new_id}.tmp")
    (root / ".sessions.pqt.0123-junk.tmp").write_bytes(b"half")  # an older leftover
    index = fastindex.check(root, workers=1)  # leftovers are not reported
    assert index.skipped.height == 0
    with TableStore(root).lock():
        pass
    assert sorted(f.name for f in root.iterdir() if f.name.startswith(".")) == []
    assert _build_id(root / "datasets.pqt") == new_id
    assert (root / "datasets.pqt").read_bytes() == (newer / "datasets.pqt").read_bytes()


def test_leftovers_of_a_build_killed_before_its_renames_are_removed(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    before = (root / "datasets.pqt").read_bytes()
    for name in (".sessions.pqt.1111.tmp", ".datasets.pqt.1111.tmp"):
        (root / name).write_bytes(b"partial")
    assert main(["build", str(root), "--quiet", "--strict"]) == 0  # not outside_session
    assert not list(root.glob(".*.tmp"))
    assert (root / "datasets.pqt").read_bytes() != before  # a fresh pair
    assert _build_id(root / "sessions.pqt") == _build_id(root / "datasets.pqt")


# fix and its journal -------------------------------------------------------------------

def test_fix_never_renames_a_folder_by_parts_read_out_of_its_name(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", ["ibl-cortex/Subjects/sub/2021-01-01/1/alf/a.b.npy",
                                       "mylab/Subjects/x y/2021-01-01/1/alf/a.b.npy"])
    bad = os.fsencode(root / "mylab/Subjects") + b"/SW_\xff03/2021-01-01/001/alf"
    os.makedirs(bad)
    open(bad + b"/a.b.npy", "wb").close()
    from fastindex import fix

    plan = fix.plan(root)
    assert plan.renames == []
    assert sorted(folder for folder, _ in plan.refused) == [
        "ibl-cortex/Subjects/sub/2021-01-01/1", "mylab/Subjects/x y/2021-01-01/1"]
    assert all("rename it by hand" in why for _, why in plan.refused)
    assert main(["fix", str(root), "--apply", "--journal", str(tmp_path / "j")]) == 1
    assert (root / "ibl-cortex").is_dir() and not (root / "cortex").exists()
    assert os.path.isdir(bad)


def _journal(root: Path, *steps, header_root=None) -> str:
    lines = [{"format": "fastindex-fix/1", "root": str(header_root or root)}, *steps]
    return "".join(json.dumps(x) + "\n" for x in lines)


@pytest.mark.parametrize("steps,header_root,why", [
    ([], "/", "records renames under"),
    ([{"rename": ["../outside", "a"]}], None, "not a folder path inside"),
    ([{"rename": ["/etc", "a"]}], None, "not a folder path inside"),
    ([{"rename": ["a", "b/../../x"]}], None, "not a folder path inside"),
    ([{"mkdir": "/tmp"}], None, "not a folder path inside"),
    ([{"mkdir": 7}], None, "not a folder path inside"),
    ([{"rm": "x"}], None, "not a step"),
    ([["rename", "a", "b"]], None, "not a step"),
    ([{"rename": ["link/x", "a"]}], None, "not a folder path inside"),
])
def test_undo_refuses_journals_that_reach_outside_the_root(tmp_path, steps, header_root,
                                                            why) -> None:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/a.b.npy"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (outside / "x").mkdir()
    journal = tmp_path / "j.jsonl"
    journal.write_text(_journal(root, *steps, header_root=header_root))
    line = _one_line_refusal(_cli("fix", str(root), "--undo", str(journal)))
    assert why in line
    assert (outside / "x").is_dir()


@pytest.mark.parametrize("text", ["", "not json\n", "[]\n", "{\"format\": 1}\n",
                                  "\xff\xfe\n"])
def test_undo_refuses_what_is_not_a_journal_in_one_line(tmp_path, text) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff\xfe\n"
                        else b"\xff\xfe\n")
    _one_line_refusal(_cli("fix", str(tmp_path), "--undo", str(journal)))


def test_undo_leaves_out_a_last_line_cut_short(tmp_path) -> None:
    root = write_tree(tmp_path / "t", ["s/2020-01-01/1/alf/a.b.npy"])
    from fastindex import fix

    plan = fix.plan(root)
    journal = tmp_path / "j.jsonl"
    assert fix.apply(plan, journal) == 1
    with open(journal, "a") as f:
        f.write('{"rename": ["s/2020-01-01/0')  # the disk filled up here
    assert main(["fix", str(root), "--undo", str(journal)]) == 0
    assert (root / "s/2020-01-01/1/alf/a.b.npy").is_file()


def test_undo_does_not_follow_a_journal_link(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/a.b.npy"])
    real = tmp_path / "real.jsonl"
    real.write_text(_journal(root))
    (tmp_path / "j.jsonl").symlink_to(real)
    assert "is a link" in _one_line_refusal(_cli("fix", str(root), "--undo",
                                                 str(tmp_path / "j.jsonl")))


def test_fix_takes_the_build_lock(tmp_path) -> None:
    root = write_tree(tmp_path / "t", ["s/2020-01-01/1/alf/a.b.npy"])
    with TableStore(root).lock():
        line = _one_line_refusal(_cli("fix", str(root), "--apply", "--journal",
                                      str(tmp_path / "j.jsonl")))
    assert "another fastindex build" in line
    assert (root / "s/2020-01-01/1").is_dir()

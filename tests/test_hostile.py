"""Hostile input: names, links, ignore files, journals, tables and zips that someone else
controls (docs/THREAT-MODEL.md).  Each answer is a one-line refusal with a documented
exit code, or a reported problem; never a traceback, a hang, or a write outside the
root and the output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
from conftest import BEHAVIOUR, StaleScandir, age_files, write_tree
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import fastindex
from fastindex import hashing
from fastindex import problems as p
from fastindex.cli import main
from fastindex.errors import InputError
from fastindex.store import TableStore
from fastindex.verify import verify

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


def test_a_killed_releases_temporary_zip_is_removed_by_the_next_and_a_live_one_kept(
        tmp_path) -> None:
    import fcntl

    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy"])
    zip_path = tmp_path / "r.zip"
    killed = tmp_path / ".r.zip.k1ll3d00.tmp"
    killed.write_bytes(b"a full-size zip, cut short")
    live = tmp_path / ".r.zip.l1ve0000.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / ".other.zip.k1ll3d00.tmp"
    other.write_bytes(b"not this release's")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["release", str(root), str(zip_path), "--quiet", "--workers", "1"]) == 0
    assert not killed.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".other.zip.k1ll3d00.tmp", ".r.zip.l1ve0000.tmp", "r.zip", "t"])


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


# Old tables ----------------------------------------------------------------------------

def _hashed_tables(tmp_path: Path) -> tuple[Path, Path]:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy",
                                       f"{SES}/alf/spikes.times.npy"])
    out = tmp_path / "out"
    out.mkdir()
    assert main(["build", str(root), "--out", str(out), "--hash", "xxh3+md5", "--quiet",
                 "--workers", "1"]) == 0
    return root, out


def _forge(path: Path, change) -> None:
    """Rewrite a table with ``change(table)``, keeping its metadata (its provenance)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def _set(column: str, value, table_type=None):
    import pyarrow as pa

    def change(table):
        values = [value] + table.column(column).to_pylist()[1:]
        i = table.column_names.index(column)
        return table.set_column(i, column, pa.array(values, table_type or
                                                    table.schema.field(column).type))
    return change


FORGED = [
    ("datasets.pqt", _set("hash", "not-an-md5"), "datasets.hash 'not-an-md5' is not a digest"),
    ("datasets.pqt", _set("xxh3", "0123"), "datasets.xxh3 '0123' is not a digest"),
    ("datasets.pqt", lambda t: t.drop_columns(["hash"]).append_column(
        "hash", __import__("pyarrow").array(range(t.num_rows))), "datasets.hash is Int64"),
    ("datasets.pqt", _set("rel_path", "../../../../etc/passwd"),
     "datasets.rel_path '../../../../etc/passwd' is not an ALF path"),
    ("datasets.pqt", _set("eid", "an-unknown-session"), "is not a session id"),
    ("datasets.pqt", _set("file_size", None), "datasets.file_size has empty values"),
    ("sessions.pqt", _set("subject", ".."), "sessions.subject '..' is not an ALF subject"),
    ("sessions.pqt", _set("lab", "a/b"), "sessions.lab 'a/b' is not an ALF lab"),
    ("sessions.pqt", _set("number", 5000), "sessions.number 5000 is not a session number"),
    ("datasets.pqt", lambda t: t.append_column("etag", __import__("pyarrow").array(
        ["\x1b[2J" + "x" * 300] * t.num_rows)), "datasets.etag '\\x1b[2Jxxx"),
    ("datasets.pqt", lambda t: t.append_column("etag", __import__("pyarrow").array(
        range(t.num_rows))), "datasets.etag is Int64"),
]


@pytest.mark.parametrize("table,change,why", FORGED)
@pytest.mark.parametrize("command", [["update", "--keep-missing"], ["verify", "--hash"]])
def test_forged_old_tables_are_refused_and_left_as_they_are(tmp_path, table, change, why,
                                                            command) -> None:
    root, out = _hashed_tables(tmp_path)
    _forge(out / table, change)
    before = {name: (out / name).read_bytes() for name in ("sessions.pqt", "datasets.pqt")}
    flag = "--out" if command[0] == "update" else "--tables"
    line = _one_line_refusal(_cli(command[0], str(root), flag, str(out), *command[1:]))
    assert why in line and str(out) in line
    assert {name: (out / name).read_bytes() for name in before} == before


def test_one_apis_own_tables_pass_the_checks(tmp_path) -> None:
    """The checks hold fastindex's tables to ONE's forms, not to fastindex's layout:
    one-api's make_parquet_db output is accepted (update --force rebuilds it)."""
    from one.alf.cache import make_parquet_db

    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy"])
    make_parquet_db(root, hash_ids=True, hash_files=True)
    assert verify(root, hash=True).ok
    assert main(["update", str(root), "--force", "--quiet", "--workers", "1"]) == 0


@pytest.mark.parametrize("command", ["update", "verify"])
def test_a_recorded_follow_symlinks_is_obeyed_only_when_the_user_gives_it(tmp_path,
                                                                        command) -> None:
    """Forged provenance must not make update or verify read through links: the
    option is the user's to give."""
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy"])
    outside = write_tree(tmp_path / "secret", ["probe/spikes.times.npy"])
    (root / SES / "alf" / "probe00").symlink_to(outside / "probe")
    assert main(["build", str(root), "--hash", "md5", "--quiet", "--workers", "1"]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(root / "datasets.pqt")
    provenance = json.loads(table.schema.metadata[b"fastindex"])
    provenance["options"]["follow_symlinks"] = True
    pq.write_table(table.replace_schema_metadata({
        **table.schema.metadata, b"fastindex": json.dumps(provenance).encode()}),
        root / "datasets.pqt")
    line = _one_line_refusal(_cli(command, str(root)))
    assert f"{command} --follow-symlinks" in line
    assert _cli(command, str(root), "--follow-symlinks", "--quiet").returncode in (0, 1)


# Zips ----------------------------------------------------------------------------------

@pytest.fixture
def release(tmp_path) -> Path:
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy",
                                       f"{SES}/alf/spikes.times.npy"])
    (root / "README.md").write_text("read me\n")
    zip_path = tmp_path / "r.zip"
    assert main(["release", str(root), str(zip_path), "--hash", "md5", "--quiet",
                 "--include", str(root / "README.md"), "--workers", "1"]) == 0
    assert main(["verify", str(zip_path), "--hash", "--quiet"]) == 0  # README is expected
    return zip_path


def _rezip(source: Path, target: Path, add=(), replace=None) -> Path:
    """A copy of a zip's members (``replace``: name -> new bytes), then ``add``:
    (ZipInfo or name, bytes) pairs."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = (replace or {}).get(info.filename) or old.read(info)
            new.writestr(info, data)
        for info, data in add:
            new.writestr(info, data)
    return target


def _link_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    return info


@pytest.mark.parametrize("name,why", [
    ("../escape.txt", "not a safe relative path"),
    ("/etc/cron.d/x", "not a safe relative path"),
    (f"{SES}/alf/../../../../../x", "not a safe relative path"),
    ("C:/x", "not a safe relative path"),
    (_link_entry(f"{SES}/alf/link.x.npy"), "is a link"),
    ("README.md", "appears twice"),
])
def test_verify_refuses_a_zip_that_could_write_outside_its_folder(tmp_path, release, name,
                                                                 why) -> None:
    with pytest.warns(UserWarning) if name == "README.md" else contextlib.nullcontext():
        crafted = _rezip(release, tmp_path / "c.zip", add=[(name, b"x")])
    assert why in _one_line_refusal(_cli("verify", str(crafted)))


def test_verify_reports_members_no_row_describes(tmp_path, release, capsys) -> None:
    crafted = _rezip(release, tmp_path / "c.zip",
                     add=[(f"{SES}/alf/planted.thing.npy", b"x"), ("run-me.sh", b"!")])
    report = tmp_path / "v.json"
    assert main(["verify", str(crafted), "--report", str(report), "--quiet"]) == 1
    found = {(r["kind"], r["path"]) for r in json.loads(report.read_text())["differences"]}
    assert found == {("unexpected_member", f"{SES}/alf/planted.thing.npy"),
                     ("unexpected_member", "run-me.sh")}


def test_verify_refuses_tables_in_a_zip_whose_rows_climb_out(tmp_path, release) -> None:
    import pyarrow.parquet as pq

    with zipfile.ZipFile(release) as z:
        (tmp_path / "d.pqt").write_bytes(z.read("datasets.pqt"))
    _forge(tmp_path / "d.pqt", _set("rel_path", "../../../../etc/passwd"))
    assert pq.read_table(tmp_path / "d.pqt").num_rows == 2
    crafted = _rezip(release, tmp_path / "c.zip",
                     replace={"datasets.pqt": (tmp_path / "d.pqt").read_bytes()})
    assert "is not an ALF path" in _one_line_refusal(_cli("verify", str(crafted)))


def test_a_table_member_that_inflates_is_refused_in_bounded_memory(tmp_path, release) -> None:
    """A 64 MiB member that deflates to a few kB: refused after reading a bound set by
    its compressed size, never inflated whole."""
    crafted = tmp_path / "c.zip"
    with zipfile.ZipFile(release) as old, zipfile.ZipFile(crafted, "w") as new:
        for info in old.infolist():
            if info.filename == "datasets.pqt":
                new.writestr("datasets.pqt", bytes(64 << 20), zipfile.ZIP_DEFLATED)
            else:
                new.writestr(info, old.read(info))
    assert crafted.stat().st_size < 1 << 20
    assert "inflates to more than" in _one_line_refusal(_cli("verify", str(crafted)))


# Fuzzing the untrusted formats ---------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(["", ".", "..", "../x", "/etc/passwd", "a/../../b", "a\x00b",
                                "٢٠٢٠-٠١-٠١", "alf/trials.table.npy", "0" * 32, "F" * 16,
                                "a" * 300, "C:/x", "#1#/a.b.npy", "lab/Subjects"]) | st.text(
    max_size=12)
HOSTILE_VALUES = HOSTILE_TEXT | st.integers(-2**63, 2**64 - 1) | st.none() | st.booleans()
COLUMNS = {"sessions.pqt": ["id", "lab", "subject", "date", "number"],
           "datasets.pqt": ["eid", "id", "rel_path", "file_size", "hash", "xxh3", "exists",
                            "mtime_ns"]}


@pytest.fixture(scope="module")
def built_once(tmp_path_factory) -> tuple[Path, Path]:
    root, out = _hashed_tables(tmp_path_factory.mktemp("built"))
    age_files(root)
    return root, out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(COLUMNS)), st.data(), HOSTILE_VALUES, st.booleans())
def test_fuzzed_old_tables_are_refused_or_checked_never_a_crash(tmp_path_factory, built_once,
                                                                table, data, value,
                                                                keep_type) -> None:
    """Any value in any column: update refuses in one line (exit 2) or writes tables
    that pass every check; the tree is never touched."""
    import pyarrow as pa

    root, built = built_once
    column = data.draw(st.sampled_from(COLUMNS[table]))
    out = tmp_path_factory.mktemp("out")
    for name in ("sessions.pqt", "datasets.pqt"):
        shutil.copy(built / name, out / name)
    try:
        _forge(out / table, _set(column, value) if keep_type else _set(column, value,
                                                                      pa.infer_type([value])))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        assume(False)  # no table can hold it
    tree = _files(root)
    code = main(["update", str(root), "--out", str(out), "--keep-missing", "--quiet",
                 "--workers", "1"])
    event(f"update exit {code}")
    assert code in (0, 2)
    if code == 0:
        TableStore(out).read()  # every value that reached the new tables is checked
    assert _files(root) == tree


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(HOSTILE_TEXT, st.binary(max_size=64), st.booleans()), max_size=3),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
       st.booleans())
def test_fuzzed_zips_are_refused_or_verified_never_a_crash(tmp_path_factory, members,
                                                           flips, hash_too) -> None:
    """Crafted members (names, links), and bytes changed anywhere in the zip (its
    central directory, headers, tables, data): exit 0, 1 or 2, nothing written."""
    tmp = tmp_path_factory.mktemp("zip")
    root = write_tree(tmp / "t", [f"{SES}/alf/trials.table.npy"])
    release = tmp / "r.zip"
    assert main(["release", str(root), str(release), "--hash", "md5", "--quiet",
                 "--workers", "1"]) == 0
    crafted = tmp / "c.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        try:
            _rezip(release, crafted, add=[(_link_entry(name) if link else name, data)
                                          for name, data, link in members if name])
        except (IndexError, ValueError):  # a name zipfile itself cannot write ('/')
            assume(False)
    data = bytearray(crafted.read_bytes())
    for where, byte in flips:
        data[where % len(data)] = byte
    crafted.write_bytes(data)
    before = _files(tmp)
    code = main(["verify", str(crafted), "--quiet", *(["--hash"] if hash_too else [])])
    event(f"verify exit {code}")
    assert code in (0, 1, 2)
    assert _files(tmp) == before


# A full disk ---------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 64 kB file system, filled up."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip("mounting a small tmpfs needs root")
    with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as f:
        while True:
            f.write(bytes(4096))
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("command", ["build", "release", "check"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, full_disk,
                                                                 command) -> None:
    from fastindex.treegen import make_tree

    root = tmp_path / "t"
    make_tree(root, files=3000, shape="behaviour", seed=1)
    (root / "notes.txt").write_text("not data\n")  # a problem: a report to write
    before = sorted(p.name for p in full_disk.iterdir())
    args = {"build": ["build", str(root), "--out", str(full_disk)],
            "release": ["release", str(root), str(full_disk / "r.zip"), "--allow-skipped"],
            "check": ["check", str(root), "--report", str(full_disk / "r.csv")]}[command]
    line = _one_line_refusal(_cli(*args, "--quiet"), code=3)
    assert "no space left on the device" in line and str(full_disk) in line
    assert sorted(p.name for p in full_disk.iterdir()) == before


JOURNAL_PATHS = HOSTILE_TEXT | st.sampled_from(["s", "s/2020-01-01", "link/x", "outside",
                                                "s/2020-01-01/1", "s/2020-01-01/001"])
JOURNAL_STEPS = st.one_of(
    st.builds(lambda a, b: {"rename": [a, b]}, JOURNAL_PATHS, JOURNAL_PATHS),
    st.builds(lambda a: {"mkdir": a}, JOURNAL_PATHS),
    st.dictionaries(st.text(max_size=6), HOSTILE_VALUES, max_size=2))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(JOURNAL_STEPS, max_size=4), st.sampled_from([None, "/", "other"]),
       st.binary(max_size=8))
def test_fuzzed_journals_never_reach_outside_the_root(tmp_path_factory, steps, header_root,
                                                      tail) -> None:
    tmp = tmp_path_factory.mktemp("journal")
    root = write_tree(tmp / "t", ["s/2020-01-01/1/alf/a.b.npy"])
    outside = write_tree(tmp / "outside", ["x/keep.me.npy"])
    (root / "link").symlink_to(outside)
    journal = tmp / "j.jsonl"
    journal.write_bytes(_journal(root, *steps, header_root=header_root).encode() + tail)
    before = _files(outside), sorted(p.name for p in tmp.iterdir())
    code = main(["fix", str(root), "--undo", str(journal)])
    event(f"undo exit {code}")
    assert code in (0, 1, 2, 3)
    assert (_files(outside), sorted(p.name for p in tmp.iterdir())) == before


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(HOSTILE_TEXT | st.sampled_from(["*", "!*", "alf/", "**/", "\\", "[", "#x",
                                                 "/lab/"]), max_size=5),
       st.binary(max_size=8))
def test_fuzzed_ignore_files_are_refused_or_obeyed_never_a_crash(tmp_path_factory, lines,
                                                                 tail) -> None:
    tmp = tmp_path_factory.mktemp("ignore")
    root = write_tree(tmp / "t", [f"{SES}/alf/trials.table.npy"])
    (root / ".fastindexignore").write_bytes("\n".join(lines).encode() + tail)
    code = main(["build", str(root), "--quiet", "--workers", "1"])
    event(f"build exit {code}")
    assert code in (0, 2)
    if code == 0:
        assert TableStore(root).read().datasets.height in (0, 1)


def _catches(pid: int, signum: int) -> bool:
    """Whether the process ``pid`` has a handler for ``signum`` (Linux's /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_ctrl_c_before_the_command_starts_is_one_line(tmp_path) -> None:
    """SIGINT while the console script is still importing (about 0.15 s): no traceback.

    Not before the script's first statement has run (its SIGTERM handler, set just after
    its SIGINT one, is how this test sees it): until then, Python's own start
    (site-packages included), before any line of fastindex runs, and a signal then is
    the interpreter's to report.  The signals land in the imports, while the workers are
    forked, or later: wherever one lands, the answer is the same."""
    script = Path(sys.executable).parent / "fastindex"
    root = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy"])
    for delay in (0, 0.08, 0.18):  # after the handlers are set; any would do
        proc = subprocess.Popen([str(script), "build", str(root), "--quiet"],
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not _catches(proc.pid, signal.SIGTERM):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err
        if proc.returncode == 130:
            assert len(err.strip().splitlines()) == 1, err


def test_a_lock_file_planted_as_a_link_is_refused_and_nothing_is_written_through_it(
        tmp_path) -> None:
    """Where a folder cannot be locked (NFS), a lock file is: a link planted at its name
    is refused, not followed to create a file elsewhere."""
    from fastindex.store import _lock_file

    outside = tmp_path / "outside"
    (tmp_path / ".fastindex.lock").symlink_to(outside)  # dangling: opening it creates it
    with pytest.raises(InputError, match="cannot create the lock file"):
        with _lock_file(tmp_path / ".fastindex.lock"):
            pass
    assert not outside.exists()


# Zips and tables, third round: methods, declared sizes, repeated rows ------------------

def _recompressed(source: Path, target: Path, method: int, name: str | None = None,
                  declare: dict | None = None) -> Path:
    """A copy of a zip whose member ``name`` (every member when None) is compressed with
    ``method``, and whose central directory declares ``declare`` (ZipInfo attributes) for
    it: set before the directory is written, so only the directory says so."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            chosen = name is None or info.filename == name
            new.writestr(info, old.read(info), method if chosen else info.compress_type)
            if chosen:
                for key, value in (declare or {}).items():
                    setattr(new.infolist()[-1], key, value)
    return target


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_member_compressed_as_no_release_is_is_refused_before_any_data_is_read(
        tmp_path, release, method) -> None:
    """bzip2 and lzma members are inflated by zipfile a whole chunk at a time: a small
    one declaring a terabyte exhausts memory.  A release stores or deflates: refused
    from the central directory, whatever the member holds."""
    crafted = _recompressed(release, tmp_path / "c.zip", method, f"{SES}/alf/spikes.times.npy")
    assert f"compressed with method {method}, not stored or deflate" in _one_line_refusal(
        _cli("verify", str(crafted), "--hash"))


@pytest.mark.parametrize("declare,why", [
    ({"file_size": 1 << 40}, "declares 1099511627776 bytes in"),  # 1 TiB from a few bytes
    ({"compress_size": 1 << 30}, "more compressed data than the zip's"),
])
def test_a_member_declaring_sizes_no_release_can_is_refused_before_reading(
        tmp_path, release, declare, why) -> None:
    """What the central directory declares is what zipfile reads: a deflate member can
    inflate at most 1032 times its compressed size, and its compressed bytes must be in
    the zip.  A 1 TiB member of a small zip would cost an hour of inflating."""
    crafted = _recompressed(release, tmp_path / "c.zip", zipfile.ZIP_DEFLATED,
                            f"{SES}/alf/spikes.times.npy", declare)
    assert crafted.stat().st_size < 1 << 20
    assert why in _one_line_refusal(_cli("verify", str(crafted), "--hash"))


def test_a_zero_filled_member_at_deflates_best_ratio_is_verified(tmp_path) -> None:
    """The bound is deflate's own: a real member as compressible as data gets passes."""
    root = write_tree(tmp_path / "t", {f"{SES}/alf/zeros.table.npy": bytes(16 << 20)})
    zip_path = tmp_path / "r.zip"
    assert main(["release", str(root), str(zip_path), "--compression", "deflate", "--quiet",
                 "--workers", "1"]) == 0
    info = zipfile.ZipFile(zip_path).getinfo(f"{SES}/alf/zeros.table.npy")
    assert info.file_size > 1000 * info.compress_size
    assert main(["verify", str(zip_path), "--quiet"]) == 0


def _forged_zip(release: Path, tmp_path: Path, change, replace=None) -> Path:
    """The release with ``change`` made to its datasets table (and members replaced)."""
    with zipfile.ZipFile(release) as z:
        (tmp_path / "d.pqt").write_bytes(z.read("datasets.pqt"))
    _forge(tmp_path / "d.pqt", change)
    return _rezip(release, tmp_path / "c.zip", replace={
        "datasets.pqt": (tmp_path / "d.pqt").read_bytes(), **(replace or {})})


def test_verify_hash_says_which_rows_it_could_not_compare(tmp_path, release) -> None:
    """A row without a digest, whose member was replaced by other bytes of its size:
    ``not_compared`` (exit 1), never 'content checked: no differences'."""
    member = f"{SES}/alf/trials.table.npy"  # the first row
    size = zipfile.ZipFile(release).getinfo(member).file_size
    crafted = _forged_zip(release, tmp_path, _set("hash", None),
                          replace={member: b"\x07" * size})
    report = tmp_path / "v.json"
    done = _cli("verify", str(crafted), "--hash", "--report", str(report))
    assert done.returncode == 1, done.stderr
    assert "1 not_compared" in done.stderr
    assert [(d["kind"], d["path"], d["expected"]) for d in
            json.loads(report.read_text())["differences"]] == [
        ("not_compared", member, "no digest")]


def _damaged(release: Path, target: Path, member: str) -> Path:
    """A copy of the zip with one byte of ``member``'s data changed (its CRC-32 kept)."""
    data = bytearray(release.read_bytes())
    info = zipfile.ZipFile(release).getinfo(member)
    start = info.header_offset + 30 + int.from_bytes(data[info.header_offset + 26:
                                                          info.header_offset + 28], "little") \
        + int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[start + info.compress_size - 1] ^= 0xFF
    target.write_bytes(data)
    return target


@pytest.mark.parametrize("hash_too", [False, True])
def test_one_damaged_member_is_one_content_mismatch(tmp_path, release, hash_too) -> None:
    member = f"{SES}/alf/spikes.times.npy"
    crafted = _damaged(release, tmp_path / "c.zip", member)
    report = tmp_path / "v.json"
    done = _cli("verify", str(crafted), "--report", str(report),
                *(["--hash"] if hash_too else []))
    assert done.returncode == 1, done.stderr
    crc = zipfile.ZipFile(release).getinfo(member).CRC
    assert json.loads(report.read_text())["differences"] == [
        {"kind": "content_mismatch", "path": member, "expected": f"crc32:{crc:08x}",
         "found": "data whose CRC-32 differs"}]


def _repeat(table_name: str, how: str, times: int):
    """A change to a table: its first row repeated ``times`` times, as it is ("row"), or
    with new dataset ids ("path": one path, many ids), or sessions repeated ("id")."""
    import pyarrow as pa

    def change(table):
        first = table.slice(0, 1)
        copies = pa.concat_tables([first] * times)
        if how == "path":
            i = copies.column_names.index("id")
            copies = copies.set_column(i, "id", pa.array(
                [f"id{n}" for n in range(times)], copies.schema.field("id").type))
        return pa.concat_tables([copies, table.slice(1)])
    return change


REPEATS = [("datasets.pqt", "row", "datasets has more than one row with eid "),
           ("datasets.pqt", "path", "datasets has more than one row with eid "),
           ("sessions.pqt", "row", "sessions has more than one row with id ")]


@pytest.mark.parametrize("table,how,why", REPEATS)
@pytest.mark.parametrize("where", ["zip", "update", "verify"])
def test_repeated_rows_are_refused_in_one_line_before_any_join(tmp_path, release, table, how,
                                                               why, where) -> None:
    """A row repeated N times makes every join on its key N x N rows (a 5 kB zip whose
    datasets repeat one row 20,000 times aborted verify): refused, naming the key."""
    times = 2000  # enough to show the join, small enough to run before the check existed
    if where == "zip":
        with zipfile.ZipFile(release) as z:
            (tmp_path / table).write_bytes(z.read(table))
        _forge(tmp_path / table, _repeat(table, how, times))
        crafted = _rezip(release, tmp_path / "c.zip",
                         replace={table: (tmp_path / table).read_bytes()})
        line = _one_line_refusal(_cli("verify", str(crafted), "--hash"))
        assert str(crafted) in line
    else:
        root, out = _hashed_tables(tmp_path)
        _forge(out / table, _repeat(table, how, times))
        before = (out / table).read_bytes()
        args = (["update", str(root), "--out", str(out), "--keep-missing"] if where == "update"
                else ["verify", str(root), "--tables", str(out), "--hash"])
        line = _one_line_refusal(_cli(*args))
        assert (out / table).read_bytes() == before
    assert why in line and ("rel_path" in line) == (how == "path")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["sessions.pqt", "datasets.pqt"]), max_size=2),
       st.integers(2, 50),
       st.dictionaries(st.sampled_from([f"{SES}/alf/trials.table.npy", "sessions.pqt",
                                        "datasets.pqt"]),
                       st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                        zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]), max_size=3),
       st.booleans())
def test_fuzzed_zips_with_repeated_rows_and_any_method_are_refused_or_verified(
        tmp_path_factory, capsys, repeated, times, methods, hash_too) -> None:
    """Rows repeated in either table, members compressed with any method zipfile knows:
    refused in one line (exit 2) exactly when a row repeats or a method is not a
    release's, else verified (exit 0); nothing written."""
    tmp = tmp_path_factory.mktemp("zip")
    root = write_tree(tmp / "t", [f"{SES}/alf/trials.table.npy"])
    release = tmp / "r.zip"
    assert main(["release", str(root), str(release), "--hash", "md5", "--quiet",
                 "--workers", "1"]) == 0
    tables = {}
    with zipfile.ZipFile(release) as z:
        for table in set(repeated):
            (tmp / table).write_bytes(z.read(table))
            _forge(tmp / table, _repeat(table, "row", times))
            tables[table] = (tmp / table).read_bytes()
    crafted = tmp / "c.zip"
    with zipfile.ZipFile(release) as old, zipfile.ZipFile(crafted, "w") as new:
        for info in old.infolist():
            new.writestr(info, tables.get(info.filename) or old.read(info),
                         methods.get(info.filename, info.compress_type))
    before = _files(tmp)
    capsys.readouterr()
    code = main(["verify", str(crafted), "--quiet", *(["--hash"] if hash_too else [])])
    err = capsys.readouterr().err
    refused = bool(repeated) or any(m not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
                                    for m in methods.values())
    event(f"verify exit {code}")
    assert code == (2 if refused else 0), err
    if refused:
        assert "more than one row with" in err or "not stored or deflate" in err
        assert len(err.strip().splitlines()) == 1, err
    assert _files(tmp) == before


def test_update_keep_missing_never_keeps_a_second_row_for_a_file_that_is_there(
        tmp_path) -> None:
    """Old tables whose row for a file has another id (forged): the file's new row
    replaces it; the old one is not kept as gone, so no path is written twice."""
    import polars as pl

    root, out = _hashed_tables(tmp_path)
    _forge(out / "datasets.pqt", _set("id", "not-the-id-of-this-path"))
    assert main(["update", str(root), "--out", str(out), "--keep-missing", "--quiet",
                 "--workers", "1"]) == 0
    datasets = pl.read_parquet(out / "datasets.pqt")
    assert datasets.height == 2 and datasets["exists"].all()
    TableStore(out).read()


# fix: the journal outside the tree, subjects kept in their labs -------------------------

FIX_FILE = "alf/_ibl_trials.choice.npy"


def _unloadable_tree(tmp_path: Path) -> Path:
    """A lab folder without ``Subjects``, one session spelled ``1``: fix has work."""
    return write_tree(tmp_path / "t", [f"labB/m2/2021-05-05/001/{FIX_FILE}",
                                       f"labB/m2/2021-05-06/1/{FIX_FILE}"])


def test_fix_run_above_a_tree_never_moves_a_subject_out_of_its_lab(tmp_path, tmp_path_factory,
                                                                   capsys) -> None:
    """From the folder above ``t``, ``t/labB/m2`` -> ``m2`` would drop the lab (and every
    session id): refused, naming the folder to run fix on, where the lab is kept."""
    tree = _unloadable_tree(tmp_path)
    before = _files(tmp_path)
    journal = tmp_path_factory.mktemp("journal") / "j1"
    assert main(["fix", str(tmp_path), "--apply", "--journal", str(journal)]) == 1
    out = capsys.readouterr().out
    assert "rename\t" not in out
    assert (f"refused\tt/labB/m2/2021-05-05/001\tlabB may be this subject's lab, which a "
            f"move to the root would lose: run fix on {tree} instead") in out
    assert _files(tmp_path) == before
    assert main(["fix", str(tree), "--apply", "--journal", str(tmp_path / "j2")]) == 0
    assert main(["check", str(tree), "--quiet"]) == 0
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.npy")) == [
        f"labB/Subjects/m2/2021-05-05/001/{FIX_FILE}",
        f"labB/Subjects/m2/2021-05-06/001/{FIX_FILE}"]


def test_fix_refuses_a_journal_inside_the_tree_it_renames(tmp_path) -> None:
    tree = _unloadable_tree(tmp_path)
    before = _files(tree)
    line = _one_line_refusal(_cli("fix", str(tree), "--apply", "--journal",
                                  str(tree / "labB" / "j.jsonl")))
    assert "would be inside" in line and "--journal" in line
    assert _files(tree) == before


def test_fixs_default_journal_is_outside_the_tree_even_run_from_inside_it(
        tmp_path, monkeypatch) -> None:
    """``cd tree && fastindex fix . --apply``: the journal is never where check would
    report it and release refuse it."""
    from fastindex import fix

    tree = _unloadable_tree(tmp_path)
    done = subprocess.run([sys.executable, "-m", "fastindex", "fix", ".", "--apply"],
                          cwd=tree, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not [p for p in tree.rglob("*") if p.name.startswith("fastindex-fix-")]
    assert main(["fix", str(tree), "--undo", str(next(tmp_path.glob("fastindex-fix-*")))]) == 0
    for here in (tree, tree / "labB/m2", tmp_path):
        monkeypatch.chdir(here)
        assert fix.default_journal(tree).parent == tmp_path
    monkeypatch.chdir(tree)
    journal = fix.default_journal(tree, when=0)
    assert fix.apply(fix.plan(tree), journal) == 2 and journal.is_file()
    assert main(["check", str(tree), "--quiet"]) == 0

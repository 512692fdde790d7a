"""``fastindex release``: a zip that ONE opens as is, reproducible, verified, atomic."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, age_files, npy, write_tree
from one.converters import session_record2path

import fastindex
from fastindex import problems as p
from fastindex.archive import ChangedError
from fastindex.cli import main

SES = "cortexlab/Subjects/KS001/2020-01-01/001"


def release_tree(root: Path) -> Path:
    return write_tree(root, BEHAVIOUR)


def test_the_unzipped_release_loads_every_dataset_in_one(tmp_path, caplog,
                                                         strict_warnings) -> None:
    from one.api import One

    root = release_tree(tmp_path / "t")
    (tmp_path / "LICENSE").write_text("CC-BY-4.0\n")
    out = tmp_path / "release.zip"
    assert main(["release", str(root), str(out), "--include", str(tmp_path / "LICENSE"),
                 "--quiet"]) == 0
    unpacked = tmp_path / "anywhere/else"
    with zipfile.ZipFile(out) as archive:
        archive.extractall(unpacked)
    one = One(cache_dir=unpacked, mode="local")
    sessions = pl.read_parquet(unpacked / "sessions.pqt")
    folders = {r["id"]: session_record2path(r, unpacked) for r in sessions.iter_rows(named=True)}
    rows = pl.read_parquet(unpacked / "datasets.pqt")
    assert rows.height == len(BEHAVIOUR)
    with caplog.at_level(logging.WARNING):
        for row in rows.iter_rows(named=True):
            path = folders[row["eid"]] / row["rel_path"]  # one-api's own path rule
            assert hashlib.md5(path.read_bytes()).hexdigest() == row["hash"]
            *collection, name = row["rel_path"].split("/")
            revision = collection.pop()[1:-1] if collection and collection[-1][0] == "#" else None
            if revision is None and not row["default_revision"]:
                continue  # an older copy, superseded by a revision: not loadable by name
            got = one.load_dataset(row["eid"], name, collection="/".join(collection) or None,
                                   revision=revision, download_only=True, check_hash=True)
            assert Path(got) == path
    assert [r.getMessage() for r in caplog.records] == []


def test_the_zip_holds_the_tables_the_indexed_files_and_the_included_ones(tmp_path) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, "notes.txt", f"{SES}/.DS_Store"])
    (root / "README.md").write_text("# a release\n")
    out = tmp_path / "r.zip"
    result = fastindex.release(root, out, include=[root / "README.md"], allow_skipped=True)
    assert result.build.skipped["path"].to_list() == ["notes.txt"]
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert names == [*sorted(BEHAVIOUR), "README.md", "sessions.pqt", "datasets.pqt"]
    assert result.files == len(names)


def test_the_same_tree_twice_gives_the_same_bytes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    zips = []
    for copy, age in (("a", 0), ("b", 86_400)):  # two trees written apart in time: other
        root = release_tree(tmp_path / copy / "tree")  # mtimes (a day apart), other paths
        age_files(root, age)
        zips.append(fastindex.release(root, tmp_path / copy / "r.zip", compression="deflate"))
    assert zips[0].path.read_bytes() == zips[1].path.read_bytes()
    assert zips[0].sha256 == zips[1].sha256 == hashlib.sha256(
        zips[0].path.read_bytes()).hexdigest()
    with zipfile.ZipFile(zips[0].path) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2023, 11, 14, 22, 13, 20)}


def test_a_file_changed_after_indexing_fails_the_release(tmp_path, monkeypatch) -> None:
    module = importlib.import_module("fastindex.release")  # the package binds the function

    root = release_tree(tmp_path / "t")
    victim = root / SES / "alf/_ibl_trials.choice.npy"
    listed = module._members

    def edit_after_indexing(*args):
        members = listed(*args)
        data = bytearray(victim.read_bytes())
        data[-1] ^= 1  # same size, other bytes
        victim.write_bytes(bytes(data))
        return members

    monkeypatch.setattr(module, "_members", edit_after_indexing)
    out = tmp_path / "r.zip"
    with pytest.raises(ChangedError, match="_ibl_trials.choice.npy changed since it was"):
        fastindex.release(root, out)
    assert os.listdir(tmp_path) == ["t"]  # no zip, no temporary file


def test_anything_skipped_stops_the_release_unless_allowed(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, f"{SES}/notes.txt"])
    out = tmp_path / "r.zip"
    assert main(["release", str(root), str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"skipped\t{p.NOT_ALF_NAME}\t{SES}/notes.txt" in err and "no zip written" in err
    assert not out.exists()
    assert main(["release", str(root), str(out), "--allow-skipped"]) == 0
    assert f"{SES}/notes.txt" in capsys.readouterr().err
    with zipfile.ZipFile(out) as archive:
        assert f"{SES}/notes.txt" not in archive.namelist()


@pytest.mark.parametrize("args, message", [
    (["r.tar"], "must be a .zip"),
    (["missing/r.zip"], "cannot write in"),
    (["r.zip", "--include", "nothing-here"], "not a file"),
    (["r.zip", "--include", "t/" + BEHAVIOUR[0]], "already has a file there"),
])
def test_bad_release_input_is_exit_2(tmp_path, capsys, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    release_tree(tmp_path / "t")
    assert main(["release", "t", *args, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*.tmp"))


def test_sigint_leaves_no_zip_and_no_temporary_file(tmp_path) -> None:
    root = write_tree(tmp_path / "t", {f"{SES}/raw_ephys_data/_spikeglx_ephysData_g0_t0.imec0"
                                       f".ap{i}.cbin": 0 for i in range(4)})
    for path in (root / SES / "raw_ephys_data").iterdir():
        os.truncate(path, 1 << 30)  # 4 sparse GiB: deflating them takes seconds
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-m", "fastindex", "release", str(root),
                              str(out / "r.zip"), "--hash", "xxh3", "--compression", "deflate"],
                             stderr=subprocess.PIPE, text=True)
    # The zip's temporary file, made as the zipping starts: the signal lands in it
    deadline = time.monotonic() + 120
    while not os.listdir(out):
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    err = child.communicate(timeout=60)[1]
    assert child.returncode == 130, err
    assert os.listdir(out) == []
    # What it says is what is on disk: the tables are written after the zip, not before.
    assert f"no zip was written and the tables in {root} are unchanged" in err
    assert not (root / "datasets.pqt").exists() and not (root / "sessions.pqt").exists()


def _bytes_read() -> int:
    """This process's ``rchar``: bytes its read system calls returned."""
    text = Path("/proc/self/io").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar")))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/PID/io")
@pytest.mark.parametrize("io_threads", [0, 4])  # read by the writer, or ahead by threads
def test_a_release_reads_each_data_byte_once(tmp_path, io_threads) -> None:
    files = {f"{SES}/raw_video_data/_iblrig_leftCamera.raw{i}.mp4": os.urandom(4 << 20)
             for i in range(8)}
    root = write_tree(tmp_path / "t", {**files, **{f: npy(3) for f in BEHAVIOUR}})
    data = sum(len(b) for b in files.values())
    fastindex.release(root, tmp_path / "warm.zip", workers=1)  # imports done, cache warm
    (tmp_path / "warm.zip").unlink()
    before = _bytes_read()
    fastindex.release(root, tmp_path / "r.zip", workers=1, hash="xxh3+md5", io_threads=io_threads)
    read = _bytes_read() - before
    assert data <= read < data * 1.1  # the digests, the CRC and the copy from one read
    assert main(["verify", str(tmp_path / "r.zip"), "--hash", "--quiet"]) == 0


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/PID/io")
def test_a_stray_file_refuses_the_release_before_any_data_is_read(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {f"{SES}/raw_video_data/_iblrig_leftCamera.raw.mp4":
                                       os.urandom(16 << 20), "README.txt": b"hello"})
    fastindex.check(root, workers=1)  # imports done
    before = _bytes_read()
    assert main(["release", str(root), str(tmp_path / "r.zip"), "--workers", "1"]) == 1
    assert _bytes_read() - before < 1 << 20
    err = capsys.readouterr().err
    assert "release checked the tree: 1 file would be skipped" in err
    assert "no file was read" in err and "strict" not in err
    assert not (tmp_path / "r.zip").exists() and not (root / "datasets.pqt").exists()


@pytest.fixture
def read_only_tree(tmp_path):
    """A release tree this process cannot write to: a read-only bind mount when running
    as root (whom permissions do not stop), else a folder without write permission."""
    root = release_tree(tmp_path / "t")
    if os.geteuid() != 0:
        for folder in (root, *[p for p in root.rglob("*") if p.is_dir()]):
            folder.chmod(0o555)
        yield root
        for folder in (root, *[p for p in root.rglob("*") if p.is_dir()]):
            folder.chmod(0o755)
        return
    view = tmp_path / "ro"
    view.mkdir()
    mounted = subprocess.run(f"mount --bind {root} {view} && mount -o remount,ro,bind {view}",
                             shell=True, capture_output=True)
    if mounted.returncode != 0:
        subprocess.run(["umount", str(view)], capture_output=True)
        pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
    try:
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_tree_is_released_with_its_tables_in_the_zip(read_only_tree, tmp_path,
                                                                  capsys) -> None:
    assert not os.access(read_only_tree, os.W_OK)
    out = tmp_path / "r.zip"
    assert main(["release", str(read_only_tree), str(out)]) == 0
    assert "tables in the zip only" in capsys.readouterr().err
    assert not (read_only_tree / "datasets.pqt").exists()
    assert main(["verify", str(out), "--hash", "--quiet"]) == 0
    tables = tmp_path / "tables"
    assert main(["release", str(read_only_tree), str(out), "--tables", str(tables),
                 "--quiet"]) == 0
    assert main(["verify", str(read_only_tree), "--tables", str(tables), "--hash",
                 "--quiet"]) == 0


def test_verify_checks_a_zip_without_unpacking_it(tmp_path, capsys) -> None:
    root = release_tree(tmp_path / "t")
    good = tmp_path / "r.zip"
    fastindex.release(root, good)
    assert main(["verify", str(good), "--hash"]) == 0
    assert "content checked with md5: no differences" in capsys.readouterr().err
    name = f"{SES}/alf/_ibl_trials.choice.npy"
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo(name)
        members = [(i, archive.read(i)) for i in archive.infolist()]
    data = bytearray(good.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size - 1] ^= 0xFF  # the member's last byte
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(data))
    assert main(["verify", str(flipped), "--quiet"]) == 1
    assert f"content_mismatch: {name}" in capsys.readouterr().err
    missing = tmp_path / "missing.zip"
    with zipfile.ZipFile(missing, "w") as archive:
        for i, content in members:
            if i.filename != name:
                archive.writestr(i, content)
    assert main(["verify", str(missing), "--quiet"]) == 1
    assert f"missing: {name}" in capsys.readouterr().err


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_zip_and_the_report_are_as_readable_as_the_umask_allows(tmp_path, umask,
                                                                    mode) -> None:
    """A zip made for publication, and a report: mode 0666 less the umask, as any file
    the user creates (mkstemp's 0600 kept web servers and colleagues out)."""
    root = write_tree(tmp_path / "t", [f"{SES}/alf/_ibl_trials.choice.npy"])
    zip_path, report = tmp_path / "r.zip", tmp_path / "r.json"
    for command, code in ((["release", str(root), str(zip_path)], 0),
                          (["check", str(root), "--report", str(report)], 1)):
        done = subprocess.run([sys.executable, "-m", "fastindex", *command, "--quiet"],
                              capture_output=True, text=True, umask=umask)
        assert done.returncode == code, done.stderr
        (root / "notes.txt").write_text("not data\n")  # a problem for check to report
    assert {path.name: path.stat().st_mode & 0o777 for path in (zip_path, report)} == {
        "r.zip": mode, "r.json": mode}


def test_a_session_without_files_is_a_folder_of_the_zip(tmp_path) -> None:
    """A zip holds no folder unless it names it: a session the tables list, with no file,
    is a folder entry, so the unpacked tree holds what the tables say."""
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    empty = "cortexlab/Subjects/KS009/2021-03-04/002"
    (root / empty).mkdir(parents=True)
    built = fastindex.check(root, workers=1)
    result = fastindex.release(root, tmp_path / "r.zip", workers=1)
    unpacked = tmp_path / "u"
    with zipfile.ZipFile(result.path) as archive:
        assert f"{empty}/" in archive.namelist()
        archive.extractall(unpacked)
    assert (unpacked / empty).is_dir()
    assert fastindex.check(unpacked, workers=1).sessions.height == built.sessions.height
    assert pl.read_parquet(unpacked / "sessions.pqt").height == built.sessions.height
    assert main(["verify", str(result.path), "--hash", "--quiet"]) == 0
    assert main(["verify", str(unpacked), "--hash", "--quiet"]) == 0
    (unpacked / empty).rmdir()  # as a zip made without its folder would unpack
    assert main(["verify", str(unpacked), "--quiet"]) == 1

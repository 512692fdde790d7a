"""Every read of a listed file is bounded by its listed size plus one byte, and checked
against the listing afterwards (size, mtime, ctime, inode): files hashed as tasks of
their own (a build's large files, ``update``'s changed files) and ``release``'s reads.

The files are changed between the listing and the read through public parameters
only: an executor whose ``submit`` edits a file before a task runs, or the sink a zip
is written to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import BEHAVIOUR, age_files, write_tree

import fastindex
from fastindex import archive, hashing
from fastindex import problems as p
from fastindex.index import hash_files
from fastindex.update import update

#: A file grown or swapped in after the listing: sparse, so it costs no disk, only the
#: reads (and the memory) of whoever reads it whole.
SPARSE = 4 << 30
#: Bytes a test's process may read besides the tree: imports, tables (far below SPARSE).
READ_SLACK = 256 << 20


def _rchar() -> int:
    """Bytes this process has read so far (every thread), as the kernel counts them."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def _grow_sparse(path: str) -> None:
    os.truncate(path, SPARSE)


def _rewrite_keeping_mtime(path: str) -> None:
    """What ``rsync --inplace`` leaves: other bytes, the same size, the mtime put back."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


class EditBeforeHashing(ThreadPoolExecutor):
    """Runs tasks on threads; before a task that hashes files of its own runs, ``edit``
    is applied to ``victim`` when the task hashes it (after the walk listed it)."""

    def __init__(self, edit, victim: Path) -> None:
        super().__init__(2)
        self.edit = edit
        self.victim = str(victim)
        self.edited: list[str] = []

    def submit(self, fn, /, *args, **kwargs):
        if fn is hash_files and self.victim in args[1]:  # (root, paths, algorithms, ...)
            self.edit(self.victim)
            self.edited.append(self.victim)
        return super().submit(fn, *args, **kwargs)


def _reasons(result) -> dict[str, str]:
    return dict(zip(result.skipped["path"], result.skipped["reason"]))


def _tree(tmp_path: Path) -> tuple[Path, str]:
    """A tree whose first file is hashed as a task of its own (defer_size=CHUNK)."""
    files: dict[str, bytes | int] = {f: bytes(i * 100 + 1) for i, f in enumerate(BEHAVIOUR)}
    files[BEHAVIOUR[0]] = b"x" * (2 * hashing.CHUNK + 5)
    return write_tree(tmp_path / "t", files), BEHAVIOUR[0]


def test_a_deferred_file_grown_huge_after_listing_is_read_no_further(tmp_path) -> None:
    root, victim = _tree(tmp_path)
    with EditBeforeHashing(_grow_sparse, root / victim) as pool:
        before = _rchar()
        result = fastindex.build(root, executor=pool, hash="md5", defer_size=hashing.CHUNK)
        read = _rchar() - before
    assert pool.edited == [str(root / victim)]
    assert _reasons(result) == {victim: p.CHANGED}
    assert result.n_datasets == len(BEHAVIOUR) - 1
    assert read < READ_SLACK, f"{read} bytes read for a file listed at 2 MiB"


def test_a_deferred_file_rewritten_with_its_mtime_put_back_is_changed(tmp_path) -> None:
    # the listing's ctime goes with the task: the rewrite moved it
    root, victim = _tree(tmp_path)
    with EditBeforeHashing(_rewrite_keeping_mtime, root / victim) as pool:
        result = fastindex.build(root, executor=pool, hash="md5", defer_size=hashing.CHUNK)
    assert pool.edited == [str(root / victim)]
    assert _reasons(result) == {victim: p.CHANGED}


def _updated_tree(tmp_path: Path) -> tuple[Path, str]:
    """A hashed build, then one file changed (a new size): the file update hashes again."""
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    age_files(root)  # written well before the build: their digests are kept
    fastindex.build(root, hash="md5")
    victim = BEHAVIOUR[1]
    with open(root / victim, "ab") as f:
        f.write(b"more")
    return root, victim


def test_a_file_update_hashes_again_grown_huge_after_listing_is_read_no_further(
        tmp_path) -> None:
    root, victim = _updated_tree(tmp_path)
    with EditBeforeHashing(_grow_sparse, root / victim) as pool:
        before = _rchar()
        result = update(root, executor=pool)
        read = _rchar() - before
    assert pool.edited == [str(root / victim)]
    assert result.rehashed == 1
    assert _reasons(result.build) == {victim: p.CHANGED}
    assert read < READ_SLACK, f"{read} bytes read for a file listed at a few bytes"


def test_a_file_update_hashes_again_rewritten_after_listing_is_changed(tmp_path) -> None:
    # the same size, a new mtime: the row would pair the walk's mtime with other bytes
    def rewrite(path: str) -> None:
        data = bytearray(Path(path).read_bytes())
        data[0] ^= 1
        Path(path).write_bytes(bytes(data))
        os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))

    root, victim = _updated_tree(tmp_path)
    with EditBeforeHashing(rewrite, root / victim) as pool:
        result = update(root, executor=pool)
    assert pool.edited == [str(root / victim)]
    assert result.rehashed == 1
    assert _reasons(result.build) == {victim: p.CHANGED}


class RewriteWhileZipped:
    """The file a zip is written to; once the zip's first bytes arrive (the member is
    being read), the member is rewritten in place, its mtime put back."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim
        self.written = 0
        self.rewritten = False

    def write(self, data) -> int:
        if not self.rewritten:
            _rewrite_keeping_mtime(str(self.victim))
            self.rewritten = True
        self.written += len(data)
        return len(data)


def test_a_release_member_rewritten_in_place_during_its_read_is_refused(tmp_path) -> None:
    # large enough to be streamed, and for the zip's writer to pass on data mid-read
    root = tmp_path / "t"
    root.mkdir()
    victim = root / "big.bin"
    victim.write_bytes(os.urandom(3 * archive.HASH_PIECE))
    st = victim.stat()
    contents = archive.Contents(root, [("big.bin", st.st_size, st.st_mtime_ns)], [],
                                lambda digests: {}, ("md5",), zipfile.ZIP_STORED, 0)
    sink = RewriteWhileZipped(victim)
    with pytest.raises(archive.ChangedError, match="big.bin changed since it was listed"):
        archive.write_zip(sink, contents, False)
    assert sink.rewritten and victim.stat().st_mtime_ns == st.st_mtime_ns


#: A release in a process of its own, its address space capped (a read of the whole
#: 16 GiB file fails there, not on the machine), reporting what it read and held.
RELEASE_CHILD = r"""
import json, os, resource, sys
from concurrent.futures import ThreadPoolExecutor
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import fastindex
from fastindex.index import index_sessions
root, out, victim = sys.argv[1:4]

class SwapAfterWalk(ThreadPoolExecutor):
    def submit(self, fn, /, *args, **kwargs):
        if fn is not index_sessions:
            return super().submit(fn, *args, **kwargs)
        def walk_then_swap():
            result = fn(*args, **kwargs)
            with open(victim + ".new", "wb") as f:
                f.truncate(16 << 30)
            os.replace(victim + ".new", victim)
            return result
        return super().submit(walk_then_swap)

def rchar():
    with open("/proc/self/io") as io:
        return next(int(l.split()[1]) for l in io if l.startswith("rchar:"))

report = {"error": None}
before = rchar()
try:
    with SwapAfterWalk(1) as pool:
        fastindex.release(root, out, executor=pool)
except BaseException as err:
    report["error"] = f"{type(err).__name__}: {err}"
report["read"] = rchar() - before
with open("/proc/self/status") as status:
    report["peak_kb"] = next(int(l.split()[1]) for l in status if l.startswith("VmHWM"))
print(json.dumps(report))
"""


def test_a_release_file_swapped_for_a_huge_one_after_the_walk_is_refused_unread(
        tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    victim = root / BEHAVIOUR[0]
    out = tmp_path / "r.zip"
    done = subprocess.run([sys.executable, "-c", RELEASE_CHILD, str(root), str(out),
                           str(victim)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert victim.stat().st_size == 16 << 30  # the swap happened, after the walk
    assert report["error"] is not None and report["error"].startswith("ChangedError"), report
    assert f"{BEHAVIOUR[0]} changed since it was listed" in report["error"], report
    assert report["read"] < READ_SLACK, report
    assert report["peak_kb"] < 2 << 20, report  # KiB: 2 GiB, an eighth of the file
    assert sorted(os.listdir(tmp_path)) == ["t"]  # no zip, no temporary


def test_a_deferred_object_rewritten_after_listing_is_changed(tmp_path, monkeypatch
                                                                ) -> None:
    # the listing's ETag goes with the task (If-Match): same size, other bytes
    boto3 = pytest.importorskip("boto3")
    from test_bucket import CREDENTIALS, _moto, _upload

    from fastindex import s3client

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3client.forget_clients()
    tree, victim = _tree(tmp_path)
    with _moto() as endpoint:
        url = _upload(endpoint, "deferred", tree)
        s3 = boto3.client("s3", endpoint_url=endpoint)

        def rewrite(path: str) -> None:
            s3.put_object(Bucket="deferred", Key=f"data/{victim}",
                          Body=b"y" * (2 * hashing.CHUNK + 5))

        with EditBeforeHashing(rewrite, f"{url}/{victim}") as pool:
            result = fastindex.build(url, tmp_path / "out", executor=pool, hash="md5",
                                     defer_size=hashing.CHUNK, endpoint_url=endpoint)
    assert pool.edited == [f"{url}/{victim}"]
    assert _reasons(result) == {victim: p.CHANGED}

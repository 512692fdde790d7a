"""``fastindex release``: a folder to a verified, reproducible zip that ONE opens as is.

ONE's release workflow is: check the files, build the two tables, zip the folder with
them, publish; users unzip it and open it with ``One(cache_dir=...)``.  ``release`` does
the three steps as one, so the zip cannot hold tables older than its files, miss the
tables, ship files that are not indexed, or hold a file that differs from its row:

1. build the tables in the root (strict: nothing may be skipped, unless allowed);
2. zip the tables, then exactly the indexed files at the paths ONE loads them from,
   then the included files; each file is read once, and its size and digest from that
   read are checked against its row while the same bytes go into the zip;
3. write under a temporary name and rename into place when complete.

Entries have fixed timestamps (``SOURCE_DATE_EPOCH``, else 1980-01-01) and attributes
and a fixed order, so the same tree gives the same bytes.  ``verify_zip`` checks an
archive against the tables inside it without unpacking it.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastindex import hashing
from fastindex.errors import FastindexError, InputError
from fastindex.pipeline import TABLE_FILES, BuildResult, build, check_root, human_bytes
from fastindex.progress import progress_bar

COMPRESSION = {"store": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED}
DIGEST_COLUMNS = {"md5": "hash", "xxh3": "xxh3"}
#: The earliest time a zip entry can hold (MS-DOS dates start in 1980).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ChangedError(FastindexError):
    """A file differs from its row (changed since it was indexed): no zip is written."""

    exit_code = 1


@dataclass
class ReleaseResult:
    """What a release wrote."""

    path: Path
    build: BuildResult
    files: int  # members: tables, datasets, included files
    bytes: int  # bytes of the files zipped
    zip_size: int
    sha256: str
    seconds: float

    def summary(self) -> str:
        return (f"{self.path}: {self.files} files, {human_bytes(self.bytes)} in a "
                f"{human_bytes(self.zip_size)} zip, {self.seconds:.2f} s; "
                f"sha256 {self.sha256}")


def release(root: str | os.PathLike, out: str | os.PathLike, *, hash: str = "md5",
            allow_skipped: bool = False, include: Iterable[str | os.PathLike] = (),
            compression: str = "store", workers: int | None = None,
            io_threads: int | None = None, exclude: Iterable[str] = (),
            progress: bool = False) -> ReleaseResult:
    """Build the tables of ``root`` and write it, verified, to the zip ``out``.

    ``hash`` is the digest written in the tables and checked while zipping (``md5``, the
    one ONE checks; ``xxh3``; or both).  Without ``allow_skipped`` a tree with any file
    that would be skipped raises ``ProblemsFound`` before anything is written; with it,
    skipped files stay out of the zip (``result.build.skipped`` lists them).
    ``include``: files to add (a README, a LICENSE) at their path in the root, or at the
    top of the zip when they are outside it.  ``workers`` and ``io_threads`` are as in
    ``build``.
    """
    started = time.perf_counter()
    root_path = check_root(root)
    out_path = _check_out(Path(out))
    algorithms = _check_hash(hash)
    if compression not in COMPRESSION:
        raise InputError(f"compression must be one of {', '.join(COMPRESSION)}: {compression}")
    extra = _included(root_path, include)
    built = build(root_path, hash=hash, workers=workers, io_threads=io_threads,
                  exclude=exclude,
                  strict=not allow_skipped, progress=progress,
                  not_data=[out_path, *(path for _, path in extra)])
    members, newest_ns = _members(root_path, algorithms)
    taken = {name for name, *_ in members} | set(TABLE_FILES)
    for name, _ in extra:
        if name in taken:
            raise InputError(f"--include {name}: the release already has a file there")
    from fastindex.tables import fsync

    temporary = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        tables = _published_tables(root_path, out_path.stem, members, newest_ns)
        nbytes, sha256 = _write_zip(temporary, root_path, tables, members, extra, algorithms,
                                    COMPRESSION[compression], progress)
        fsync(temporary)
        os.replace(temporary, out_path)
    finally:
        temporary.unlink(missing_ok=True)
    return ReleaseResult(out_path, built, len(members) + len(extra) + len(TABLE_FILES), nbytes,
                         out_path.stat().st_size, sha256,
                         time.perf_counter() - started)


def _check_out(out: Path) -> Path:
    out = out.expanduser()
    if out.suffix.lower() != ".zip":
        raise InputError(f"the release must be a .zip file: {out}")
    folder = out.parent.resolve()
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {folder} (missing or not writable)")
    if out.is_dir():
        raise InputError(f"{out} is a folder")
    return folder / out.name


def _check_hash(hash: str) -> tuple[str, ...]:
    try:
        algorithms = hashing.parse(hash)
    except ValueError as err:
        raise InputError(str(err)) from None
    if not algorithms:
        raise InputError("a release checks every file against a digest: --hash md5, xxh3 "
                         "or xxh3+md5")
    return algorithms


def _included(root: Path, include: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(member name, file) of each included file: its root-relative path, or its name."""
    extra = []
    for item in include:
        path = Path(item).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"--include {item}: not a file")
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = path.name
        extra.append((name, path))
    names = [name for name, _ in extra]
    if len(set(names)) != len(names):
        raise InputError(f"--include: two files would have one name in the zip: {names}")
    return extra


def _members(root: Path, algorithms: tuple[str, ...]
             ) -> tuple[list[tuple[str, int, dict[str, str]]], int]:
    """(path ONE loads it from, size, digests) of every row of the tables just built,
    and the newest modification time among them (ns)."""
    import polars as pl

    from fastindex.verify import one_paths

    sessions, datasets = (pl.read_parquet(root / name) for name in TABLE_FILES)
    columns = [DIGEST_COLUMNS[a] for a in algorithms]
    rows = one_paths(sessions, datasets).sort("path").select("path", "file_size", *columns)
    members = [(path, size, dict(zip(algorithms, digests)))
               for path, size, *digests in rows.iter_rows()]
    return members, int(datasets["mtime_ns"].max() or 0)


def _published_tables(root: Path, name: str, members: list, newest_ns: int
                      ) -> dict[str, bytes]:
    """The tables as the zip holds them: the same rows, and metadata that depends only
    on the release: created at ``SOURCE_DATE_EPOCH`` or when its newest file was written,
    its origin the release's name, a build id derived from its contents; without the
    producer's modification times and walk time (an ``update`` of an unpacked release
    is a full build)."""
    import datetime

    from fastindex.pipeline import DEFAULT_NAMESPACE
    from fastindex.tables import one_metadata, republished

    content = hashlib.sha256()
    for path, size, digests in members:
        content.update(f"{path}\0{size}\0{sorted(digests.items())}\n".encode())
    created = datetime.datetime(*_timestamp()) if os.environ.get("SOURCE_DATE_EPOCH") else (
        datetime.datetime.fromtimestamp(newest_ns / 1e9, datetime.timezone.utc)
        .replace(tzinfo=None))
    updates = {"one_metadata": one_metadata(Path(name), created),
               "fastindex": {"build_id": str(uuid.uuid5(DEFAULT_NAMESPACE, content.hexdigest())),
                             "listed_at_ns": 0}}
    return {table: republished(root / table, updates, drop=("mtime_ns",))
            for table in TABLE_FILES}


def _entry(name: str, size: int, compress_type: int) -> zipfile.ZipInfo:
    """A zip entry whose header depends only on its name, size and compression."""
    info = zipfile.ZipInfo(name, date_time=_timestamp())
    info.create_system = 3  # Unix, so the permissions below are read
    info.external_attr = 0o100644 << 16
    info.compress_type = compress_type
    info.file_size = size  # lets zipfile choose ZIP64 before writing
    return info


def _timestamp() -> tuple[int, ...]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return ZIP_EPOCH
    try:
        moment = time.gmtime(int(epoch))
    except ValueError:
        raise InputError(f"SOURCE_DATE_EPOCH is not a number of seconds: {epoch}") from None
    return max(ZIP_EPOCH, tuple(moment[:6]))


def _write_zip(path: Path, root: Path, tables: dict[str, bytes], members: list, extra: list,
               algorithms: tuple, compress_type: int, progress: bool) -> tuple[int, str]:
    """Write the zip: (bytes zipped, the zip's SHA-256).  Files below ``SMALL_FILE`` are
    read (and hashed) ahead by threads while this thread writes, larger ones are
    streamed through one buffer."""
    total = sum(size for _, size, _ in members) + sum(p.stat().st_size for _, p in extra)
    check = ("xxh3",) if "xxh3" in algorithms else algorithms  # one digest is enough
    buffer = bytearray(hashing.CHUNK)
    base = str(root)
    pool = ThreadPoolExecutor(READ_THREADS)
    stream = None
    try:
        with open(path, "wb", buffering=1 << 20) as file:
            stream = _Stream(file)
            with zipfile.ZipFile(stream, "w", allowZip64=True) as archive, \
                    progress_bar(progress, "zipping", "B", total) as bar:
                for name, data in tables.items():
                    archive.writestr(_entry(name, len(data), compress_type), data)
                pending: list = []
                for window in (*_windows(members), []):
                    ahead = _read_ahead(pool, base, window, check)
                    for (name, size, expected), outcome in pending:
                        info = _entry(name, size, compress_type)
                        if outcome is None:  # a large file: streamed from here
                            with archive.open(info, "w") as sink:
                                outcome = _read_into(os.path.join(base, name), check, buffer,
                                                     sink)
                        elif not isinstance(outcome, OSError):
                            archive.writestr(info, outcome[0])
                        _check_read(name, size, {a: expected[a] for a in check}, outcome)
                        bar.update(size)
                    pending = _results(ahead)
                for name, file in extra:
                    size = file.stat().st_size
                    with archive.open(_entry(name, size, compress_type), "w") as sink:
                        hashing.digest_file(str(file), (), buffer, sink)
                    bar.update(size)
            return total, stream.sha256()
    finally:
        pool.shutdown(cancel_futures=True)
        if stream is not None:
            stream.close()


class _Stream:
    """The zip file as a stream that cannot seek or tell, hashed as it is written.

    zipfile then writes each entry once, its CRC-32 and sizes in a data descriptor after
    the data (standard since ZIP 2.0, read by every unzip), and counts offsets itself.
    On a seekable file it writes each header twice, seeking back to patch it: four system
    calls an entry, more than half the time of zipping 74k small files.  Written once and
    in order, the bytes give the zip's SHA-256 without reading it back: hashed on a thread
    of its own, in pieces of at least ``HASH_PIECE`` bytes (hashlib releases the GIL), as
    it was a quarter of the writing thread's time.
    """

    def __init__(self, file) -> None:
        self.file = file
        self._sha256 = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="fastindex-sha256")
        self._piece: list[bytes] = []
        self._piece_bytes = 0

    def write(self, data) -> int:
        self._piece.append(bytes(data))
        self._piece_bytes += len(data)
        if self._piece_bytes >= HASH_PIECE:
            self._hash_piece()
        return self.file.write(data)

    def _hash_piece(self) -> None:
        self._hasher.submit(self._sha256.update, b"".join(self._piece))
        self._piece, self._piece_bytes = [], 0

    def flush(self) -> None:
        self.file.flush()

    def sha256(self) -> str:
        """The SHA-256 of everything written (once the writing is over)."""
        self._hash_piece()
        self._hasher.shutdown(wait=True)
        return self._sha256.hexdigest()

    def close(self) -> None:
        self._hasher.shutdown(wait=False, cancel_futures=True)


#: Bytes of the zip handed to the hashing thread at a time.
HASH_PIECE = 4 << 20


#: Files smaller than this are read whole by ``READ_THREADS`` threads ahead of the writer,
#: at most ``READ_AHEAD_FILES`` files or ``READ_AHEAD_BYTES`` bytes per window (two
#: windows in memory at a time).
SMALL_FILE = 4 << 20
READ_THREADS = 8
READ_AHEAD_FILES = 256
READ_AHEAD_BYTES = 64 << 20
READ_TASK = 16  # files per reading task: a future per file costs more than its read


def _windows(members: list) -> list[list]:
    """``members`` in order, cut into windows bounded in files and in small-file bytes."""
    windows, window, nbytes = [], [], 0
    for member in members:
        window.append(member)
        nbytes += member[1] if member[1] < SMALL_FILE else 0
        if len(window) == READ_AHEAD_FILES or nbytes >= READ_AHEAD_BYTES:
            windows.append(window)
            window, nbytes = [], 0
    return [*windows, window] if window else windows


def _read_ahead(pool: ThreadPoolExecutor, base: str, window: list, check: tuple[str, ...]
                ) -> list[tuple[list, object]]:
    """Start reading a window's small files, ``READ_TASK`` files per task."""
    tasks = []
    for i in range(0, len(window), READ_TASK):
        chunk = window[i:i + READ_TASK]
        paths = [os.path.join(base, name) if size < SMALL_FILE else None
                 for name, size, _ in chunk]
        tasks.append((chunk, pool.submit(_read_some, paths, check)))
    return tasks


def _results(tasks: list[tuple[list, object]]) -> list[tuple[tuple, object]]:
    """Each member of a window with what its reader found (None: a large file)."""
    return [pair for chunk, future in tasks for pair in zip(chunk, future.result())]


def _read_some(paths: list[str | None], algorithms: tuple[str, ...]) -> list:
    return [None if path is None else _read_whole(path, algorithms) for path in paths]


def _read_whole(path: str, algorithms: tuple[str, ...]) -> tuple[bytes, int, dict] | OSError:
    """A small file's bytes, length and digests, from one read (in a thread: reading and
    hashing release the GIL)."""
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.readall()
    except OSError as err:
        return err
    return data, len(data), {a: hashing.new(a, data).hexdigest() for a in algorithms}


def _read_into(path: str, algorithms: tuple[str, ...], buffer: bytearray, sink
               ) -> tuple[None, int, dict] | OSError:
    """A large file streamed into ``sink``: its length and digests from the same read."""
    try:
        read, digests = hashing.digest_file(path, algorithms, buffer, sink)
    except OSError as err:
        return err
    return None, read, digests


def _check_read(name: str, size: int, expected: dict, outcome) -> None:
    """The read matches the row (size and digest), or the release stops."""
    if isinstance(outcome, OSError):
        raise ChangedError(f"{name}: cannot be read since it was indexed: {outcome}; "
                           f"no zip written")
    _, read, digests = outcome
    if read != size or digests != expected:
        what = f"{size} bytes" if read != size else f"its {'/'.join(expected)}"
        raise ChangedError(f"{name} changed since it was indexed ({what} differ); "
                           f"no zip written: run the release again")


def verify_zip(path: str | os.PathLike, hash: bool = False, progress: bool = False):
    """Check a release zip against the tables inside it, without unpacking it.

    Every row's member must be there with its size; every member's data is read once
    and checked against its CRC-32 (zipfile does it as it reads) and, with ``hash``,
    the row's digests.  Returns a ``verify.VerifyResult``.
    """
    import polars as pl

    from fastindex.verify import VerifyResult, digests_held, one_paths

    archive_path = Path(path).expanduser()
    try:
        archive = zipfile.ZipFile(archive_path)
    except (OSError, zipfile.BadZipFile) as err:
        raise InputError(f"cannot open {archive_path} as a zip: {err}") from None
    with archive:
        try:
            sessions, datasets = (pl.read_parquet(io.BytesIO(archive.read(name)))
                                  for name in TABLE_FILES)
        except KeyError as err:
            raise InputError(f"{archive_path} holds no {err.args[0]}: not a release") from None
        algorithms = digests_held(datasets) if hash else ()
        if hash and not algorithms:
            raise InputError(f"--hash: the tables in {archive_path} hold no digests")
        columns = [DIGEST_COLUMNS[a] for a in algorithms]
        rows = one_paths(sessions, datasets).select("path", "file_size", *columns)
        found = []
        buffer = bytearray(hashing.CHUNK)
        with progress_bar(progress, "verifying", "B", int(rows["file_size"].sum() or 0)) as bar:
            for name, size, *digests in rows.iter_rows():
                found.extend(_check_member(archive, name, size, dict(zip(algorithms, digests)),
                                           buffer))
                bar.update(size)
    frame = pl.DataFrame(found, schema={"kind": pl.String, "path": pl.String,
                                        "expected": pl.String, "found": pl.String},
                         orient="row")
    return VerifyResult(frame.sort("kind", "path"), datasets.height, algorithms)


def _check_member(archive: zipfile.ZipFile, name: str, size: int, expected: dict,
                  buffer: bytearray) -> list[tuple[str, str, str, str]]:
    from fastindex.verify import CONTENT, MISSING, SIZE

    try:
        info = archive.getinfo(name)
    except KeyError:
        return [(MISSING, name, str(size), None)]
    if info.file_size != size:
        return [(SIZE, name, str(size), str(info.file_size))]
    hashers = {a: hashing.new(a) for a in expected}
    view = memoryview(buffer)
    try:
        with archive.open(info) as member:
            while n := member.readinto(view):
                for h in hashers.values():
                    h.update(view[:n])
    except zipfile.BadZipFile as err:  # a CRC-32 that does not match the data
        return [(CONTENT, name, f"crc32:{info.CRC:08x}", str(err))]
    return [(CONTENT, name, f"{a}:{expected[a]}", f"{a}:{h.hexdigest()}")
            for a, h in hashers.items() if h.hexdigest() != expected[a]]

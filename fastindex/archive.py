"""The zip of a release, written in one pass: every data file read once.

Exactly the indexed files at the paths ONE loads them from, then the included files,
then the tables.  Each file is read once, no further than its listed size plus one byte
(a file swapped for a huge one costs one byte more than its row, in memory and in the
zip), and that read gives its digests, its CRC-32 (zipfile's) and the zip's copy; an
``fstat`` after it must find the file as it was listed (size and modification time)
and as an ``fstat`` before it found it (size, times, inode: a rewrite in place during
the read that puts the modification time back still moves the ctime), else
``ChangedError`` (``hashing.check_read``).  The tables come last
because they hold the digests of that read.  Entries have fixed timestamps
(``SOURCE_DATE_EPOCH``, else 1980-01-01), attributes and order, so the same tree gives
the same bytes.  On slow storage small files are read ahead by threads; the zip's
SHA-256 is computed on a thread of its own from the bytes as they are written.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastindex import hashing
from fastindex.errors import FastindexError, InputError
from fastindex.gcpause import pauses_gc
from fastindex.progress import progress_bar

COMPRESSION = {"store": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED}
#: The earliest time a zip entry can hold (MS-DOS dates start in 1980).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ChangedError(FastindexError):
    """A file differs from its row (changed since it was indexed): no zip is written."""

    exit_code = 1


#: A zip entry's date and time: year, month, day, hours, minutes, seconds.
DateTime = tuple[int, int, int, int, int, int]


def entry(name: str, size: int, compress_type: int, when: DateTime) -> zipfile.ZipInfo:
    """A zip entry whose header depends only on its name, size, compression and the
    release's ``timestamp()``."""
    info = zipfile.ZipInfo(name, date_time=when)
    info.create_system = 3  # Unix, so the permissions below are read
    info.external_attr = 0o100644 << 16
    info.compress_type = compress_type
    info.file_size = size  # lets zipfile choose ZIP64 before writing
    return info


def folder_entry(name: str, when: DateTime) -> zipfile.ZipInfo:
    """A folder's zip entry (``name/``), as ``entry`` a file's."""
    info = zipfile.ZipInfo(f"{name}/", date_time=when)
    info.create_system = 3
    info.external_attr = (0o40755 << 16) | 0x10  # a folder, for Unix and for MS-DOS
    return info


def timestamp() -> DateTime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return ZIP_EPOCH
    try:
        moment = time.gmtime(int(epoch))
    except ValueError:
        raise InputError(f"SOURCE_DATE_EPOCH is not a number of seconds: {epoch}") from None
    return max(ZIP_EPOCH, (moment.tm_year, moment.tm_mon, moment.tm_mday, moment.tm_hour,
                           moment.tm_min, moment.tm_sec))


@dataclass
class Contents:
    """What a release zip holds, in order."""

    root: Path
    members: list[tuple[str, int, int]]  # (path in the root, size, mtime_ns as listed)
    extra: list[tuple[str, Path]]  # (member name, file) of included files
    #: the tables' member names and bytes, from the members' digests (in their order)
    tables: Callable[[list[dict[str, str]]], dict[str, bytes]]
    algorithms: tuple[str, ...]  # the digests computed while zipping
    compress_type: int
    read_threads: int  # threads reading small files ahead of the writer; 0: none
    #: folders the tables name that hold no file (a session without datasets): a zip
    #: holds them as folder entries, so that it unpacks to what its tables say
    folders: tuple[str, ...] = ()


@pauses_gc  # a ZipInfo per member piles up, without cycles: nothing for the collector
def write_zip(file: BinaryIO, contents: Contents, progress: bool) -> tuple[int, str]:
    """Write the zip to ``file``: (bytes zipped, the zip's SHA-256).  Files below
    ``SMALL_FILE`` are read (and hashed) whole, ahead of the writing by
    ``contents.read_threads`` threads when there are any; larger ones are streamed
    through one buffer."""
    members, algorithms = contents.members, contents.algorithms
    compress_type, when = contents.compress_type, timestamp()
    extra = [(name, path, path.stat()) for name, path in contents.extra]  # their listing
    total = sum(size for _, size, _ in members) + sum(st.st_size for *_, st in extra)
    buffer = bytearray(hashing.CHUNK)
    base = str(contents.root)
    pool = ThreadPoolExecutor(contents.read_threads) if contents.read_threads else None
    stream = None
    try:
        stream, writer = _Stream.buffered(file)
        with zipfile.ZipFile(writer, "w", allowZip64=True) as archive, \
                progress_bar(progress, "zipping", "B", total) as bar:
            digests: list[dict[str, str]] = []
            pending: list = []
            for window in (*_windows(members), []):
                ahead = _read_ahead(pool, base, window, algorithms)
                for (name, size, mtime_ns), outcome in pending:
                    info = entry(name, size, compress_type, when)
                    if outcome is None:  # a large file: streamed from here
                        with archive.open(info, "w") as sink:
                            outcome = _read_into(os.path.join(base, name),
                                                 hashing.Listed(size, mtime_ns),
                                                 algorithms, buffer, sink)
                    elif not isinstance(outcome, OSError):
                        archive.writestr(info, outcome[0])
                    digests.append(_checked(name, outcome))
                    bar.update(size)
                pending = _results(ahead)
            for name, path, st in extra:
                with archive.open(entry(name, st.st_size, compress_type, when), "w") as sink:
                    outcome = _read_into(str(path), st, (), buffer, sink)
                _checked(name, outcome)
                bar.update(st.st_size)
            for folder in contents.folders:
                archive.writestr(folder_entry(folder, when), b"")
            for name, data in contents.tables(digests).items():
                archive.writestr(entry(name, len(data), compress_type, when), data)
        writer.flush()
        return total, stream.sha256()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if stream is not None:
            stream.discard()


class _Stream(io.RawIOBase):
    """The zip file as a stream that cannot seek, hashed as it is written.

    zipfile then writes each entry once, its CRC-32 and sizes in a data descriptor after
    the data (standard since ZIP 2.0, read by every unzip), where on a seekable file it
    would write each header twice, seeking back to patch it: four system calls an entry.
    Written once and in order, the bytes give the zip's SHA-256 without reading it back,
    hashed on a thread of its own (hashlib releases the GIL) so that the writing thread
    does not wait for it.

    zipfile writes about eleven times an entry (header, name, data, descriptor, and four
    writes to the central directory): ``buffered`` puts a ``BufferedWriter`` (C) in
    front, so those calls cost no Python, and this raw stream receives pieces of
    ``HASH_PIECE`` bytes.  ``tell`` counts what it received: zipfile asks where each
    entry starts; ``seekable`` is False, so zipfile never seeks.
    """

    def __init__(self, file) -> None:
        self.file = file
        self._written = 0
        self._discarding = False
        self._sha256 = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="fastindex-sha256")

    @classmethod
    def buffered(cls, file) -> tuple[_Stream, io.BufferedWriter]:
        raw = cls(file)
        return raw, io.BufferedWriter(raw, HASH_PIECE)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._written

    def write(self, data) -> int:
        if self._discarding:  # after a failure, what the writer still holds goes nowhere
            return len(data)
        piece = bytes(data)  # the writer reuses its buffer: the hashing thread gets a copy
        self._hasher.submit(self._sha256.update, piece)
        self.file.write(piece)
        self._written += len(piece)
        return len(piece)

    def sha256(self) -> str:
        """The SHA-256 of everything written (once the buffered writer is flushed)."""
        self._hasher.shutdown(wait=True)
        return self._sha256.hexdigest()

    def discard(self) -> None:
        """Stop: whatever the buffered writer flushes later is dropped."""
        self._discarding = True
        self._hasher.shutdown(wait=False, cancel_futures=True)


#: Bytes of the zip handed to the hashing thread at a time.
HASH_PIECE = 4 << 20


#: Files smaller than this are read whole (by threads ahead of the writer, when it has
#: them), at most ``READ_AHEAD_FILES`` files or ``READ_AHEAD_BYTES`` bytes per window
#: (two windows in memory at a time).
SMALL_FILE = 4 << 20
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


def _read_ahead(pool: ThreadPoolExecutor | None, base: str, window: list,
                algorithms: tuple[str, ...]) -> list[tuple[list, Future[list] | _Read]]:
    """Start reading a window's small files, ``READ_TASK`` files per task (or read them
    now, without a pool)."""
    tasks: list[tuple[list, Future[list] | _Read]] = []
    for i in range(0, len(window), READ_TASK):
        chunk = window[i:i + READ_TASK]
        paths = [(os.path.join(base, name), hashing.Listed(size, mtime_ns))
                 if size < SMALL_FILE else None for name, size, mtime_ns in chunk]
        tasks.append((chunk, pool.submit(_read_some, paths, algorithms) if pool else
                      _Read(_read_some(paths, algorithms))))
    return tasks


class _Read:
    """What a read in the writing thread found, as a future would hold it."""

    def __init__(self, outcome: list) -> None:
        self.outcome = outcome

    def result(self) -> list:
        return self.outcome


def _results(tasks: list[tuple[list, Future[list] | _Read]]) -> list[tuple[tuple, object]]:
    """Each member of a window with what its reader found (None: a large file)."""
    return [pair for chunk, future in tasks for pair in zip(chunk, future.result())]


def _read_some(paths: list[tuple[str, hashing.Listed] | None], algorithms: tuple[str, ...]
               ) -> list:
    return [None if item is None else _read_whole(*item, algorithms) for item in paths]


def _read_whole(path: str, listed: hashing.Listed, algorithms: tuple[str, ...]
                ) -> tuple[bytearray, int, dict] | OSError:
    """A small file's bytes, length and digests from one read of at most its listed size
    plus one byte, checked against its listing (in a thread: reading and hashing release
    the GIL)."""
    try:
        fd, before = hashing.open_listed(path, listed)  # a FIFO put in its place must not block
        with open(fd, "rb", buffering=0) as f:
            data = _read_upto(f, listed.st_size + 1)
            after = os.fstat(fd)
        hashing.check_read(path, listed, before, after, len(data))
    except OSError as err:
        return err
    return data, len(data), {a: hashing.new(a, data).hexdigest() for a in algorithms}


def _read_upto(f: hashing.Readable, limit: int) -> bytearray:
    """At most ``limit`` bytes of ``f``: all of it when it holds no more."""
    data = bytearray(limit)
    total = 0
    with memoryview(data) as view:
        while total < limit and (n := f.readinto(view[total:])):
            total += n
    del data[total:]
    return data


def _read_into(path: str, listed, algorithms: tuple[str, ...], buffer: bytearray, sink
               ) -> tuple[None, int, dict] | OSError:
    """A large file streamed into ``sink``, no further than its listed size plus one
    byte: its length and digests from the same read, checked against its listing."""
    try:
        read, digests = hashing.digest_file(path, algorithms, buffer, sink, listed)
    except OSError as err:
        return err
    return None, read, digests


def _checked(name: str, outcome) -> dict[str, str]:
    """The digests of a read that found the file as it was listed (size, mtime, and
    nothing moved during the read: ``hashing.check_read``), or the release stops."""
    if isinstance(outcome, hashing.ChangedWhileReading):
        raise ChangedError(f"{name} changed since it was listed ({outcome.strerror}); "
                           f"no zip written: run the release again")
    if isinstance(outcome, OSError):
        raise ChangedError(f"{name}: cannot be read since it was indexed: {outcome}; "
                           f"no zip written")
    return outcome[2]

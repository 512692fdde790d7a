"""File digests, streamed in fixed-size chunks so memory stays bounded whatever the size.

md5 is what ONE checks on load (its ``hash`` column); xxh3-128, much cheaper to compute,
goes in an extra ``xxh3`` column that ONE ignores.  ``Digests`` is the one place a
``--hash`` choice is decoded; ``digest_stream`` the one chunked hashing loop, for files
on disk and zip members alike.

Files are untrusted: one may be swapped for a FIFO after it was listed (an open would
block forever), swapped for a huge (sparse) file, or rewritten in place while it is read
(the digest would be of neither version).  Every open is non-blocking.  With what the
listing said (``listed``: an ``os.stat_result``, or a ``Listed`` sent with a task of its
own), ``digest_file`` reads at most one byte more than the listed size, and the file
must still be regular with the listed size, mtime, ctime and inode, as an ``fstat`` of
the open file finds them after the read.  Where the listing knows no ctime or inode
(``update``'s and ``release``'s rows hold size and mtime), an ``fstat`` before the read
must also equal the one after, so a rewrite during the read that puts the mtime back
(``rsync --inplace``) still moves the ctime.  With a full listing (the walk's case),
one ``fstat`` a file, not two: on small files a system call is a visible part of hashing
one.  Without a listing, ``open_regular`` checks before the read and ``fstat`` after
compares with it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Protocol

import xxhash

ALGORITHMS = ("xxh3", "md5")
CHOICES = ("none", "xxh3", "md5", "xxh3+md5")
#: Where each digest goes in the datasets table.
COLUMNS = {"md5": "hash", "xxh3": "xxh3"}
CHUNK = 1 << 20  # 1 MiB: large enough for full read speed, small enough per worker


class Readable(Protocol):
    """What ``digest_stream`` reads: a binary file, a zip member, a response body."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Writable(Protocol):
    """Where ``digest_stream`` copies what it reads (a zip member being written)."""

    def write(self, data: memoryview, /) -> object: ...


@dataclass(frozen=True)
class Digests:
    """The digests a build computes, in ``ALGORITHMS`` order (empty: none)."""

    algorithms: tuple[str, ...] = ()

    @classmethod
    def parse(cls, choice: str | Digests | None) -> Digests:
        """``'xxh3+md5'`` -> ``Digests(('xxh3', 'md5'))``; ``'none'`` or None -> none.

        Raises ``ValueError`` naming the choices for anything else.
        """
        if isinstance(choice, Digests):
            return choice
        if not choice or choice == "none":
            return cls()
        if choice not in CHOICES:
            raise ValueError(f"unknown hash {choice!r}; one of {', '.join(CHOICES)}")
        return cls(tuple(a for a in ALGORITHMS if a in choice.split("+")))

    @property
    def choice(self) -> str:
        """The ``--hash`` spelling: ``none``, ``xxh3``, ``md5`` or ``xxh3+md5``."""
        return "+".join(self.algorithms) or "none"

    @property
    def columns(self) -> list[str]:
        """The datasets table's columns that hold these digests."""
        return [COLUMNS[a] for a in self.algorithms]

    def __bool__(self) -> bool:
        return bool(self.algorithms)


def new(algorithm: str, data: bytes | bytearray = b""):
    """A hasher for ``algorithm``, fed ``data``."""
    if algorithm == "xxh3":
        return xxhash.xxh3_128(data)
    return hashlib.md5(data, usedforsecurity=False)


def digest_stream(source: Readable, algorithms: tuple[str, ...],
                  buffer: bytearray | None = None, sink: Writable | None = None,
                  limit: int | None = None
                  ) -> tuple[int, dict[str, str]]:
    """Read ``source`` to its end once: (bytes read, hex digest per algorithm).

    ``sink`` gets each chunk too (a zip member): a copy from the same read.  ``limit``:
    stop once that many bytes are read (the caller then knows the size is not the one
    it expected).
    """
    hashers = [(a, new(a)) for a in algorithms]
    view = memoryview(buffer if buffer is not None else bytearray(CHUNK))
    total = 0
    while n := source.readinto(view):
        chunk = view[:n]
        for _, h in hashers:
            h.update(chunk)
        if sink is not None:
            sink.write(chunk)
        total += n
        if limit is not None and total >= limit:
            break
    return total, {a: h.hexdigest() for a, h in hashers}


class NotRegularFile(OSError):
    """The path is a FIFO, socket, device or folder now: nothing to read."""


class ChangedWhileReading(OSError):
    """The file's size, mtime, ctime or inode moved during the read, or since it was
    listed; or it holds more (or fewer) bytes than listed."""


@dataclass(frozen=True)
class Listed:
    """What a listing said of a file, sent with a file hashed as a task of its own (a
    picklable record; its fields are named as ``os.stat_result``'s, so either may be
    passed as ``listed``).  None: not known to the listing."""

    st_size: int
    st_mtime_ns: int | None = None
    st_ctime_ns: int | None = None
    st_ino: int | None = None
    etag: str | None = None  # a bucket's object: what a rewrite changes

    @classmethod
    def of(cls, st) -> Listed:
        """The record of a walk's stat: a file's ``os.stat_result`` (size, mtime, ctime,
        inode), or an object's ``ObjectStat`` (size, mtime, ETag)."""
        etag = getattr(st, "etag", None)
        if etag is not None:
            return cls(st.st_size, st.st_mtime_ns, etag=etag)
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
#: What an ``fstat`` after a read must find as the listing (or the ``fstat`` before) had it.
_STAMP = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """A descriptor on the regular file at ``path`` and its ``fstat``; never blocks (a
    FIFO opened without a writer would), and refuses what is not a regular file."""
    fd = os.open(path, _READ_FLAGS)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, "not a regular file", path)
    return fd, st


def open_listed(path: str, listed) -> tuple[int, os.stat_result | None]:
    """A descriptor on the file at ``path`` for a read bounded by ``listed``'s size, and
    the ``fstat`` before the read where the listing lacks a ctime or an inode (None
    otherwise: the bounded read cannot run forever, so one ``fstat`` after it is enough).
    """
    if all(getattr(listed, name, None) is not None for name in _STAMP):
        return os.open(path, _READ_FLAGS), None
    return open_regular(path)


def check_read(path: str, listed, before: os.stat_result | None, after: os.stat_result,
               read: int) -> None:
    """Refuse a bounded read of ``path`` that did not find the file as listed:
    ``NotRegularFile``, or ``ChangedWhileReading`` when the ``fstat`` after the read
    differs from the one ``before`` it or from what ``listed`` knows (size, mtime, ctime,
    inode), or when ``read`` (bytes) is not the listed size."""
    if not stat.S_ISREG(after.st_mode):
        raise NotRegularFile(errno.EINVAL, "not a regular file", path)
    if before is not None and _stamp(after) != _stamp(before):
        raise ChangedWhileReading(errno.EAGAIN, "modified while it was read", path)
    for name in _STAMP:
        value = getattr(listed, name, None)
        if value is not None and getattr(after, name) != value:
            raise ChangedWhileReading(errno.EAGAIN, "modified since it was listed", path)
    if read != listed.st_size:
        more = "at least " if read > listed.st_size else ""
        raise ChangedWhileReading(errno.EAGAIN, f"{listed.st_size} bytes when listed, "
                                  f"{more}{read} when read", path)


def digest_file(path: str, algorithms: tuple[str, ...], buffer: bytearray | None = None,
                sink: Writable | None = None, listed=None) -> tuple[int, dict[str, str]]:
    """``digest_stream`` of the regular file at ``path``; ``ChangedWhileReading`` when it
    moved while read, or (``listed``: what its listing said, an ``os.stat_result`` or a
    ``Listed``) since it was listed, read then no further than its listed size plus one
    byte (see the module's docstring)."""
    if listed is not None:
        fd, before = open_listed(path, listed)
    else:
        fd, before = open_regular(path)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as f:
            result = digest_stream(f, algorithms, buffer, sink,
                                   None if listed is None else listed.st_size + 1)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if listed is not None:
        check_read(path, listed, before, after, result[0])
    elif before is None or _stamp(after) != _stamp(before):
        raise ChangedWhileReading(errno.EAGAIN, "modified while it was read", path)
    return result


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino

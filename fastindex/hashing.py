"""File digests, streamed in fixed-size chunks so memory stays bounded whatever the size.

md5 is what ONE checks on load (its ``hash`` column); xxh3-128, much cheaper to compute,
goes in an extra ``xxh3`` column that ONE ignores.  ``Digests`` is the one place a
``--hash`` choice is decoded; ``digest_stream`` the one chunked hashing loop, for files
on disk and zip members alike.

Files are untrusted: one may be swapped for a FIFO after it was listed (an open would
block forever), or rewritten in place while it is read (the digest would be of neither
version).  Every open is non-blocking.  With the listing's stat (the walk's case),
``digest_file`` reads at most one byte more than the listed size and then makes one
``fstat``: a file that is no longer regular (a FIFO, a device: the bounded read cannot
run forever) or whose size, mtime or ctime differ from the listing's is refused.  One
``fstat`` a file, not two: on small files a system call is a visible part of hashing
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


def new(algorithm: str, data: bytes = b""):
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
    """The file's size, mtime or ctime moved during the read, or since it was listed."""


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


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


def digest_file(path: str, algorithms: tuple[str, ...], buffer: bytearray | None = None,
                sink: Writable | None = None, listed: os.stat_result | None = None
                ) -> tuple[int, dict[str, str]]:
    """``digest_stream`` of the regular file at ``path``; ``ChangedWhileReading`` when it
    moved while read, or (``listed``: the listing's stat) since it was listed."""
    if listed is not None:
        return _digest_listed(path, algorithms, buffer, listed)
    fd, before = open_regular(path)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as f:
            result = digest_stream(f, algorithms, buffer, sink)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _stamp(after) != _stamp(before):
        raise ChangedWhileReading(errno.EAGAIN, "modified while it was read", path)
    return result


def _digest_listed(path: str, algorithms: tuple[str, ...], buffer: bytearray | None,
                   listed: os.stat_result) -> tuple[int, dict[str, str]]:
    """A listed file's digests from one bounded read and one ``fstat`` after it."""
    fd = os.open(path, _READ_FLAGS)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as f:
            result = digest_stream(f, algorithms, buffer, limit=listed.st_size + 1)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(after.st_mode):
        raise NotRegularFile(errno.EINVAL, "not a regular file", path)
    if _stamp(after) != _stamp(listed):
        raise ChangedWhileReading(errno.EAGAIN, "modified since it was listed", path)
    return result


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns

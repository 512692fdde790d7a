"""File digests, streamed in fixed-size chunks so memory stays bounded whatever the size.

md5 is what ONE checks on load (its ``hash`` column); xxh3-128 is about 15 times faster
and goes in an extra ``xxh3`` column that ONE ignores.  ``Digests`` is the one place a
``--hash`` choice is decoded; ``digest_stream`` the one chunked hashing loop, for files
on disk and zip members alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

import xxhash

ALGORITHMS = ("xxh3", "md5")
CHOICES = ("none", "xxh3", "md5", "xxh3+md5")
#: Where each digest goes in the datasets table.
COLUMNS = {"md5": "hash", "xxh3": "xxh3"}
CHUNK = 1 << 20  # 1 MiB: large enough for full read speed, small enough per worker


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


def digest_stream(source: BinaryIO, algorithms: tuple[str, ...], buffer: bytearray | None = None,
                  sink: BinaryIO | None = None) -> tuple[int, dict[str, str]]:
    """Read ``source`` to its end once: (bytes read, hex digest per algorithm).

    ``sink`` gets each chunk too (a zip member): a copy from the same read.
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
    return total, {a: h.hexdigest() for a, h in hashers}


def digest_file(path: str, algorithms: tuple[str, ...], buffer: bytearray | None = None,
                sink: BinaryIO | None = None) -> tuple[int, dict[str, str]]:
    """``digest_stream`` of the file at ``path``."""
    with open(path, "rb", buffering=0) as f:
        return digest_stream(f, algorithms, buffer, sink)

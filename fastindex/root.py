"""The tree a command indexes: a ``Root``, a local folder or a bucket.

A root is the one place that knows what kind of tree it is: how its folders are listed
(a ``Lister``), how a small file at its top is read (the ignore file), how a file's
digests are taken, which of its files are fastindex's own, what warnings the root
itself deserves, whether a set of workers can reach it, and where a root-relative
path is.  Everything above (the engine, discovery, the workers, the commands) asks the
root and never tests its kind.  Both kinds are frozen dataclasses: a root travels to
the workers inside the build's plan.

``open_root`` is the one function that turns what the user typed into a root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fastindex.errors import InputError

if TYPE_CHECKING:
    from fastindex.folderlister import IoThreads
    from fastindex.problems import Problem
    from fastindex.spec import RunSettings

#: (root-relative folder, name) -> whether a lister goes on below a subfolder.
Descend = Callable[[str, str], bool]


class Pool(Protocol):
    """Threads a lister lends to reads (hashing on slow storage)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future | None:
        """Run ``fn(*args)`` on a thread; None when there are none (run it in line)."""


class Lister(Protocol):
    """Lists a tree's folders for ``walk.walk``, ahead of the walk where it can.

    Paths are the root's (``Root.join``); entries look like ``os.DirEntry`` (``name``,
    ``path``, ``is_dir``, ``is_file``, ``is_symlink``, ``stat``).  ``entries`` raises
    ``OSError`` for a folder that cannot be listed; the walk reports it.
    """

    @property
    def pool(self) -> Pool:
        """The threads reads may run on (none on a fast local disk)."""

    def __enter__(self) -> Lister: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(self, path: str, rel: str) -> None:
        """Begin listing ``path`` (root-relative ``rel``) and the folders below it."""

    def start_all(self, folders: list[tuple[str, str]]) -> None:
        """``start`` each of a worker's batch of (path, rel), listed ahead as a whole."""

    def entries(self, path: str, rel: str) -> list:
        """The entries of the folder ``path``."""

    def is_folder(self, path: str) -> bool:
        """Whether ``path`` is a folder (holds entries), without raising."""


@runtime_checkable
class Root(Protocol):
    """A tree to index (see the module's docstring)."""

    #: worker processes per CPU by default: more where workers wait on requests
    workers_per_cpu: int
    #: rows keep each object's ETag (an ``etag`` column): what a rewrite changes
    keeps_etags: bool
    #: the parent's walk stops at subject folders and hands them to the workers, unlisted
    #: (a bucket: a worker lists its subjects as ranges of keys, so the parent makes no
    #: request a subject); else it stops at date folders
    hands_off_subjects: bool

    @property
    def top(self) -> str:
        """The root's own path, as its listers take it."""

    def join(self, rel: str) -> str:
        """The path of a root-relative posix path ``rel`` ('' is the root)."""

    def lister(self, io: IoThreads, descend: Descend, probe_path: str | None = None,
               stat_files: bool = False) -> Lister:
        """A lister of this tree; ``descend`` says which subfolders to list ahead;
        ``probe_path``: the part of the tree it will list (its storage may differ from the
        top's); ``stat_files``: fetch files' stats with the listing."""

    def read_small(self, name: str, cap: int) -> bytes | None:
        """The bytes of the file ``name`` at the top (None when there is none), refused
        (``InputError``) when larger than ``cap`` or not a plain file."""

    def digest(self, path: str, algorithms: tuple[str, ...], buffer: bytearray,
               listed: Any = None) -> tuple[int, dict[str, str]]:
        """One read of a file: (bytes read, digests); ``listed``: what its listing said
        (its stat, or a ``hashing.Listed``), which the read must still find
        (``hashing.ChangedWhileReading`` otherwise), reading no further than its size
        plus one byte."""

    def own_files(self) -> frozenset[str]:
        """fastindex's files in the tree (tables, lock, ignore file): never reported."""

    def warnings(self) -> list[Problem]:
        """What the root itself deserves a warning for."""

    def link_prefix(self) -> str:
        """The real path of the root and a separator: a file link resolving outside it
        is reported; '' where there are no links."""

    def io_found(self) -> IoThreads | None:
        """What this process found of the storage's speed, for the workers; None when
        there is nothing to tell."""

    def readable_here(self) -> bool | str:
        """True when this process can read the tree, else why not: run on each worker
        of a cluster before any task (``dask_backend``)."""

    def tables_folder(self, given: str | os.PathLike | None, option: str
                      ) -> str | os.PathLike:
        """Where a command's tables are: ``given``, else the root when it can hold them
        (``option`` names the command-line option that gives another folder)."""


@dataclass(frozen=True)
class LocalRoot:
    """A folder on a file system this machine mounts (local disk, NFS, Lustre, FUSE)."""

    path: Path  # resolved
    workers_per_cpu = 1
    keeps_etags = False
    hands_off_subjects = False

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def top(self) -> str:
        return str(self.path)

    def join(self, rel: str) -> str:
        return os.path.join(self.path, rel) if rel else str(self.path)

    def lister(self, io: IoThreads, descend: Descend, probe_path: str | None = None,
               stat_files: bool = False) -> Lister:
        from fastindex.folderlister import FolderLister

        return FolderLister(io, descend, probe_path or str(self.path), stat_files)

    def read_small(self, name: str, cap: int) -> bytes | None:
        from fastindex.safefile import read_regular

        return read_regular(self.path / name, cap, "ignore file")

    def digest(self, path: str, algorithms: tuple[str, ...], buffer: bytearray,
               listed: Any = None) -> tuple[int, dict[str, str]]:
        from fastindex import hashing

        return hashing.digest_file(path, algorithms, buffer, listed=listed)

    def own_files(self) -> frozenset[str]:
        from fastindex.ignore import IGNORE_FILE
        from fastindex.store import TableStore

        return TableStore(self.path).own_files() | {self.join(IGNORE_FILE)}

    def warnings(self) -> list[Problem]:
        """A root that is a lab's ``Subjects`` folder: loadable rows, but without the lab."""
        from fastindex import alf
        from fastindex import problems as p
        from fastindex.problems import Problem

        lab = alf.lab_around(self.path.as_posix())
        if lab is None:
            return []
        return [Problem(".", p.LAB_ABOVE_ROOT,
                        f"the root is inside lab {lab}: the rows have no lab; index "
                        f"{self.path.parent.parent} to keep it")]

    def link_prefix(self) -> str:
        return os.path.join(self.path, "")

    def io_found(self) -> IoThreads | None:
        from fastindex.folderlister import finding

        return finding(str(self.path))

    def readable_here(self) -> bool | str:
        """Workers see the folder through the same path (a shared filesystem)."""
        return os.path.isdir(self.path) or (
            f"cannot see {self.path}; the workers must read the tree through the same "
            f"path, on a shared filesystem")

    def tables_folder(self, given: str | os.PathLike | None, option: str
                      ) -> str | os.PathLike:
        return self.path if given is None else given


def open_root(given: str | os.PathLike | Root, settings: RunSettings | None = None
              ) -> Root:
    """The root the user named, checked, or a clear refusal before any work is done.

    An ``s3://`` URL is a bucket's tree where ``settings`` (its endpoint and signing)
    are given: the commands that only read (build, check, update, verify) take buckets.
    A ``Root`` the caller made is taken as it is.
    """
    from fastindex import bucket

    if isinstance(given, Root):
        return given

    if settings is not None and bucket.is_url(given):
        return bucket.open_bucket(str(given), settings.endpoint_url, settings.anonymous)
    return open_folder(given)


def open_folder(given: str | os.PathLike) -> LocalRoot:
    """A local folder the user named, resolved, or a clear refusal (a bucket's URL too:
    the commands that write into the tree take folders only)."""
    from fastindex import bucket

    if bucket.is_url(given):
        raise InputError(f"this command takes a local folder, not a bucket: {given}")
    path = Path(given).expanduser()
    if not path.exists():
        raise InputError(f"root does not exist: {path}")
    if not path.is_dir():
        raise InputError(f"root is not a folder: {path}")
    return LocalRoot(path.resolve())

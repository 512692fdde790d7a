"""The tables of a folder: the only code that finds, locks, reads and writes them.

``TableStore(folder)`` holds a folder's ``sessions.pqt`` and ``datasets.pqt``.  ``lock``
lets one writer at a time in; ``read`` gives both tables and their provenance, or a
one-line ``InputError`` when they are missing or damaged; ``write`` writes an index's
two tables (with provenance) beside their final names and renames both into place.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex.errors import InputError, write_failure
from fastindex.gcpause import pauses_gc
from fastindex.progress import counted, human_bytes
from fastindex.safefile import TEMP_SUFFIX, is_temporary, open_untrusted
from fastindex.tablecheck import check_tables
from fastindex.version import __version__

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from fastindex.engine import TreeIndex
    from fastindex.problems import Problem
    from fastindex.spec import BuildSpec

TABLE_FILES = ("sessions.pqt", "datasets.pqt")
LOCK_FILE = ".fastindex.lock"


@dataclass
class StoredTables:
    """Both tables of a folder as read, with what fastindex recorded in them."""

    sessions: pl.DataFrame
    datasets: pl.DataFrame
    provenance: dict | None  # the datasets table's ``fastindex`` entry; None: another tool's
    build_ids: tuple[str | None, str | None]  # of the sessions and the datasets table


@dataclass
class BuildResult:
    """What a build wrote and what it left out."""

    sessions_path: Path | None  # None: a release of a read-only tree (in its zip only)
    datasets_path: Path | None
    n_sessions: int
    n_datasets: int
    total_bytes: int
    skipped: pl.DataFrame  # path, reason, detail: every file not indexed
    warnings: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    build_id: str = ""
    ignored: int = 0  # entries the ignore rules passed over (a folder counts once)
    tables: dict[str, pa.Table] = field(default_factory=dict, repr=False)  # as written

    def summary(self) -> str:
        """The one line the CLI prints at the end of a build."""
        return (f"{counted(self.n_sessions, 'session')}, "
                f"{counted(self.n_datasets, 'dataset')}, "
                f"{self.skipped.height} skipped, {counted(len(self.warnings), 'warning')}, "
                f"{self.ignored} ignored, {human_bytes(self.total_bytes)}, "
                f"{self.seconds:.2f} s")


class TableStore:
    """A folder's two tables."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths = tuple(folder / name for name in TABLE_FILES)

    @classmethod
    def output(cls, out_dir: str | os.PathLike, create: bool = False) -> TableStore:
        """The store of a folder tables may be written to, or a clear refusal.

        With ``create``, a missing folder is made when its parent exists (a typo in a
        deeper path is refused rather than built).
        """
        out_path = Path(out_dir).expanduser().resolve()
        if create and not out_path.exists() and out_path.parent.is_dir():
            try:
                out_path.mkdir()
            except OSError as err:
                raise InputError(f"cannot create the output folder {out_path}: {err}") from None
        if out_path.exists() and not out_path.is_dir():
            raise InputError(f"the output {out_path} is a file, not a folder")
        if not out_path.is_dir():
            raise InputError(f"output folder does not exist: {out_path}")
        if not os.access(out_path, os.W_OK | os.X_OK):
            raise InputError(f"output folder is not writable: {out_path}")
        return cls(out_path)

    def own_files(self) -> frozenset[str]:
        """fastindex's own files here (tables, lock): never reported as skipped."""
        return frozenset(str(self.folder / name) for name in (*TABLE_FILES, LOCK_FILE))

    def read(self, missing: str = "no tables in {folder}") -> StoredTables:
        """Both tables and their provenance; ``missing`` is the refusal when there are
        none (``{folder}`` is filled in)."""
        import polars as pl

        for path in self.paths:
            if not path.is_file():
                raise InputError(missing.format(folder=self.folder, path=path))
        metas = [_fastindex_meta(path) for path in self.paths]
        try:
            sessions, datasets = (_read_table(pl, path) for path in self.paths)
        except InputError:
            raise
        except Exception as err:  # polars raises several types for a damaged file
            raise InputError(f"cannot read the tables in {self.folder}: {err}") from None
        check_tables(sessions, datasets, f"the tables in {self.folder}")
        ids = tuple(m.get("build_id") if m else None for m in metas)
        return StoredTables(sessions, datasets, metas[1], ids)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time per folder; a second one is refused, not queued.

        The lock is ``flock`` on the folder itself, so no file of fastindex's is left in
        a tree that gets published, and the kernel releases it when a build dies.  Where
        folders cannot be locked (``flock`` on NFS is a byte-range lock, which needs a
        file open for writing) a lock file is used instead, and removed on the way out.
        """
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            try:
                _flock(fd, self.folder)
                folder_locked = True
            except OSError as err:
                if err.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                folder_locked = False
            if folder_locked:
                self._settle()
                yield
            else:
                with _lock_file(self.folder / LOCK_FILE):
                    self._settle()
                    yield
        finally:
            os.close(fd)

    def _settle(self) -> None:
        """Finish the table swap a killed writer left half done, and remove the
        temporary tables it left (the lock is held: no writer is running).

        ``sessions.pqt`` is renamed into place first, so a ``.datasets.pqt.ID.tmp``
        beside a ``sessions.pqt`` of build ``ID`` is complete (both were flushed before
        the first rename) and is the other half of the pair: it is renamed in.  Any other
        leftover is removed.
        """
        try:
            leftovers = [n for n in os.listdir(self.folder) if is_temporary(n, TABLE_FILES)]
        except OSError:
            return
        for name in sorted(leftovers):
            path = self.folder / name
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # not a file fastindex made
            tag = name[len(".datasets.pqt."):-len(TEMP_SUFFIX)]
            if (name.startswith(".datasets.pqt.") and self._build_id(0) == tag
                    and self._build_id(1) != tag):
                os.replace(path, self.paths[1])
            else:
                path.unlink(missing_ok=True)

    def _build_id(self, table: int) -> str | None:
        try:
            meta = _fastindex_meta(self.paths[table])
        except InputError:
            return None
        build_id = meta.get("build_id") if meta else None
        return build_id if isinstance(build_id, str) else None

    @pauses_gc
    def write(self, index: TreeIndex, spec: BuildSpec, started: float) -> BuildResult:
        """Write an index's two tables, with fastindex's provenance, atomically."""
        return self.write_rendered(render(index, spec), started)

    def write_rendered(self, rendered: Rendered, started: float) -> BuildResult:
        """Write tables already rendered (``render``), atomically."""
        from fastindex import tables

        try:
            tables.write_tables(self.folder, rendered.tables, rendered.build_id)
        except OSError as err:
            failure = write_failure(err, self.folder, "the tables",
                                    "the previous tables are as they were")
            if failure is None:
                raise
            raise failure from None
        return rendered.result(self.paths, started)


@dataclass
class Rendered:
    """An index's two tables as they are written (Arrow, metadata included), before
    they are: a release puts them in its zip, and in a folder when it has one."""

    index: TreeIndex
    tables: dict[str, pa.Table]
    build_id: str
    total_bytes: int

    def result(self, paths: tuple[Path, Path] | tuple[None, None], started: float
               ) -> BuildResult:
        index = self.index
        return BuildResult(*paths, index.sessions.height, index.datasets.height,
                           self.total_bytes, index.skipped, index.warnings,
                           time.perf_counter() - started, self.build_id, index.ignored,
                           self.tables)


@pauses_gc
def render(index: TreeIndex, spec: BuildSpec) -> Rendered:
    """An index's two tables with fastindex's provenance, as they will be written."""
    from fastindex import tables

    build_id = str(uuid.uuid4())
    counts = {"sessions": index.sessions.height, "datasets": index.datasets.height,
              "skipped": index.skipped.height, "warnings": len(index.warnings),
              "ignored": index.ignored,
              "bytes": int(index.datasets["file_size"].sum() or 0)}
    metadata = {
        "one_metadata": tables.one_metadata(index.root, datetime.datetime.now()),
        "fastindex": {"version": __version__, "build_id": build_id,
                      "options": spec.to_provenance(), "counts": counts,
                      "ignore_rules": list(index.rules.patterns),
                      "listed_at_ns": index.listed_at_ns},
    }
    arrow = {"sessions.pqt": tables.sessions_table(index.sessions),
             "datasets.pqt": tables.datasets_table(index.datasets,
                                                   record_mtime=bool(spec.digests))}
    return Rendered(index, tables.finished(arrow, metadata, id_index=spec.uuid_ids),
                    build_id, counts["bytes"])


def _read_table(pl, path: Path) -> pl.DataFrame:
    """A table, read without following a link (old tables are untrusted)."""
    with open_untrusted(path, "table") as f:
        return pl.read_parquet(f)


def _fastindex_meta(path: Path) -> dict | None:
    """A table's ``fastindex`` metadata (None: not written by fastindex)."""
    import pyarrow.parquet as pq

    try:
        with open_untrusted(path, "table") as f:
            meta = pq.read_schema(f).metadata or {}
    except InputError:
        raise
    except Exception as err:  # Arrow raises several types for a damaged file
        raise InputError(f"cannot read {path}: {err}") from None
    if b"fastindex" not in meta:
        return None
    try:
        value = json.loads(meta[b"fastindex"])
    except ValueError:
        raise InputError(f"{path}: its fastindex metadata is not JSON") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: its fastindex metadata is not an object")
    return value


def _flock(fd: int, where: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"another fastindex build is writing tables in {where}; "
                         f"try again when it has finished") from None


@contextlib.contextmanager
def _lock_file(path: Path) -> Iterator[None]:
    """A lock file that is removed when released.

    Removing it is safe because a waiter checks, once it holds the lock, that the file
    it locked is still the one at ``path``; if not, it locked a removed file and tries
    again on the new one.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(f"cannot create the lock file {path}: {err}") from None
        try:
            _flock(fd, path.parent)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    os.unlink(path)
                return
        finally:
            os.close(fd)

"""The tables of a folder: the only code that locks, reads and replaces them.

``TableStore(folder)`` holds a folder's ``sessions.pqt`` and ``datasets.pqt``.  ``lock``
lets one writer at a time in; ``read`` gives both tables and their provenance, checked,
or a one-line ``InputError`` when they are missing or damaged; ``write`` writes an
index's two tables (with provenance) beside their final names and swaps both into place.

The swap is here and only here: both tables are written and flushed as
``.NAME.<build id>.tmp``, then renamed into place in ``TABLE_FILES`` order, sessions
first.  So a writer killed between the two renames leaves a complete
``.datasets.pqt.<build id>.tmp`` beside a ``sessions.pqt`` of that build id, and the next
writer, once it holds the lock, renames it in (``_settle``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex.errors import InputError, Interrupted, write_failure
from fastindex.gcpause import pauses_gc
from fastindex.provenance import recorded, render, uuid_names
from fastindex.results import BuildResult, Rendered, StoredTables
from fastindex.safefile import TEMP_SUFFIX, is_temporary, open_untrusted
from fastindex.tablecheck import check_tables
from fastindex.tablefiles import TABLE_FILES

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from fastindex.engine import TreeIndex
    from fastindex.spec import BuildSpec

LOCK_FILE = ".fastindex.lock"


class TableStore:
    """A folder's two tables."""

    def __init__(self, folder: Path,
                 between_renames: Callable[[], object] | None = None) -> None:
        self.folder = folder
        self.paths = tuple(folder / name for name in TABLE_FILES)
        #: called between the two renames of a swap, with SIGINT and SIGTERM held (a
        #: test sends one there, or makes the second rename fail)
        self.between_renames = between_renames

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
        if read_only(out_path):
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
        metas = [recorded(path) for path in self.paths]
        try:
            sessions, datasets = (_read_table(pl, path) for path in self.paths)
        except InputError:
            raise
        except Exception as err:  # polars raises several types for a damaged file
            raise InputError(f"cannot read the tables in {self.folder}: {err}") from None
        check_tables(sessions, datasets, f"the tables in {self.folder}")
        _, datasets_meta = metas
        ids = tuple(m.get("build_id") if m else None for m in metas)
        return StoredTables(sessions, datasets, datasets_meta, (ids[0], ids[1]),
                            uuid_names(datasets_meta, f"the tables in {self.folder}"))

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

        The tables are renamed into place in ``TABLE_FILES`` order (``_swap``), so a
        temporary of the last one beside a first one of its build id is complete (both
        were flushed before the first rename) and is the other half of the pair: it is
        renamed in.  Any other leftover is removed.
        """
        try:
            leftovers = [n for n in os.listdir(self.folder) if is_temporary(n, TABLE_FILES)]
        except OSError:
            return
        prefix = _temp_name(TABLE_FILES[-1], "")[:-len(TEMP_SUFFIX)]  # '.datasets.pqt.'
        for name in sorted(leftovers):
            path = self.folder / name
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # not a file fastindex made
            tag = name[len(prefix):-len(TEMP_SUFFIX)]
            if (name.startswith(prefix) and self._build_id(0) == tag
                    and self._build_id(1) != tag):
                os.replace(path, self.paths[1])
            else:
                path.unlink(missing_ok=True)

    def build_ids(self) -> tuple[str | None, str | None]:
        """The build id each table in place records (None: none, or no table)."""
        return self._build_id(0), self._build_id(1)

    def _build_id(self, table: int) -> str | None:
        try:
            meta = recorded(self.paths[table])
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
        renamed = [False]
        try:
            self._swap(rendered.tables, rendered.build_id, renamed)
        except OSError as err:
            failure = write_failure(err, self.folder, "the tables", (
                "the sessions table is the new one; the next write in this folder puts "
                "the new datasets table in place" if renamed[0] else
                "the previous tables are as they were"))
            if failure is None:
                raise
            raise failure from None
        sessions_path, datasets_path = self.paths
        return rendered.result((sessions_path, datasets_path), started)

    def _swap(self, tables: dict[str, pa.Table], build_id: str,
              renamed: list[bool] | None = None) -> None:
        """Write both tables (``tables``: file name to table) beside their final names,
        flushed, then rename them into place in ``TABLE_FILES`` order.

        ``build_id`` makes the temporary names unique to this build.  A failure before
        the renames leaves the previous tables untouched and removes the temporary files.
        The two renames happen with SIGINT and SIGTERM held, so that a Ctrl-C or a
        SIGTERM between them lands after both; once the first is done the datasets
        temporary is never removed here, so a failure (or SIGKILL) between them leaves
        what ``_settle`` finishes.  ``renamed[0]`` says whether the first rename happened.
        """
        import pyarrow.parquet as pq

        renamed = renamed if renamed is not None else [False]
        temps = [self.folder / _temp_name(name, build_id) for name in TABLE_FILES]
        try:
            for name, temp in zip(TABLE_FILES, temps):
                # Created exclusively, never through a link planted at that name.
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as f:
                    pq.write_table(tables[name], f)
                    f.flush()
                    os.fsync(fd)
            try:
                with _signals_held():
                    os.replace(temps[0], self.paths[0])
                    renamed[0] = True
                    if self.between_renames is not None:
                        self.between_renames()
                    os.replace(temps[1], self.paths[1])
            except KeyboardInterrupt:
                if not renamed[0]:
                    raise
                raise Interrupted(f"the new tables are in {self.folder}" if
                                  not os.path.lexists(temps[1]) else
                                  f"the new sessions table is in {self.folder}; the next "
                                  f"write there puts the new datasets table in place"
                                  ) from None
        finally:
            if not renamed[0]:
                for temp in temps:
                    temp.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (recorded, not lost) while the block runs, and are sent
    again, to their own handlers, after it.

    A handler, not a signal mask: a mask holds a signal off one thread only, and the
    kernel gives a signal sent to the process to any thread that does not hold it off
    (pyarrow's and polars' threads do not), where its default action ends the process
    at once.  Handlers are the process's.  Only the main thread can set them; elsewhere
    the block runs as it is.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None and handler != signal.SIG_IGN:  # None: not set from Python
            previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for held in dict.fromkeys(pending):
            os.kill(os.getpid(), held)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _temp_name(name: str, build_id: str) -> str:
    """Where a table is written before it is renamed into place: ``.NAME.BUILD_ID.tmp``."""
    return f".{name}.{build_id}{TEMP_SUFFIX}"


def _read_table(pl, path: Path) -> pl.DataFrame:
    """A table, read without following a link (old tables are untrusted)."""
    with open_untrusted(path, "table") as f:
        return pl.read_parquet(f)


def _flock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"another fastindex build is writing tables in {path}; "
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
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
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


def read_only(folder: Path) -> bool:
    """True for a folder fastindex writes no table into: one this process may not
    write, or whose mode has no write bit for anyone.  A tree made read-only (``chmod
    -R a-w``) stays so for root, who may write anywhere: the mode says what its owner
    meant.  (``release`` leaves a read-only tree's tables in its zip only; ``build``
    and ``update`` refuse, and say to give another folder.)"""
    return not (os.access(folder, os.W_OK | os.X_OK) and folder.stat().st_mode & 0o222)

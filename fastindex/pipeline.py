"""The pipeline, end to end: discover, partition, index in workers, merge, write.

``index_tree`` (stages 1 to 4a) and ``write_index`` (4b) are the one place that knows
every stage; each stage's module knows only its own inputs.  The index stage runs behind
``concurrent.futures.Executor`` (``executors.py``): worker processes by default, the
calling process itself for ``workers=1``, or any executor passed in (a Dask cluster's).

Arrow and polars are imported only once the workers are running (see ``index_tree``):
the parent forks them as a small single-threaded process, then loads the merge stage's
libraries while they index.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import gc
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

try:
    import fcntl
except ImportError:  # Windows: builds are not locked
    fcntl = None

from fastindex import __version__, alf, discover, hashing, ignore, scan
from fastindex import problems as p
from fastindex.discover import Folder, Session
from fastindex.errors import FastindexError, InputError, LabError, ProblemsFound
from fastindex.executors import default_workers, executor_for, given_executor
from fastindex.index import BatchResult, IndexOptions, hash_files, index_sessions, read_problem
from fastindex.problems import Problem
from fastindex.progress import progress_bar

if TYPE_CHECKING:
    import polars as pl
    from tqdm import tqdm

#: Ids are uuid3 in this namespace unless another is given, so a tree always gets the same ids.
DEFAULT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "fastindex:alf")
TABLE_FILES = ("sessions.pqt", "datasets.pqt")
LOCK_FILE = ".fastindex.lock"
#: When hashing, files this large are hashed as tasks of their own (work balance).
DEFER_SIZE = 64 << 20


@dataclass(frozen=True)
class BuildOptions:
    """Everything that changes what a build writes; recorded in the tables' metadata."""

    hash_ids: bool = True
    namespace: str = str(DEFAULT_NAMESPACE)
    lab: str | None = None
    follow_symlinks: bool = False
    hash: str = "none"
    exclude: tuple[str, ...] = ()  # ignore patterns besides the root's .fastindexignore
    default_ignores: bool = True  # ignore OS litter (.DS_Store, Thumbs.db, ...)


@dataclass
class BuildResult:
    """What a build wrote and what it left out."""

    sessions_path: Path
    datasets_path: Path
    n_sessions: int
    n_datasets: int
    total_bytes: int
    skipped: pl.DataFrame  # path, reason, detail: every file not indexed
    warnings: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    build_id: str = ""
    ignored: int = 0  # entries the ignore rules passed over (a folder counts once)

    def summary(self) -> str:
        """The one line the CLI prints at the end of a build."""
        return (f"{self.n_sessions} sessions, {self.n_datasets} datasets, "
                f"{self.skipped.height} skipped, {len(self.warnings)} warnings, "
                f"{self.ignored} ignored, {human_bytes(self.total_bytes)}, "
                f"{self.seconds:.2f} s")


def build(root: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
          workers: int | None = None, io_threads: int | None = None, hash_ids: bool = True,
          namespace: str | uuid.UUID | None = None, lab: str | None = None,
          follow_symlinks: bool = False, hash: str | None = None,
          exclude: Iterable[str] = (), default_ignores: bool = True, strict: bool = False,
          not_data: Iterable[str | os.PathLike] = (),
          executor: Executor | None = None, client=None, scheduler: str | None = None,
          start_method: str | None = None, progress: bool = False) -> BuildResult:
    """Index the ALF tree under ``root`` and write ``sessions.pqt`` and ``datasets.pqt``.

    The tables go to ``out_dir`` (default: the root).  ``workers`` defaults to the CPUs
    this process may use; ``workers=1`` runs in this process.  ``io_threads``: listings
    and stats in flight per process, for network storage (default: the
    ``FASTINDEX_IO_THREADS`` environment variable, else none until listings are timed
    slow, then 16; see ``scan.py``).  ``hash`` is one of
    ``none``, ``xxh3``, ``md5``, ``xxh3+md5``: md5 goes in ONE's ``hash`` column, xxh3 in
    an extra ``xxh3`` column.  ``exclude``: gitignore patterns of paths that are not data,
    besides the root's ``.fastindexignore``; ``default_ignores=False`` reports OS litter
    (``.DS_Store``...) as problems instead of ignoring it.  ``strict``: raise
    ``ProblemsFound`` and write nothing when any file would be skipped or any warning
    given.  ``not_data``: files under the root that are neither rows nor problems (a
    release's zip and its included files).  ``executor`` replaces the process pool (any
    ``concurrent.futures.Executor``); ``client`` (a Dask client) or ``scheduler`` (a
    Dask scheduler address, or ``local:N``) run the batches on a Dask cluster instead;
    ``start_method`` picks the multiprocessing start method of the default pool.
    """
    started = time.perf_counter()
    root_path, out_path = check_paths(root, out_dir, create=True)
    ns = uuid.UUID(str(namespace)) if namespace else DEFAULT_NAMESPACE
    options = BuildOptions(hash_ids, str(ns), lab, follow_symlinks, hash or "none",
                           tuple(exclude), default_ignores)
    with contextlib.ExitStack() as stack:
        executor = given_executor(stack, root_path, executor, client, scheduler)
        stack.enter_context(build_lock(out_path))
        quiet = own_files(out_path) | {str(Path(f).expanduser().resolve()) for f in not_data}
        index = index_tree(root_path, options, ignore_paths=quiet,
                           executor=executor,
                           workers=workers, start_method=start_method, progress=progress,
                           io_threads=io_threads)
        if strict and (index.skipped.height or index.warnings):
            raise ProblemsFound(
                f"strict: {index.skipped.height} files would be skipped and "
                f"{len(index.warnings)} warnings given; nothing was written",
                index.skipped, index.warnings)
        return write_index(index, root_path, out_path, options, started)


@contextlib.contextmanager
def build_lock(out_path: Path) -> Iterator[None]:
    """One build at a time per output folder; a second one is refused, not queued.

    The lock is ``flock`` on the output folder itself, so no file of fastindex's is left
    in a tree that gets published, and the kernel releases it when a build dies.  Where
    folders cannot be locked (``flock`` on NFS is a byte-range lock, which needs a file
    open for writing) a lock file is used instead, and removed on the way out.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(out_path, os.O_RDONLY)
    try:
        try:
            _lock(fd, out_path)
            folder_locked = True
        except OSError as err:
            if err.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            folder_locked = False
        if folder_locked:
            yield
        else:
            with _lock_file(out_path / LOCK_FILE):
                yield
    finally:
        os.close(fd)


def _lock(fd: int, where: Path) -> None:
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
            _lock(fd, path.parent)
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


def pauses_gc(fn):
    """Run ``fn`` with Python's cycle collector paused (as it was, after).

    A tree's sessions and batches are many small objects without cycles: while they pile
    up, the collector scans them all again and again, for nothing (0.6 s of a
    million-file build).  Reference counting still frees them.
    """

    @functools.wraps(fn)
    def paused(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused


@pauses_gc
def write_index(index: TreeIndex, root_path: Path, out_path: Path, options: BuildOptions,
                started: float) -> BuildResult:
    """Stage 4b: write an index's two tables, with fastindex's provenance."""
    from fastindex import tables

    build_id = str(uuid.uuid4())
    counts = {"sessions": index.sessions.height, "datasets": index.datasets.height,
              "skipped": index.skipped.height, "warnings": len(index.warnings),
              "ignored": index.ignored, "bytes": int(index.datasets["file_size"].sum() or 0)}
    metadata = {
        "one_metadata": tables.one_metadata(root_path, datetime.datetime.now()),
        "fastindex": {"version": __version__, "build_id": build_id,
                      "options": asdict(options), "counts": counts,
                      "ignore_rules": list(index.rules.patterns),
                      "listed_at_ns": index.listed_at_ns},
    }
    ses_path, ds_path = tables.write_tables(
        out_path, tables.sessions_table(index.sessions),
        tables.datasets_table(index.datasets, record_mtime=options.hash != "none"),
        metadata, build_id, id_index=options.hash_ids)
    return BuildResult(ses_path, ds_path, counts["sessions"], counts["datasets"],
                       counts["bytes"], index.skipped, index.warnings,
                       time.perf_counter() - started, build_id, index.ignored)


def own_files(folder: Path) -> frozenset[str]:
    """fastindex's own files in a folder (tables, lock): never reported as skipped."""
    return frozenset(str(folder / name) for name in (*TABLE_FILES, LOCK_FILE))


@dataclass
class TreeIndex:
    """The tables of a tree, in memory: what ``build`` writes and ``verify`` compares."""

    sessions: pl.DataFrame
    datasets: pl.DataFrame
    skipped: pl.DataFrame
    warnings: list[Problem]
    folders: dict[str, Session]  # session id -> its folder
    listed_at_ns: int = 0  # wall clock (ns) when the walk began
    ignored: int = 0  # entries the ignore rules passed over
    rules: ignore.IgnoreRules = field(default_factory=ignore.IgnoreRules)


@pauses_gc
def index_tree(root: Path, options: BuildOptions, *, executor: Executor | None = None,
               workers: int | None = None, start_method: str | None = None,
               progress: bool = False, ignore_paths: frozenset[str] | None = None,
               io_threads: int | None = None) -> TreeIndex:
    """Stages 1 to 4a on a resolved root: discover, index in workers, merge.

    ``ignore_paths``: absolute paths not to report, besides fastindex's own files in root.
    The ignore rules are the root's ``.fastindexignore`` and the options' ``exclude``.
    ``io_threads``: listings in flight per process (see ``scan.io_threads``).
    """
    listed_at_ns = time.time_ns()
    rules = ignore.read_rules(root, tuple(options.exclude), options.default_ignores)
    own = own_files(root) | {ignore.own_file(root)} | (ignore_paths or frozenset())
    try:
        hashes = hashing.parse(options.hash)
    except ValueError as err:
        raise InputError(str(err)) from None
    id_ns = uuid.UUID(options.namespace) if options.hash_ids else None
    found = discover.Discovery()
    io = io_threads_for(io_threads)
    index_options = IndexOptions(id_ns, options.follow_symlinks, hashes, DEFER_SIZE, rules, io)
    # Forked before this process may start I/O threads of its own (a fork beside
    # running threads can deadlock).
    with executor_for(executor, workers or default_workers(), start_method,
                      fork_now=io.threads != 0) as pool:
        units = discover.discover(root, found, options.follow_symlinks, own, rules=rules,
                                  io=io)
        futures = _submit(pool, units, index_options, str(root))  # before tqdm's thread
        with _index_bar(progress, hashes, len(futures)) as bar:
            if not hashes:  # Arrow and polars load while the workers index
                _merge_stage()
            results, deferred = _gather(futures, bar, pool, hashes)
            merge = _merge_stage()  # or, when hashing, while the large files are hashed
            hashed, late_problems = collect_hash_jobs(deferred, bar)

    sessions = [s for r in results for s in r.sessions]
    check_lab(sessions, options.lab)
    eids = [e for r in results for e in r.eids]
    late = [(results[batch].eids[pos], rel, digests)
            for (batch, pos, rel), digests in ((job.key, d) for job, d in hashed)]
    return TreeIndex(
        merge.sessions_frame(sessions, eids),
        merge.datasets_frame([r.datasets for r in results], hashes, late),
        merge.problems_frame(found.problems + late_problems, [r.problems for r in results]),
        _root_warnings(root), dict(zip(eids, sessions)), listed_at_ns,
        found.ignored + sum(r.ignored for r in results), rules)


def io_threads_for(given: int | None) -> scan.IoThreads:
    """The I/O threads asked for (argument, else environment), or a clear refusal."""
    try:
        return scan.io_threads(given)
    except ValueError as err:
        raise InputError(str(err)) from None


def check_lab(sessions: list[Session], lab: str | None) -> None:
    """``lab`` names the lab of every session, or the build is refused.

    A lab is only ever read from a ``lab/Subjects/`` folder: ONE looks for a session
    with a lab in ``root/lab/Subjects/...``, so writing a lab into the rows of sessions
    that sit elsewhere would make every one of them unloadable.  ``fastindex fix --lab``
    moves them there instead.
    """
    if not lab:
        return
    labless = [s.rel for s in sessions if not s.parts.lab]
    if labless:
        raise LabError(
            f"--lab {lab}: {len(labless)} sessions have no lab folder (first: {labless[0]}); "
            f"ONE would look for them in {lab}/Subjects/..., where they are not, and no "
            f"row would load. Move them there with `fastindex fix ROOT --lab {lab} "
            f"--apply`, then build without --lab")
    others = sorted({s.parts.lab for s in sessions} - {lab})
    if others:
        raise LabError(f"lab name conflict: --lab {lab} but the tree has lab folders "
                       f"{', '.join(others)}")


def _root_warnings(root: Path) -> list[Problem]:
    """A root that is a lab's ``Subjects`` folder: loadable rows, but without the lab."""
    lab = alf.lab_around(root.as_posix())
    if lab is None:
        return []
    return [Problem(".", p.LAB_ABOVE_ROOT, f"the root is inside lab {lab}: the rows have "
                                           f"no lab; index {root.parent.parent} to keep it")]


def check_root(root: str | os.PathLike) -> Path:
    """The resolved root, or a clear refusal before any work is done."""
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise InputError(f"root does not exist: {root_path}")
    if not root_path.is_dir():
        raise InputError(f"root is not a folder: {root_path}")
    return root_path.resolve()


def check_paths(root: str | os.PathLike, out_dir: str | os.PathLike | None,
                create: bool = False) -> tuple[Path, Path]:
    """Resolve root and a writable output folder (default: the root).

    With ``create``, a missing output folder is made when its parent exists (a typo in
    a deeper path is refused rather than built).
    """
    root_path = check_root(root)
    out_path = Path(out_dir).expanduser().resolve() if out_dir else root_path
    if create and not out_path.exists() and out_path.parent.is_dir():
        try:
            out_path.mkdir()
        except OSError as err:
            raise InputError(f"cannot create the output folder {out_path}: {err}") from None
    if not out_path.is_dir():
        raise InputError(f"output folder does not exist: {out_path}")
    if not os.access(out_path, os.W_OK | os.X_OK):
        raise InputError(f"output folder is not writable: {out_path}")
    return root_path, out_path


@dataclass(frozen=True)
class HashJob:
    """A file to hash as a task of its own, with what the listing said of it."""

    key: tuple  # whatever the caller needs to place the result
    path: str  # absolute
    shown: str  # root-relative, for reports
    size: int  # bytes when listed


def hash_jobs(pool: Executor, jobs: list[HashJob], hashes: tuple[str, ...], bar: tqdm,
              per_task: int = 1) -> tuple[list[dict | None], list[Problem]]:
    """Hash files in tasks of ``per_task`` files: digests per job (None: not readable)."""
    done, problems = collect_hash_jobs(submit_hash_jobs(pool, jobs, hashes, per_task), bar)
    return [digests for _, digests in done], problems


def submit_hash_jobs(pool: Executor, jobs: list[HashJob], hashes: tuple[str, ...],
                     per_task: int = 1) -> list[tuple[list[HashJob], Future]]:
    """Start hashing ``jobs`` in tasks of ``per_task`` files."""
    chunks = [jobs[i:i + per_task] for i in range(0, len(jobs), per_task)]
    return [(chunk, pool.submit(hash_files, [j.path for j in chunk], hashes))
            for chunk in chunks]


def collect_hash_jobs(submitted: list[tuple[list[HashJob], Future]], bar: tqdm
                      ) -> tuple[list[tuple[HashJob, dict | None]], list[Problem]]:
    """Each job with its digests (None: not readable), and the problems.

    A file whose byte count differs from its listed size changed while it was read; it
    is reported, like one that vanished or cannot be read.
    """
    done: list[tuple[HashJob, dict | None]] = []
    problems = []
    for chunk, future in submitted:
        for job, outcome in zip(chunk, _result(future, chunk[0].shown)):
            digests = None
            problem = read_problem(outcome, job.size)
            if problem:
                problems.append(Problem(p.display_path(job.shown), *problem))
            else:
                digests = outcome[1]
                bar.update(outcome[0])
            done.append((job, digests))
    return done, problems


def _deferred_jobs(result: BatchResult, batch: int) -> list[HashJob]:
    """The large files a batch left to hash, keyed by (batch, session in batch, rel_path)."""
    return [HashJob((batch, pos, rel), path, _shown(result.sessions[pos].rel, rel), size)
            for pos, rel, path, size in result.deferred]


def _shown(session_rel: str, rel_path: str) -> str:
    return f"{session_rel}/{rel_path}" if session_rel else rel_path


def _submit(pool: Executor, batches: Iterable[list[Folder]], options: IndexOptions,
            root: str) -> list[tuple[Future, list[Folder]]]:
    """Submit each batch as discovery yields it, so the walk and the indexing overlap.

    Once the walk here has timed the storage, the workers are told what it found, so
    that on slow storage they start with their threads on.
    """
    submitted = []
    for batch in batches:
        if options.io.threads is None and (found := scan.finding(root)) is not None:
            options = replace(options, io=found)
        submitted.append((pool.submit(index_sessions, batch, options), batch))
    return submitted


def _gather(futures: list[tuple[Future, list[Folder]]], bar: tqdm, pool: Executor,
            hashes: tuple[str, ...]
            ) -> tuple[list[BatchResult], list[tuple[list[HashJob], Future]]]:
    """The batches' results, in submission order; the first failure stops the build.

    The large files a batch left are submitted for hashing as soon as it returns, so
    they are hashed while other batches are still being indexed.
    """
    order = {future: i for i, (future, _) in enumerate(futures)}
    deferred = []
    total = 0  # bytes to hash, known once every task has listed its folders
    for done, future in enumerate(as_completed(order), 1):
        result = _result(future, futures[order[future]][1][0].rel or ".")
        jobs = _deferred_jobs(result, order[future])
        deferred += submit_hash_jobs(pool, jobs, hashes)
        if not hashes:
            bar.update(1)
            continue
        total += result.nbytes + sum(j.size for j in jobs)
        if done < len(futures):
            bar.set_postfix_str(f"{done}/{len(futures)} tasks listed", refresh=False)
        else:
            bar.total = total
            bar.set_postfix_str("", refresh=False)
        bar.update(result.nbytes)
    return [future.result() for future, _ in futures], deferred


def _index_bar(progress: bool, hashes: tuple[str, ...], tasks: int) -> tqdm:
    """Tasks indexed (each a subject's sessions or date folders: the walk knows how
    many), or bytes hashed when hashing, whose total is known once every task is listed.
    """
    if hashes:
        return progress_bar(progress, "hashing", "B")
    return progress_bar(progress, "indexing", "task", tasks)


def _merge_stage():
    """The merge stage's module: importing it loads Arrow and polars (0.3 s of CPU)."""
    from fastindex import merge

    return merge


def _result(future: Future, where: str):
    """A task's result; a failed or lost worker stops the build with a clear error."""
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise FastindexError(f"a worker process died while indexing; nothing was "
                             f"written ({err})") from err
    except Exception as err:
        raise FastindexError(f"indexing failed in the task starting at {where}: "
                             f"{type(err).__name__}: {err}; nothing was written") from err


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"

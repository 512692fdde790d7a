"""The engine: the one place that runs work on workers, in the one safe order.

``with Engine(root, settings) as engine: engine.index(spec)`` starts the executor (a Dask
cluster's, one given, the calling process for one worker, or worker processes), walks
the tree, submits each batch as the walk yields it, gathers the results with progress,
hashes the large files a batch left, and merges everything into a ``TreeIndex``;
``engine.hash(jobs)`` hashes files on the same workers (``update``).

The order is decided here and nowhere else: worker processes are forked when the engine
is entered, before this process starts any thread of its own (I/O threads, tqdm's
monitor, Arrow's and polars' pools, which load with the merge stage or with old tables):
a fork beside running threads can deadlock.  Commands enter the engine before they read
tables or import polars.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from fastindex import alf, discover, folderlister, ignore
from fastindex import problems as p
from fastindex.discover import Folder, Session
from fastindex.errors import FastindexError, InputError, LabError, ListingFailed
from fastindex.executors import default_workers, executor_for, given_executor
from fastindex.gcpause import pauses_gc
from fastindex.hashing import Listed
from fastindex.index import (
    BatchResult,
    IndexPlan,
    SessionColumns,
    hash_files,
    index_sessions,
    read_problem,
)
from fastindex.problems import Problem
from fastindex.progress import counted, progress_bar
from fastindex.tablefiles import TABLE_FILES
from fastindex.walk import Policy

if TYPE_CHECKING:
    import polars as pl
    from tqdm import tqdm

    from fastindex.root import Root
    from fastindex.spec import BuildSpec, RunSettings


@dataclass
class TreeIndex:
    """The tables of a tree, in memory: what ``build`` writes and ``verify`` compares."""

    root: Root
    sessions: pl.DataFrame
    datasets: pl.DataFrame
    skipped: pl.DataFrame
    warnings: list[Problem]
    session_folders: Mapping[str, Session]  # session id -> where it is on disk
    listed_at_ns: int = 0  # wall clock (ns) when the walk began
    ignored: int = 0  # entries the ignore rules passed over
    rules: ignore.IgnoreRules = field(default_factory=ignore.IgnoreRules)
    #: the tree's files carry their dataset's UUID (``merge.uuid_file_names``): a row's
    #: file is ``alf.file_name`` of it, and the tables say so
    uuid_names: bool = False


class SessionFolders(Mapping[str, Session]):
    """Each session's folder by its id, from the workers' columns: the lookup table and
    each ``Session`` are made only when asked for (a build asks for none)."""

    def __init__(self, sessions: SessionColumns) -> None:
        self.sessions = sessions
        self._at: dict[str, int] | None = None

    def _positions(self) -> dict[str, int]:
        if self._at is None:
            self._at = {eid: i for i, eid in enumerate(self.sessions.eid)}
        return self._at

    def __getitem__(self, eid: str) -> Session:
        return self.sessions.session(self._positions()[eid])

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions())

    def __len__(self) -> int:
        return len(self._positions())


@dataclass(frozen=True)
class HashJob:
    """A file to hash as a task of its own, with what the listing said of it."""

    key: tuple  # whatever the caller needs to place the result
    path: str  # absolute
    shown: str  # root-relative, for reports
    size: int  # bytes when listed
    #: what the listing said (size, mtime, and ctime, inode or ETag where known): the
    #: read is bounded by its size and must find the file as listed
    listed: Listed | None = None


class Engine:
    """Runs the index stage of one tree on an executor (see the module's docstring)."""

    def __init__(self, root: Root, settings: RunSettings) -> None:
        self.root = root
        self.settings = settings
        try:
            self.io = folderlister.io_threads(settings.io_threads)
        except ValueError as err:
            raise InputError(str(err)) from None
        self._stack = contextlib.ExitStack()
        self.pool: Executor | None = None

    def __enter__(self) -> Engine:
        s = self.settings
        with self._stack as stack:
            given = given_executor(stack, self.root, s.executor, s.client, s.scheduler)
            self.pool = stack.enter_context(executor_for(
                given, s.workers or self._default_workers(), s.start_method, fork_now=True))
            self._stack = stack.pop_all()
        return self

    @property
    def _pool(self) -> Executor:
        """The executor; only while the engine is entered."""
        if self.pool is None:
            raise RuntimeError("the engine runs work only inside its with block")
        return self.pool

    def __exit__(self, *exc) -> bool | None:
        return self._stack.__exit__(*exc)

    def _default_workers(self) -> int:
        """The CPUs, times the root's workers per CPU (more where workers wait)."""
        return default_workers() * self.root.workers_per_cpu

    @pauses_gc
    def index(self, spec: BuildSpec, quiet_paths: Iterable[str] = (), *,
              whole: bool = False) -> TreeIndex:
        """Discover, index in workers, merge: the tree as ``spec`` asks, in memory.

        ``quiet_paths``: absolute paths that are neither rows nor problems, besides
        fastindex's own files in the root.  The ignore rules are the root's
        ``.fastindexignore`` and the spec's ``exclude``.  ``whole``: raise
        ``ListingFailed`` as soon as the root or a folder above the sessions is found
        unlisted (``Discovery.unlisted``), for the commands that write tables: their
        sessions would be missing from the tables, not reported.  Without it (check,
        verify) such a folder is a problem like any other.
        """
        root, progress = self.root, self.settings.progress
        listed_at_ns = time.time_ns()
        rules = ignore.read_rules(root, spec.exclude, spec.default_ignores)
        quiet = frozenset(quiet_paths) | root.own_files()
        algorithms = spec.digests.algorithms
        found = discover.Discovery()
        plan = IndexPlan(root, spec.id_namespace,
                         Policy(spec.follow_symlinks, rules, quiet, TABLE_FILES), algorithms,
                         self.settings.defer_size, self.io)
        futures = self._submit(discover.discover_root(plan, found), plan)  # before tqdm's thread
        if whole:
            _listed_whole(root, found.unlisted)
        with _index_bar(progress, algorithms, len(futures)) as bar:
            if not algorithms:  # Arrow and polars load while the workers index
                _merge_stage()
            results, deferred = self._gather(futures, bar, algorithms, whole)
            merge = _merge_stage()  # or, when hashing, while the large files are hashed
            hashed_late, late_problems = _collect(deferred, bar)

        sessions = SessionColumns.joined([r.sessions for r in results])
        check_lab(sessions, spec.lab)
        eids = sessions.eid
        rows = [n for r in results for n in r.rows]
        late = [(results[batch].sessions.eid[pos], rel, digests)
                for (batch, pos, rel), digests in ((job.key, d) for job, d in hashed_late)]
        folders = SessionFolders(sessions)
        datasets, left_out, uuid_names = merge.datasets_frame(
            [r.datasets for r in results], eids, rows, algorithms, late)
        named = [p.problem(alf.join(folders[eid].rel, rel), reason, detail)
                 for eid, rel, reason, detail in left_out.iter_rows()]
        problems = merge.problems_frame(found.problems + late_problems + named,
                                        [r.problems for r in results])
        warned = problems["reason"].is_in(p.WARNINGS)  # rows kept, and reported
        warnings = [Problem(*row) for row in problems.filter(warned).iter_rows()]
        return TreeIndex(
            root, merge.sessions_frame(sessions), datasets,
            problems.filter(~warned), root.warnings() + warnings, folders, listed_at_ns,
            found.ignored + sum(r.ignored for r in results), rules, uuid_names)

    def hash(self, jobs: list[HashJob], algorithms: tuple[str, ...], per_task: int = 1
             ) -> tuple[list[dict | None], list[Problem]]:
        """Hash files in tasks of ``per_task`` files, with a progress bar in bytes:
        digests per job (None: not readable), and the problems."""
        with progress_bar(self.settings.progress, "hashing", "B",
                          sum(j.size for j in jobs)) as bar:
            done, problems = _collect(self._submit_hashing(jobs, algorithms, per_task), bar)
        return [digests for _, digests in done], problems

    def _submit_hashing(self, jobs: list[HashJob], algorithms: tuple[str, ...],
                        per_task: int = 1) -> list[tuple[list[HashJob], Future]]:
        chunks = [jobs[i:i + per_task] for i in range(0, len(jobs), per_task)]
        return [(chunk, self._pool.submit(hash_files, self.root, [j.path for j in chunk],
                                         algorithms, [j.listed for j in chunk]))
                for chunk in chunks]

    def _submit(self, batches: Iterable[list[Folder]], plan: IndexPlan
                ) -> list[tuple[Future, list[Folder]]]:
        """Submit each batch as discovery yields it, so the walk and the indexing overlap.

        Once the walk here has timed the storage, the workers are told what it found, so
        that on slow storage they start with their threads on.
        """
        submitted = []
        for batch in batches:
            if plan.io.threads is None and (found := self.root.io_found()) is not None:
                plan = replace(plan, io=found)
            submitted.append((self._pool.submit(index_sessions, batch, plan), batch))
        return submitted

    def _gather(self, futures: list[tuple[Future, list[Folder]]], bar: tqdm,
                algorithms: tuple[str, ...], whole: bool = False
                ) -> tuple[list[BatchResult], list[tuple[list[HashJob], Future]]]:
        """The batches' results, in submission order; the first failure stops the build
        (with ``whole``, a batch's folder above the sessions that could not be listed).

        The large files a batch left are submitted for hashing as soon as it returns, so
        they are hashed while other batches are still being indexed.
        """
        order = {future: i for i, (future, _) in enumerate(futures)}
        deferred = []
        total = 0  # bytes to hash, known once every task has listed its folders
        for done, future in enumerate(as_completed(order), 1):
            result = _result(future, futures[order[future]][1][0].rel or ".")
            if whole:
                _listed_whole(self.root, result.unlisted)
            jobs = _deferred_jobs(result, order[future])
            deferred += self._submit_hashing(jobs, algorithms)
            if not algorithms:
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


def _collect(submitted: list[tuple[list[HashJob], Future]], bar: tqdm
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
                problems.append(p.problem(job.shown, *problem))
            else:
                digests = outcome[1]
                bar.update(outcome[0])
            done.append((job, digests))
    return done, problems


def _listed_whole(root: Root, unlisted: list[Problem]) -> None:
    """Raise ``ListingFailed`` naming the first folder that could not be listed (with
    its error) and how many more, if any."""
    if not unlisted:
        return
    first = unlisted[0]
    more = f" (and {counted(len(unlisted) - 1, 'more folder')})" if len(unlisted) > 1 else ""
    raise ListingFailed(f"cannot list {root.join('' if first.path == '.' else first.path)}"
                        f"{more}: {first.detail}; the tree was not listed whole, so "
                        f"nothing was written")


def check_lab(sessions: SessionColumns, lab: str | None) -> None:
    """``lab`` names the lab of every session, or the build is refused.

    A lab is only ever read from a ``lab/Subjects/`` folder: ONE looks for a session
    with a lab in ``root/lab/Subjects/...``, so writing a lab into the rows of sessions
    that sit elsewhere would make every one of them unloadable.  ``fastindex fix --lab``
    moves them there instead.
    """
    if not lab:
        return
    labless = [rel for rel, found in zip(sessions.rel, sessions.lab) if not found]
    if labless:
        raise LabError(
            f"--lab {lab}: {counted(len(labless), 'session')} without a lab folder (first: "
            f"{labless[0]}); ONE would look for them in {lab}/Subjects/..., where they are "
            f"not, and no row would load. Move them there with `fastindex fix ROOT --lab {lab} "
            f"--apply`, then build without --lab")
    others = sorted(set(sessions.lab) - {lab})
    if others:
        raise LabError(f"lab name conflict: --lab {lab} but the tree has lab folders "
                       f"{', '.join(others)}")


def _deferred_jobs(result: BatchResult, batch: int) -> list[HashJob]:
    """The large files a batch left to hash, keyed by (batch, session in batch, rel_path)."""
    return [HashJob((batch, pos, rel), path, alf.join(result.sessions.rel[pos], rel),
                    listed.st_size, listed)
            for pos, rel, path, listed in result.deferred]


def _index_bar(progress: bool, algorithms: tuple[str, ...], tasks: int) -> tqdm:
    """Tasks indexed (each a subject's sessions or date folders: the walk knows how
    many), or bytes hashed when hashing, whose total is known once every task is listed.
    """
    if algorithms:
        return progress_bar(progress, "hashing", "B")
    return progress_bar(progress, "indexing", "task", tasks)


def _merge_stage():
    """The merge stage's module: importing it loads Arrow and polars, so it is imported only
    once the workers run (or while they hash)."""
    from fastindex import merge

    return merge


def _result(future: Future, first_folder: str):
    """A task's result; a failed or lost worker stops the build with a clear error."""
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise FastindexError(f"a worker process died while indexing; nothing was "
                             f"written ({err})") from err
    except Exception as err:
        raise FastindexError(f"indexing failed in the task starting at {first_folder}: "
                             f"{type(err).__name__}: {err}; nothing was written") from err

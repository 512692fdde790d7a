"""The pipeline, end to end: discover, partition, index in workers, merge, write.

``build`` is the one place that knows every stage; each stage's module knows only its
own inputs.  The index stage runs behind ``concurrent.futures.Executor``: a process pool
by default, the calling process itself for ``workers=1``, or any executor passed in.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
from tqdm import tqdm

from fastindex import __version__, discover, merge, tables
from fastindex.errors import FastindexError, InputError
from fastindex.index import PROBLEM_FIELDS, IndexOptions, SessionTask, index_sessions
from fastindex.problems import Problem

#: Ids are uuid3 in this namespace unless another is given, so a tree always gets the same ids.
DEFAULT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "fastindex:alf")


@dataclass(frozen=True)
class BuildOptions:
    """Everything that changes what a build writes; recorded in the tables' metadata."""

    hash_ids: bool = True
    namespace: str = str(DEFAULT_NAMESPACE)
    lab: str | None = None
    follow_symlinks: bool = False


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

    def summary(self) -> str:
        """The one line the CLI prints at the end of a build."""
        return (f"{self.n_sessions} sessions, {self.n_datasets} datasets, "
                f"{self.skipped.height} skipped, {len(self.warnings)} warnings, "
                f"{_human_bytes(self.total_bytes)}, {self.seconds:.2f} s")


def default_workers() -> int:
    """The CPUs this process may run on (not the machine's count, under a cgroup or taskset)."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def session_eid(string_id: str, namespace: uuid.UUID | None) -> str:
    """A session's id: uuid3 of its ONE string id, or the string id itself."""
    return str(uuid.uuid3(namespace, string_id)) if namespace else string_id


def build(root: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
          workers: int | None = None, hash_ids: bool = True,
          namespace: str | uuid.UUID | None = None, lab: str | None = None,
          follow_symlinks: bool = False, executor: Executor | None = None,
          start_method: str | None = None, progress: bool = False) -> BuildResult:
    """Index the ALF tree under ``root`` and write ``sessions.pqt`` and ``datasets.pqt``.

    The tables go to ``out_dir`` (default: the root).  ``workers`` defaults to the CPUs
    this process may use; ``workers=1`` runs in this process.  ``executor`` replaces the
    process pool (any ``concurrent.futures.Executor``); ``start_method`` picks the
    multiprocessing start method of the default pool.
    """
    started = time.perf_counter()
    root_path, out_path = _check_paths(root, out_dir)
    ns = uuid.UUID(str(namespace)) if namespace else DEFAULT_NAMESPACE
    options = BuildOptions(hash_ids, str(ns), lab, follow_symlinks)
    workers = workers or default_workers()
    ignore = frozenset(str(out_path / n) for n in (tables.SESSIONS_FILE, tables.DATASETS_FILE))

    found = discover.Discovery()
    id_ns = ns if hash_ids else None
    eids: list[str] = []

    def tasks() -> Iterator[list[SessionTask]]:
        for batch in discover.discover(root_path, found, follow_symlinks, ignore):
            eids.extend(session_eid(found.sessions[i].parts.string_id, id_ns)
                        for i in range(len(eids), batch[-1] + 1))
            yield [SessionTask(i, found.sessions[i].path, found.sessions[i].rel, eids[i])
                   for i in batch]

    results = _run(tasks(), IndexOptions(id_ns, follow_symlinks), workers, executor,
                   start_method, progress)
    sessions = merge.sessions_frame(found.sessions, eids, lab)
    datasets = merge.datasets_frame([r[0] for r in results], eids)
    skipped = _skipped_frame(found.problems, [r[1] for r in results])
    build_id = str(uuid.uuid4())
    counts = {"sessions": sessions.height, "datasets": datasets.height,
              "skipped": skipped.height, "warnings": len(found.warnings),
              "bytes": int(datasets["file_size"].sum() or 0)}
    metadata = {
        "one_metadata": tables.one_metadata(root_path, datetime.datetime.now()),
        "fastindex": {"version": __version__, "build_id": build_id,
                      "options": asdict(options), "counts": counts},
    }
    ses_path, ds_path = tables.write_tables(
        out_path, tables.sessions_table(sessions), tables.datasets_table(datasets),
        metadata, build_id)
    return BuildResult(ses_path, ds_path, counts["sessions"], counts["datasets"],
                       counts["bytes"], skipped, found.warnings,
                       time.perf_counter() - started, build_id)


def _check_paths(root: str | os.PathLike, out_dir: str | os.PathLike | None
                 ) -> tuple[Path, Path]:
    """Resolve root and output folder, refusing what cannot work before any work is done."""
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise InputError(f"root does not exist: {root_path}")
    if not root_path.is_dir():
        raise InputError(f"root is not a folder: {root_path}")
    root_path = root_path.resolve()
    out_path = Path(out_dir).expanduser().resolve() if out_dir else root_path
    if not out_path.is_dir():
        raise InputError(f"output folder does not exist: {out_path}")
    if not os.access(out_path, os.W_OK | os.X_OK):
        raise InputError(f"output folder is not writable: {out_path}")
    return root_path, out_path


def _run(batches: Iterable[list[SessionTask]], options: IndexOptions, workers: int,
         executor: Executor | None, start_method: str | None, progress: bool
         ) -> list[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Run every batch through the index stage as discovery yields it; results in order."""
    with tqdm(unit="session", disable=not progress, desc="indexing") as bar:
        if executor is None and workers == 1:
            results = []
            for batch in batches:
                results.append(index_sessions(batch, options))
                bar.update(len(batch))
            return results
        if executor is not None:
            return _collect(executor, batches, options, bar)
        context = multiprocessing.get_context(start_method) if start_method else None
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            try:
                return _collect(pool, batches, options, bar)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _collect(executor: Executor, batches: Iterable[list[SessionTask]], options: IndexOptions,
             bar: tqdm) -> list[tuple[pa.RecordBatch, pa.RecordBatch]]:
    futures = {}
    submitted = []
    for i, batch in enumerate(batches):  # discovery goes on while workers index
        futures[executor.submit(index_sessions, batch, options)] = i
        submitted.append(batch)
    batches = submitted
    bar.total = sum(len(b) for b in batches)
    bar.refresh()
    results: list = [None] * len(batches)
    for future in as_completed(futures):
        i = futures[future]
        try:
            results[i] = future.result()
        except BrokenProcessPool as err:
            raise FastindexError(f"a worker process died while indexing; nothing was "
                                 f"written ({err})") from err
        except Exception as err:
            where = batches[i][0].rel or "."
            raise FastindexError(f"indexing failed in the batch starting at {where}: "
                                 f"{type(err).__name__}: {err}; nothing was written") from err
        bar.update(len(batches[i]))
    return results


def _skipped_frame(found: list[Problem], batches: list[pa.RecordBatch]) -> pl.DataFrame:
    """Every skipped file, from the parent's walk and the workers', sorted by path."""
    own = pl.DataFrame(found, schema=PROBLEM_FIELDS.names, orient="row")
    workers = pl.from_arrow(pa.Table.from_batches(batches, schema=PROBLEM_FIELDS))
    return pl.concat([own.cast(pl.String), workers]).sort("path", "reason")


def _human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"

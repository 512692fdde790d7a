"""``fastindex update``: rebuild the tables, re-hashing only the files that changed.

Listing a tree is cheap and ids are derived from paths, so an update walks the whole
tree again (the same ``index_tree`` as a build, without hashing) and takes each file's
digests from the old table when its size and modification time (``mtime_ns``, recorded
by hashed builds) are unchanged.  New and changed files are hashed in tasks on the same
executor.  The result is the table a fresh build would write.  Without digests to keep,
an update is a build.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex import hashing
from fastindex.errors import InputError
from fastindex.executors import default_workers, executor_for, given_executor
from fastindex.pipeline import (
    DEFAULT_NAMESPACE,
    BuildOptions,
    BuildResult,
    HashJob,
    TreeIndex,
    build_lock,
    check_paths,
    hash_jobs,
    index_tree,
    own_files,
    progress_bar,
    write_index,
)

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import polars as pl

DIGEST_COLUMNS = {"md5": "hash", "xxh3": "xxh3"}
HASH_TASK_FILES = 32  # changed files per hashing task
#: A file modified this close to (or after) the start of the walk that recorded the old
#: tables is hashed again: a rewrite within the same timestamp tick as its last write
#: keeps its size and mtime (git's "racily clean" entries).  The margin covers coarse
#: file-system clocks (FAT's 2 s) and small clock skew between a file server and here.
RACY_NS = 5 * 10**9


@dataclass
class UpdateResult:
    """What an update wrote, and how: incrementally, or as a full build (and why)."""

    build: BuildResult
    incremental: bool
    reason: str  # why a full build, or what was reused
    rehashed: int = 0
    reused: int = 0

    def summary(self) -> str:
        how = (f"{self.reused} digests kept, {self.rehashed} files hashed"
               if self.incremental else f"full build: {self.reason}")
        return f"{self.build.summary()}; {how}"


def _table_files(out_path: Path) -> list[Path]:
    files = [out_path / "sessions.pqt", out_path / "datasets.pqt"]
    if not all(f.is_file() for f in files):
        raise InputError(f"no tables to update in {out_path}; run fastindex build first")
    return files


def _provenance(datasets_file: Path) -> tuple[dict | None, list[str]]:
    """fastindex's provenance (None: another tool's table) and the column names."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(datasets_file)
    except Exception as err:  # Arrow raises several types for a damaged file
        raise InputError(f"cannot read {datasets_file}: {err}") from None
    meta = schema.metadata or {}
    return (json.loads(meta[b"fastindex"]) if b"fastindex" in meta else None), schema.names


def _old_tables(files: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    import polars as pl

    try:
        sessions, datasets = (pl.read_parquet(f) for f in files)
    except Exception as err:  # polars raises several types for a damaged file
        raise InputError(f"cannot read the tables in {files[0].parent}: {err}") from None
    return sessions, datasets


def update(root: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
           hash: str | None = None, namespace: str | None = None,
           keep_missing: bool = False, force: bool = False, workers: int | None = None,
           io_threads: int | None = None, executor: Executor | None = None, client=None,
           scheduler: str | None = None, progress: bool = False) -> UpdateResult:
    """Bring the tables in ``out_dir`` (default: root) up to date with the tree.

    The old tables' options are kept; ``hash`` asks for other digests (a full build).
    Tables not made by fastindex, or a different ``namespace``, would change published
    ids: refused unless ``force``.  ``keep_missing`` keeps datasets whose files are gone,
    with ``exists`` False, instead of removing them.

    One pool walks the tree and hashes what changed.  Its workers start before the old
    tables are read: reading them loads Arrow and polars, whose threads make a later
    fork unsafe.  ``io_threads``, ``executor``, ``client`` and ``scheduler`` are as in
    ``build``.
    """
    started = time.perf_counter()
    root_path, out_path = check_paths(root, out_dir)
    with contextlib.ExitStack() as stack:
        executor = given_executor(stack, root_path, executor, client, scheduler)
        stack.enter_context(build_lock(out_path))
        files = _table_files(out_path)
        with executor_for(executor, workers or default_workers(), None,
                          fork_now=True) as pool:
            provenance, columns = _provenance(files[1])
            options, why_full = _plan(provenance, columns, hash, namespace, force)
            index = index_tree(root_path, replace(options, hash="none") if not why_full
                               else options, executor=pool, progress=progress,
                               ignore_paths=own_files(out_path), io_threads=io_threads)
            old_sessions, old = _old_tables(files)
            reused = rehashed = 0
            if not why_full:
                index, reused, rehashed = _refresh_digests(
                    index, old, provenance["listed_at_ns"] - RACY_NS, options, pool, progress)
        if keep_missing:
            index = _keep_missing(index, old_sessions, old)
        result = write_index(index, root_path, out_path, options, started)
    reason = why_full or "digests kept where size and mtime are unchanged"
    return UpdateResult(result, not why_full, reason, rehashed, reused)


def _plan(provenance: dict | None, columns: list[str], hash: str | None,
          namespace: str | None, force: bool) -> tuple[BuildOptions, str]:
    """The options to build with, and why a full build is needed ('' when it is not)."""
    if provenance is None:
        if not force:
            raise InputError("these tables were not made by fastindex: a full build would "
                             "change their published ids; use fastindex build, or update "
                             "--force")
        return BuildOptions(namespace=str(namespace or DEFAULT_NAMESPACE),
                            hash=hash or "none"), "tables made by another tool"
    built = provenance["options"]
    options = BuildOptions(**{**built, "exclude": tuple(built.get("exclude", ()))})
    if namespace and str(namespace) != options.namespace:
        if not force:
            raise InputError(f"these tables use the namespace {options.namespace}: another "
                             f"namespace changes every id; use update --force to go ahead")
        options = replace(options, namespace=str(namespace))
        return replace(options, hash=hash or options.hash), "another namespace"
    if hash and hashing.parse(hash) != hashing.parse(options.hash):
        return replace(options, hash=hash), f"tables hashed with {options.hash}, asked for {hash}"
    if options.hash == "none":
        return options, "no digests to keep: a build lists the tree as fast as an update"
    if "mtime_ns" not in columns or "listed_at_ns" not in provenance:
        return options, "tables from an older fastindex, without the state update needs"
    return options, ""


def _refresh_digests(index: TreeIndex, old: pl.DataFrame, racy_from_ns: int,
                     options: BuildOptions, pool: Executor, progress: bool
                     ) -> tuple[TreeIndex, int, int]:
    """Take digests from ``old`` where size and mtime match; hash the rest on ``pool``.

    Files whose old mtime is ``racy_from_ns`` or later are hashed whatever their mtime:
    they may have changed after they were read without their mtime changing.
    """
    import polars as pl

    algorithms = hashing.parse(options.hash)
    columns = [DIGEST_COLUMNS[a] for a in algorithms]
    before = old.select("eid", "id", pl.col("file_size").alias("old_size"),
                        pl.col("mtime_ns").alias("old_mtime"), *columns)
    frame = index.datasets.join(before, on=["eid", "id"], how="left")
    same = ((pl.col("old_size") == pl.col("file_size"))
            & (pl.col("old_mtime") == pl.col("mtime_ns"))
            & (pl.col("old_mtime") < racy_from_ns)
            & pl.all_horizontal(pl.col(c).is_not_null() for c in columns))
    frame = frame.with_columns(keep=same.fill_null(False))
    reused = int(frame["keep"].sum())
    stale = frame.filter(~pl.col("keep")).select("eid", "rel_path", "file_size")
    jobs = [HashJob((eid, rel), os.path.join(index.folders[eid].path, rel),
                    f"{index.folders[eid].rel}/{rel}".lstrip("/"), size)
            for eid, rel, size in stale.iter_rows()]
    with progress_bar(progress, "hashing", "B", sum(j.size for j in jobs)) as bar:
        digests, problems = hash_jobs(pool, jobs, algorithms, bar, HASH_TASK_FILES)
    fresh = pl.DataFrame({
        "eid": [j.key[0] for j in jobs], "rel_path": [j.key[1] for j in jobs],
        "ok": [d is not None for d in digests],
        **{f"{c}_new": [(d or {}).get(a) for d in digests]
           for a, c in zip(algorithms, columns)},
    }, schema_overrides={"eid": pl.String, "rel_path": pl.String,
                         **{f"{c}_new": pl.String for c in columns}})
    frame = (frame.join(fresh, on=["eid", "rel_path"], how="left")
             .filter(pl.col("keep") | pl.col("ok").fill_null(False))
             .with_columns(pl.when(pl.col("keep")).then(pl.col(c)).otherwise(pl.col(f"{c}_new"))
                           .alias(c) for c in columns)
             .select(index.datasets.columns + columns)
             .sort("eid", "id"))
    skipped = index.skipped
    if problems:
        found = pl.DataFrame(problems, schema=skipped.columns, orient="row")
        skipped = pl.concat([skipped, found]).sort("path", "reason")
    return replace(index, datasets=frame, skipped=skipped), reused, len(jobs)


def _keep_missing(index: TreeIndex, old_sessions: pl.DataFrame, old: pl.DataFrame
                  ) -> TreeIndex:
    """Keep the old rows whose files are gone, marked ``exists`` False, and their sessions."""
    import polars as pl

    frame = index.datasets.with_columns(exists=pl.lit(True))
    gone = old.join(frame, on=["eid", "id"], how="anti").with_columns(exists=pl.lit(False))
    gone = gone.select(_conform(gone, frame.schema))
    sessions = index.sessions
    lost = old_sessions.join(sessions, on="id", how="anti")
    return replace(index, datasets=pl.concat([frame, gone]).sort("eid", "id"),
                   sessions=pl.concat([sessions, lost.select(_conform(lost, sessions.schema))])
                   .sort("id"))


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> list[pl.Expr]:
    """Columns of ``frame`` in ``schema``'s order and types (nulls where it has none)."""
    import polars as pl

    return [pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
            for c, t in schema.items()]

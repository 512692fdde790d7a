"""``fastindex update``: rebuild the tables, re-hashing only the files that changed.

Listing a tree is cheap and ids are derived from paths, so an update walks the whole
tree again (the same ``Engine.index`` as a build, without hashing) and takes each file's
digests from the old table when its size and modification time (``mtime_ns``, recorded
by hashed builds) are unchanged.  New and changed files are hashed in tasks on the same
executor.  The result is the table a fresh build would write.  Without digests to keep,
an update is a build.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fastindex import alf, log
from fastindex.build import check_shrink
from fastindex.engine import Engine, HashJob, TreeIndex
from fastindex.errors import InputError
from fastindex.hashing import Digests, Listed
from fastindex.progress import counted
from fastindex.results import BuildResult, StoredTables
from fastindex.root import Root, open_root
from fastindex.spec import BuildSpec, options
from fastindex.store import TableStore

if TYPE_CHECKING:
    import polars as pl

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
        how = (f"{counted(self.reused, 'digest')} kept, {counted(self.rehashed, 'file')} hashed"
               if self.incremental else f"full build: {self.reason}")
        return f"{self.build.summary()}; {how}"


def update(root: str | os.PathLike | Root, out_dir: str | os.PathLike | None = None, *,
           hash: str | None = None, namespace: str | None = None,
           keep_missing: bool = False, follow_symlinks: bool = False,
           exclude: Sequence[str] = (), **run) -> UpdateResult:
    """Bring the tables in ``out_dir`` (default: root) up to date with the tree.

    The old tables' spec is kept; ``hash`` asks for other digests (a full build).
    Tables not made by fastindex, or a different ``namespace``, would change published
    ids: refused unless ``force`` (a run setting); tables built following links are
    updated only with ``follow_symlinks`` (the tables' word is not the user's).
    ``keep_missing`` keeps datasets whose files are gone, with ``exists`` False,
    instead of removing them.
    ``exclude``: the ``--exclude`` patterns the tables record, given again (the same, in
    the same order): recorded patterns are used only with the user's word, else the
    update is refused (``InputError``), since forged ones could leave any file out.
    ``allow_shrink`` (a run setting): write tables that hold no session, or fewer than half the old
    tables' (else ``ShrinkRefused``, nothing written).  A folder above the sessions
    that cannot be listed raises ``ListingFailed``, nothing written.
    ``run``: how to run, as in ``build`` (``workers``, ``io_threads``, ``executor``,
    ``client``, ``scheduler``, ``start_method``, ``progress``).  One engine walks the
    tree and hashes what changed.
    """
    started = time.perf_counter()
    _, settings = options("update", **run)
    root_path = open_root(root, settings)
    store = TableStore.output(root_path.tables_folder(out_dir, "--out"))
    with store.lock():
        with Engine(root_path, settings) as engine:
            old = store.read("no tables to update in {folder}; run fastindex build first")
            spec, why_full = _plan(old, hash, namespace, settings.force)
            spec = spec.confirmed(follow_symlinks, "update", exclude)
            index = engine.index(spec if why_full else replace(spec, digests=Digests()),
                                 store.own_files(), whole=True)
            # before hashing; keep_missing keeps every old session
            if not (settings.allow_shrink or keep_missing):
                check_shrink(old.sessions.height, index.sessions.height, store, root_path,
                             "update")
            reused = rehashed = 0
            if not why_full:
                index, reused, rehashed = _refresh_digests(
                    index, old, (old.provenance or {})["listed_at_ns"] - RACY_NS, spec,
                    engine)
        if keep_missing:
            index = _keep_missing(index, old)
        result = store.write(index, spec, started)
    reason = why_full or "digests kept where size and mtime are unchanged"
    log.outcome("update", root, result)
    return UpdateResult(result, not why_full, reason, rehashed, reused)


def _plan(old: StoredTables, hash: str | None, namespace: str | None, force: bool
          ) -> tuple[BuildSpec, str]:
    """The spec to build with, and why a full build is needed ('' when it is not)."""
    provenance = old.provenance
    if provenance is None:
        if not force:
            raise InputError("these tables were not made by fastindex: a full build would "
                             "change their published ids; use fastindex build, or update "
                             "--force")
        return options(hash=hash, namespace=namespace)[0], "tables made by another tool"
    spec = BuildSpec.from_provenance(provenance.get("options", {}))
    asked, _ = options(spec=spec, hash=hash, namespace=namespace)
    if asked.namespace != spec.namespace:
        if not force:
            raise InputError(f"these tables use the namespace {spec.namespace}: another "
                             f"namespace changes every id; use update --force to go ahead")
        return asked, "another namespace"
    if asked.digests != spec.digests:
        return asked, f"tables hashed with {spec.digests.choice}, asked for {hash}"
    if not spec.digests:
        return spec, "no digests to keep: a build lists the tree as fast as an update"
    if "mtime_ns" not in old.datasets.columns:
        return spec, ("these tables hold no modification times (a release's tables do not), "
                      "so every file is hashed again")
    if not isinstance(provenance.get("listed_at_ns"), int):
        return spec, "tables from an older fastindex, without the state update needs"
    return spec, ""


def _refresh_digests(index: TreeIndex, stored: StoredTables, racy_from_ns: int,
                     spec: BuildSpec, engine: Engine) -> tuple[TreeIndex, int, int]:
    """Take digests from the ``stored`` rows of the same files (the same session and
    name on disk, ``alf.file_name``) where size and mtime match; hash the rest on the
    engine.

    Files whose old mtime is ``racy_from_ns`` or later are hashed whatever their mtime:
    they may have changed after they were read without their mtime changing.  A bucket's
    objects are compared by size and ETag instead: any write gives an object a new
    ETag, and an object uploaded again with the same bytes keeps its digests.
    """
    import polars as pl

    old = stored.datasets
    algorithms, columns = spec.digests.algorithms, spec.digests.columns
    by_etag = "etag" in index.datasets.columns and "etag" in old.columns
    before = old.select("eid", alf.file_name(stored.uuid_names).alias("_file"),
                        pl.col("file_size").alias("old_size"),
                        pl.col("mtime_ns").alias("old_mtime"), *columns,
                        *([pl.col("etag").alias("old_etag")] if by_etag else []))
    frame = (index.datasets.with_columns(_file=alf.file_name(index.uuid_names))
             .join(before, on=["eid", "_file"], how="left"))
    unchanged = (pl.col("old_etag") == pl.col("etag") if by_etag else
                 (pl.col("old_mtime") == pl.col("mtime_ns"))
                 & (pl.col("old_mtime") < racy_from_ns))
    same = ((pl.col("old_size") == pl.col("file_size")) & unchanged
            & pl.all_horizontal(pl.col(c).is_not_null() for c in columns))
    frame = frame.with_columns(keep=same.fill_null(False))
    reused = int(frame["keep"].sum())
    # what the walk listed: each read is bounded by its size and must find its mtime (a
    # bucket's object, its ETag)
    etags = "etag" in index.datasets.columns
    stale = frame.filter(~pl.col("keep")).select(
        "eid", "_file", "file_size", "mtime_ns",
        pl.col("etag") if etags else pl.lit(None, pl.String).alias("etag"))
    folders = index.session_folders
    jobs = [HashJob((eid, name), os.path.join(folders[eid].path, name),
                    alf.join(folders[eid].rel, name), size,
                    Listed(size, mtime_ns, etag=etag or None))
            for eid, name, size, mtime_ns, etag in stale.iter_rows()]
    digests, problems = engine.hash(jobs, algorithms, HASH_TASK_FILES)
    fresh = pl.DataFrame({
        "eid": [j.key[0] for j in jobs], "_file": [j.key[1] for j in jobs],
        "ok": [d is not None for d in digests],
        **{f"{c}_new": [(d or {}).get(a) for d in digests]
           for a, c in zip(algorithms, columns)},
    }, schema_overrides={"eid": pl.String, "_file": pl.String,
                         **{f"{c}_new": pl.String for c in columns}})
    frame = (frame.join(fresh, on=["eid", "_file"], how="left")
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


def _keep_missing(index: TreeIndex, stored: StoredTables) -> TreeIndex:
    """Keep the old rows whose files are gone, marked ``exists`` False, and their sessions.

    Refused (``InputError``) when the tree's naming changed (its files now carry their
    dataset's UUID, or no longer do): the old rows would be named the other way, and
    ONE would look for their files where neither naming puts them.
    """
    import polars as pl

    old_sessions, old = stored.sessions, stored.datasets
    if stored.uuid_names != index.uuid_names:
        now = "now carry" if index.uuid_names else "no longer carry"
        raise InputError(f"the tree's files {now} their dataset's UUID in their names: "
                         f"--keep-missing cannot keep rows named the other way; update "
                         f"without it")
    frame = index.datasets.with_columns(exists=pl.lit(True))
    # gone: neither its id nor its path is in the new rows (a row whose id differs, as
    # forged tables can have, must not become a second row for a file that is there)
    gone = (old.join(frame, on=["eid", "id"], how="anti")
            .join(frame.select("eid", "rel_path"), on=["eid", "rel_path"], how="anti")
            .with_columns(exists=pl.lit(False)))
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

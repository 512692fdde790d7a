"""``fastindex build`` and ``fastindex check``: a tree to its two tables, or to its problems.

Both take the spec and settings as keywords (``spec.options``), index the tree on an
``Engine``, and differ only in what they do with the index: ``build`` writes it through
the output folder's ``TableStore`` (under its lock; with ``strict``, only when nothing
was skipped or warned about), ``check`` returns it.  ``build`` writes nothing when a
folder above the sessions could not be listed (``ListingFailed``), nor tables that hold
far fewer sessions than the ones they replace unless ``allow_shrink`` (``check_shrink``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from fastindex import log
from fastindex.engine import Engine, TreeIndex
from fastindex.errors import ProblemsFound, Refusal, ShrinkRefused
from fastindex.progress import counted
from fastindex.results import BuildResult
from fastindex.root import Root, open_root
from fastindex.safefile import open_untrusted
from fastindex.spec import BuildSpec, RunSettings, options
from fastindex.store import TableStore


def build(root: str | os.PathLike | Root, out_dir: str | os.PathLike | None = None, *,
          strict: bool = False, quiet_paths: Iterable[str | os.PathLike] = (),
          **given) -> BuildResult:
    """Index the ALF tree under ``root`` and write ``sessions.pqt`` and ``datasets.pqt``.

    The tables go to ``out_dir`` (default: the root), which is made when missing and
    its parent exists.  ``given`` holds the options, by name (``spec.options``): what the
    tables hold (``hash`` one of ``none``, ``xxh3``, ``md5``, ``xxh3+md5``: md5 goes in
    ONE's ``hash`` column, xxh3 in an extra ``xxh3`` column; ``hash_ids``;
    ``namespace``; ``lab``; ``follow_symlinks``; ``exclude``, gitignore patterns of paths
    that are not data, besides the root's ``.fastindexignore``; ``default_ignores=False``
    reports OS litter instead of ignoring it), and how to run (``workers``, default the
    CPUs this process may use, 1 runs in this process; ``io_threads``, listings in
    flight per process, for network storage; ``executor``, any
    ``concurrent.futures.Executor``; ``client`` or ``scheduler`` for a Dask cluster;
    ``start_method``; ``progress``; ``allow_shrink``: replace tables that hold sessions
    with tables that hold none or fewer than half as many, else ``ShrinkRefused``,
    nothing written: a root one level too high or a tree not all there must not empty
    good tables); or ``spec=`` and ``settings=`` objects.
    ``strict``: raise ``ProblemsFound`` and write nothing when any file would be skipped
    or any warning given.  ``quiet_paths``: files under the root that are neither rows
    nor problems.  A folder above the sessions that cannot be listed raises
    ``ListingFailed`` (nothing written).
    """
    started = time.perf_counter()
    spec, settings = options(**given)
    root_path = open_root(root, settings)
    store = TableStore.output(root_path.tables_folder(out_dir, "--out"), create=True)
    with store.lock():
        result = build_in(store, root_path, (spec, settings),
                          strict_refusal if strict else None, quiet_paths, started)[1]
    log.outcome("build", root, result)
    return result


def strict_refusal(index: TreeIndex) -> ProblemsFound | None:
    """``--strict``: any file skipped or any warning refuses the build."""
    if not (index.skipped.height or index.warnings):
        return None
    return ProblemsFound(f"strict: {counted(index.skipped.height, 'file')} would be skipped "
                         f"and {counted(len(index.warnings), 'warning')} given; nothing "
                         f"was written",
                         index.skipped, index.warnings)


def build_in(store: TableStore, root: Root, how: tuple[BuildSpec, RunSettings],
             refuse: Refusal | None = None, quiet_paths: Iterable[str | os.PathLike] = (),
             started: float | None = None) -> tuple[TreeIndex, BuildResult]:
    """Index ``root`` and write its tables to ``store``, whose lock the caller holds:
    the index in memory, and what was written.  ``refuse`` sees the index first, and
    what it returns is raised instead of writing anything; then ``check_shrink``."""
    started = time.perf_counter() if started is None else started
    spec, settings = how
    quiet = store.own_files() | {str(Path(f).expanduser().resolve()) for f in quiet_paths}
    with Engine(root, settings) as engine:
        index = engine.index(spec, quiet, whole=True)
    refusal = refuse(index) if refuse else None
    if refusal is not None:
        raise refusal
    if not settings.allow_shrink:
        check_shrink(held_sessions(store), index.sessions.height, store, root, "build")
    return index, store.write(index, spec, started)


def held_sessions(store: TableStore) -> int:
    """How many sessions the tables in ``store`` hold, as their sessions table's footer
    says; 0 when there is none or it cannot be read (a damaged table is replaced)."""
    import pyarrow.parquet as pq

    try:
        with open_untrusted(store.paths[0], "table") as f:
            return pq.read_metadata(f).num_rows
    except Exception:  # none, a link, not regular, damaged (Arrow raises several types)
        return 0


def check_shrink(held: int, found: int, store: TableStore, root: Root, command: str) -> None:
    """Refuse (``ShrinkRefused``) to replace tables of ``held`` sessions with tables of
    ``found``, when that is none or fewer than half: the user says so with
    ``--allow-shrink``.  A prefix one level too high, a tree half copied or a mount
    not there would otherwise empty good tables without a word."""
    if held and found * 2 < held:
        raise ShrinkRefused(
            f"the tables in {store.folder} hold {counted(held, 'session')}; this {command} of "
            f"{root} found {found}, so nothing was written; check the root (one folder or "
            f"prefix too high or too low?), or replace them anyway with {command} "
            f"--allow-shrink")


def check(root: str | os.PathLike | Root, **given) -> TreeIndex:
    """What a build of ``root`` would index and skip, without writing anything.

    Takes the options of ``build``; ids are ONE's strings (they are not written).
    """
    spec, settings = options(**{"hash_ids": False, **given})
    with Engine(open_root(root, settings), settings) as engine:
        return engine.index(spec)

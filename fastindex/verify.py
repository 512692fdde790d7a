"""``fastindex verify``: does the tree still match its tables?

The tree is indexed again with the same workers (hashing with the algorithms whose
digests the tables hold, when asked), and compared with the tables row by row on the
path ONE loads each row from (``root/[lab/Subjects/]subject/date/NNN/rel_path``): a row
whose file is not there is ``missing`` (ONE cannot load it), and rows that resolve to
one file are ``same_path``.  This is what a user runs after unpacking a release.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex.errors import InputError
from fastindex.executors import default_workers, executor_for, given_executor
from fastindex.pipeline import (
    BuildOptions,
    check_root,
    index_tree,
    own_files,
)

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import polars as pl

# What can be wrong, in report order.
MISSING = "missing"  # in the tables, no file where ONE looks for it
UNINDEXED = "not_indexed"  # an ALF dataset on disk, not in the tables
SIZE = "size_mismatch"
CONTENT = "content_mismatch"
TABLES = "tables_mismatch"  # sessions and datasets come from different builds
SAME_PATH = "same_path"  # several rows that ONE loads from one file


@dataclass
class VerifyResult:
    """Every difference found; empty when the tree matches its tables."""

    differences: pl.DataFrame  # kind, path, expected, found
    checked: int  # dataset rows compared
    hashed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.differences.height == 0

    def summary(self) -> str:
        counts = self.differences["kind"].value_counts(sort=True).rows()
        found = ", ".join(f"{n} {kind}" for kind, n in counts) or "no differences"
        hashed = f", content checked with {'+'.join(self.hashed)}" if self.hashed else ""
        return f"{self.checked} datasets checked{hashed}: {found}"


def _table_meta(path: Path) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"fastindex", b"{}"))


def one_paths(sessions: pl.DataFrame, datasets: pl.DataFrame) -> pl.DataFrame:
    """Datasets keyed by the path ONE loads them from, not by ids (ids depend on options).

    The path is ``one.converters.session_record2path``'s, relative to the root.
    """
    import polars as pl

    lab = pl.col("lab").fill_null("")
    folder = pl.concat_str(
        pl.when(lab != "").then(lab + "/Subjects/").otherwise(pl.lit("")),
        pl.col("subject"), pl.lit("/"), pl.col("date").cast(pl.String), pl.lit("/"),
        pl.col("number").cast(pl.String).str.zfill(3), pl.lit("/"))
    ses = sessions.select(pl.col("id").alias("eid"), folder.alias("folder"))
    return (datasets.join(ses, on="eid", how="left")
            .with_columns(path=pl.col("folder") + pl.col("rel_path")))


def verify(root: str | os.PathLike, tables_dir: str | os.PathLike | None = None, *,
           hash: bool = False, workers: int | None = None, io_threads: int | None = None,
           executor: Executor | None = None, client=None, scheduler: str | None = None,
           progress: bool = False) -> VerifyResult:
    """Compare the tree under ``root`` with the tables in ``tables_dir`` (default: root).

    The workers start before the tables are read: reading them loads Arrow and polars,
    whose threads make a later fork unsafe (see ``executors.executor_for``).
    ``io_threads``, ``executor``, ``client`` and ``scheduler`` are as in ``build``.
    """
    root_path = check_root(root)  # read-only trees (a mounted release) are fine
    tables_path = Path(tables_dir).expanduser().resolve() if tables_dir else root_path
    files = [tables_path / "sessions.pqt", tables_path / "datasets.pqt"]
    for f in files:
        if not f.is_file():
            raise InputError(f"no table at {f}")
    with contextlib.ExitStack() as stack:
        executor = given_executor(stack, root_path, executor, client, scheduler)
        pool = stack.enter_context(executor_for(executor, workers or default_workers(), None,
                                                fork_now=True))
        import polars as pl

        try:
            sessions, datasets = (pl.read_parquet(f) for f in files)
        except Exception as err:  # polars raises several types for a damaged file
            raise InputError(f"cannot read the tables in {tables_path}: {err}") from None
        hashed = digests_held(datasets) if hash else ()
        if hash and not hashed:
            raise InputError(f"--hash: the tables in {tables_path} hold no digests (built "
                             f"without --hash), so no content could be compared; verify "
                             f"without --hash compares sizes, or build with --hash md5")
        meta = [_table_meta(f) for f in files]
        options = _options(meta[1].get("options", {}), hashed)
        fresh = index_tree(root_path, options, executor=pool, progress=progress,
                           ignore_paths=own_files(tables_path), io_threads=io_threads)
    ours = one_paths(sessions, datasets)
    disk = one_paths(fresh.sessions, fresh.datasets)
    diffs = [_compare(ours, disk, hashed), _same_path(ours)]
    ids = [m.get("build_id") for m in meta]
    if ids[0] != ids[1]:
        diffs.append(pl.DataFrame({"kind": [TABLES], "path": [str(tables_path)],
                                   "expected": [str(ids[1])], "found": [str(ids[0])]}))
    return VerifyResult(pl.concat(diffs).sort("kind", "path"), datasets.height, hashed)


def _options(built: dict, hashed: tuple[str, ...]) -> BuildOptions:
    """Index the tree as it was built: the same links followed, the same paths ignored
    (the build's ``--exclude`` patterns, and the root's ``.fastindexignore`` as it is now)."""
    return BuildOptions(hash_ids=False, follow_symlinks=bool(built.get("follow_symlinks")),
                        hash="+".join(hashed) or "none",
                        exclude=tuple(built.get("exclude", ())),
                        default_ignores=built.get("default_ignores", True))


def digests_held(datasets: pl.DataFrame) -> tuple[str, ...]:
    import polars as pl

    held = []
    if "xxh3" in datasets.columns and datasets["xxh3"].is_not_null().any():
        held.append("xxh3")
    if datasets.schema["hash"] != pl.Null and (datasets["hash"].fill_null("") != "").any():
        held.append("md5")
    return tuple(held)


def _same_path(ours: pl.DataFrame) -> pl.DataFrame:
    """Rows that ONE would load from one file (one-api writes them for ``2`` beside
    ``002``): at most one of them describes that file."""
    import polars as pl

    return (ours.group_by("path").agg(pl.len().alias("n"))
            .filter(pl.col("n") > 1)
            .select(kind=pl.lit(SAME_PATH), path="path",
                    expected=pl.lit("1 row"), found=pl.format("{} rows", "n")))


def _compare(ours: pl.DataFrame, disk: pl.DataFrame, hashed: tuple[str, ...]) -> pl.DataFrame:
    import polars as pl

    path = pl.col("path")
    both = ours.join(disk, on="path", how="full", coalesce=True, suffix="_disk")
    checks = [
        (MISSING, pl.col("file_size_disk").is_null(), pl.col("file_size"), pl.lit(None)),
        (UNINDEXED, pl.col("file_size").is_null(), pl.lit(None), pl.col("file_size_disk")),
        (SIZE, pl.col("file_size") != pl.col("file_size_disk"), pl.col("file_size"),
         pl.col("file_size_disk")),
    ]
    for algo in hashed:
        column = "hash" if algo == "md5" else "xxh3"
        checks.append((CONTENT, (pl.col("file_size") == pl.col("file_size_disk"))
                       & (pl.col(column) != pl.col(f"{column}_disk")),
                       pl.lit(f"{algo}:") + pl.col(column),
                       pl.lit(f"{algo}:") + pl.col(f"{column}_disk")))
    return pl.concat([
        both.filter(mask.fill_null(False)).select(
            kind=pl.lit(kind), path=path, expected=expected.cast(pl.String),
            found=found.cast(pl.String))
        for kind, mask, expected, found in checks
    ]).unique(maintain_order=True)

"""What the table commands give back: the tables a folder holds as read (``StoredTables``),
an index's tables as they are written (``Rendered``), and what a write wrote
(``BuildResult``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex.progress import counted, human_bytes

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from fastindex.engine import TreeIndex
    from fastindex.problems import Problem


@dataclass
class StoredTables:
    """Both tables of a folder as read, with what fastindex recorded in them."""

    sessions: pl.DataFrame
    datasets: pl.DataFrame
    provenance: dict | None  # the datasets table's ``fastindex`` entry; None: another tool's
    build_ids: tuple[str | None, str | None]  # of the sessions and the datasets table
    #: the tree's files carry their dataset's UUID (``provenance.uuid_names``)
    uuid_names: bool = False


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
        sessions_path, datasets_path = paths
        return BuildResult(sessions_path, datasets_path, index.sessions.height,
                           index.datasets.height, self.total_bytes, index.skipped, index.warnings,
                           time.perf_counter() - started, self.build_id, index.ignored,
                           self.tables)

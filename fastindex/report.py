"""Reports of skipped files, warnings and differences, as CSV or JSON.

The report's path is checked before any work (``check_report_path``) so that a typo
costs nothing, and the file is written under a temporary name and renamed into place,
so a half-written report is never left where a user would read it.  polars is imported
inside the functions: the CLI checks the path before its workers start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex.errors import InputError
from fastindex.problems import Problem
from fastindex.safefile import replacing

if TYPE_CHECKING:
    import polars as pl

SUFFIXES = (".csv", ".json")


def check_report_path(path: Path) -> Path:
    """``path``, or an ``InputError`` when a report could not be written there."""
    path = path.expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"--report {path}: the name must end in .csv or .json")
    folder = path.parent.resolve()
    if not folder.is_dir():
        raise InputError(f"--report {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"--report {path}: the folder {folder} is not writable")
    if path.is_dir():
        raise InputError(f"--report {path}: that is a folder")
    return path


def problems_frame(skipped: pl.DataFrame, warnings: list[Problem]) -> pl.DataFrame:
    """Skipped files and warnings in one frame, with a ``kind`` column to tell them apart."""
    import polars as pl

    warned = pl.DataFrame([w._asdict() for w in warnings],
                          schema={"path": pl.String, "reason": pl.String, "detail": pl.String})
    return pl.concat([
        skipped.with_columns(kind=pl.lit("skipped")),
        warned.with_columns(kind=pl.lit("warning")),
    ]).select("kind", "path", "reason", "detail")


def write_report(path: Path, frame: pl.DataFrame, summary: dict | str,
                 key: str = "problems") -> None:
    """JSON (``{"summary": ..., key: rows}``) when ``path`` ends in ``.json``, else CSV."""
    with replacing(path) as out:  # created exclusively beside it, then renamed over it
        if path.suffix.lower() == ".json":
            out.write((json.dumps({"summary": summary, key: frame.to_dicts()}, indent=1,
                                  ensure_ascii=False) + "\n").encode())
        else:  # rendered here, written by Python: a full disk is then an errno, not text
            out.write(frame.write_csv().encode())

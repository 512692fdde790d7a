"""Write the problems of a build (skipped files and warnings) as CSV or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from fastindex.problems import Problem


def problems_frame(skipped: pl.DataFrame, warnings: list[Problem]) -> pl.DataFrame:
    """Skipped files and warnings in one frame, with a ``kind`` column to tell them apart."""
    warned = pl.DataFrame([w._asdict() for w in warnings],
                          schema={"path": pl.String, "reason": pl.String, "detail": pl.String})
    return pl.concat([
        skipped.with_columns(kind=pl.lit("skipped")),
        warned.with_columns(kind=pl.lit("warning")),
    ]).select("kind", "path", "reason", "detail")


def write_report(path: Path, skipped: pl.DataFrame, warnings: list[Problem],
                 summary: dict) -> None:
    """JSON when ``path`` ends in ``.json`` (summary and problems), CSV otherwise."""
    frame = problems_frame(skipped, warnings)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"summary": summary, "problems": frame.to_dicts()},
                                   indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        frame.write_csv(path)

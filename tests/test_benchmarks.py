"""Smoke test of the scaling benchmark: it runs end to end and writes its table and plot.

Timings are not asserted: they belong to the benchmark's own runs, not to the tests.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_scale_benchmark_writes_its_table_and_plot(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(BENCH / "bench_scale.py"), "--sizes", "300",
                           "600", "--repeat", "1", "--one-max", "300", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "scale.csv") as f:
        rows = list(csv.DictReader(f))
    commands = {r["command"] for r in rows}
    assert {"find -printf", "python scandir walk", "fastindex 1 worker",
            "one-api make_parquet_db"} <= commands
    one_api = {int(r["files"]): r["extrapolated"] for r in rows
               if r["command"] == "one-api make_parquet_db"}
    assert list(one_api.values()) == ["False", "True"]  # measured, then extrapolated
    assert (tmp_path / "scale.png").stat().st_size > 10_000
    assert "fastindex" in done.stdout


def test_release_benchmark_runs_each_path_and_writes_its_table(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(BENCH / "bench_release.py"), "--files", "300",
                           "--repeat", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "release.json").read_text())["rows"]
    assert set(rows) == {"zip -r -0 (alone)", "release --compression store",
                         "release --compression deflate",
                         "by hand: check + build + verify + zip -r"}
    assert all(r["zip_bytes"] > 0 for r in rows.values())


def test_latency_benchmark_runs_every_command_and_writes_its_table(tmp_path) -> None:
    """Without FUSE (--smoke): the commands, the table, the CSV, JSON and plot."""
    done = subprocess.run([sys.executable, str(BENCH / "bench_latency.py"), "--smoke",
                           "--files", "300", "--threads", "0", "8", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=BENCH)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "latency.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["command"] for r in rows] == [
        "find", "python scandir walk", "fastindex (default)", "fastindex --io-threads 0",
        "fastindex --io-threads 8", "one-api make_parquet_db"]
    assert {r["files"] for r in rows} == {"300"}
    assert json.loads((tmp_path / "latency.json").read_text())["rows"][0]["command"] == "find"
    assert (tmp_path / "latency.png").stat().st_size > 10_000

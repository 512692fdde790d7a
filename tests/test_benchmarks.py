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


def test_objectstore_benchmark_counts_requests_on_a_tree_of_small_subjects(tmp_path) -> None:
    """--shape small-subjects regroups the sessions into subjects of about 6.7 sessions;
    every row on the URL carries the keys served and the endpoint's counters; s5cmd's row
    is there when s5cmd is installed, and a note says so when not."""
    done = subprocess.run([sys.executable, str(BENCH / "bench_objectstore.py"), "--files",
                           "1000", "--shape", "small-subjects", "--no-mount", "--repeat", "1",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=BENCH)
    assert done.returncode == 0, done.stderr
    made = next(ln for ln in done.stderr.splitlines() if ln.endswith(" sessions"))
    subjects, sessions = (int(w) for w in made.split() if w.isdigit())
    assert sessions == 67 and subjects == 10  # treegen's 40 + 27, cut 6 and 4 ways
    result = json.loads((tmp_path / "objectstore-1k-small-subjects.json").read_text())
    rows = {r["command"]: r for r in result["rows"]}
    assert {(r["shape"], r["files"]) for r in rows.values()} == {("small-subjects", 1005)}
    paginator = rows.pop("boto3 paginator (by hand)")
    assert (paginator["requests"], paginator["list_pages"], paginator["max_in_flight"]) == (
        2, 2, 1)  # 1,005 keys: two pages, one request at a time
    fastindex = rows.pop("fastindex build s3://")
    assert fastindex["requests"] >= fastindex["list_pages"] > 1
    assert fastindex["max_in_flight"] >= 1
    if "s5cmd ls" in rows:
        assert rows.pop("s5cmd ls")["list_pages"] == 2
    else:
        assert "s5cmd is not installed" in result["title"]
    assert not rows


def test_one_load_benchmark_times_each_loader_and_checks_the_frames(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(BENCH / "bench_one_load.py"), "--sizes", "300",
                           "--repeat", "1", "--workdir", str(tmp_path), "--out",
                           str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=BENCH)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "one-load.json").read_text())["rows"]
    assert [r["case"] for r in rows] == [
        "ONE's loader, uuid ids", "fast path, uuid ids", "ONE's loader, string ids (floor)",
        "fast path installed, string ids", "ONE's loader, uuid ids, rows shuffled",
        "ONE's loader, ids of Arrow's uuid type"]
    assert all(r["frames_equal"] and r["one_s"] > 0 for r in rows)
    assert {r["files"] for r in rows} == {300}
    assert (tmp_path / "one-load-300" / "shuffled" / "datasets.pqt").exists()  # kept

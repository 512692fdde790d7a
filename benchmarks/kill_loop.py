"""Kill fastindex at random moments and check that nothing is lost.

    python benchmarks/kill_loop.py [--files 20000] [--rounds 24] [--seed 0]

On a generated tree, ``build``, ``update``, ``release`` and ``fix --apply`` are each run
``--rounds`` times and sent SIGKILL, SIGINT or SIGTERM (drawn at random) at a random
moment within the time an uninterrupted run takes.  After every kill:

- the tables are one pair: both there, with one build id, or, after SIGKILL only, a pair
  cut between its two renames (counted), which the next run must finish (SIGINT and
  SIGTERM are held during the renames: a cut pair after them is a failure; the moment
  between the renames is tested deterministically in tests/test_swap.py);
- the next, uninterrupted run of the same command succeeds and leaves no temporary file
  (``.*.tmp``) in the tree or beside the zip, and one pair of tables;
- for ``fix``: ``fix --undo JOURNAL`` puts the tree back exactly as it was.

Prints a table of outcomes per command and writes benchmarks/results/kill_loop.json.
Exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from measure import machine

from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent
TABLES = ("sessions.pqt", "datasets.pqt")


def fastindex(*args: str | Path) -> list[str]:
    """The console script, as a user runs it."""
    return [str(Path(sys.executable).parent / "fastindex"), *map(str, args)]


def build_ids(root: Path) -> tuple[str | None, str | None] | None:
    """Both tables' build ids, or None when there are no tables."""
    if not all((root / t).exists() for t in TABLES):
        return None
    return tuple(json.loads(pq.read_schema(root / t).metadata[b"fastindex"]).get("build_id")
                 for t in TABLES)


def temporaries(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.glob(".*.tmp"))


def snapshot(root: Path) -> list[str]:
    """The tree's folders and files (not the tables), as fix may change them."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name not in TABLES and not p.name.endswith(".tmp"))


def unpad(root: Path, rng: random.Random, n: int = 40) -> None:
    """Give ``n`` sessions a folder ONE does not look in (``001`` -> ``1``): fix's work."""
    sessions = sorted(p for p in root.glob("*/Subjects/*/*/001"))
    for session in rng.sample(sessions, min(n, len(sessions))):
        session.rename(session.with_name("1"))


def timed(cmd: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - began


def kill_at_random(cmd: list[str], duration: float, rng: random.Random) -> tuple[str, int]:
    """Run ``cmd`` and signal it at a random moment; (signal name, exit code)."""
    sig = rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(rng.uniform(0.02, 1.0) * duration)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if b"Traceback" in err:
        raise RuntimeError(f"{cmd[1]} printed a traceback on {sig.name}:\n{err.decode()}")
    return sig.name, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fastindex-kill-"))
    tree, out = work / "tree", work / "out"
    out.mkdir()
    make_tree(tree, files=args.files, shape="behaviour", seed=args.seed)
    subprocess.run(fastindex("build", tree, "--hash", "md5", "--quiet"), check=True)
    release_zip = out / "r.zip"
    commands = {
        "build": fastindex("build", tree, "--hash", "md5", "--quiet"),
        "update": fastindex("update", tree, "--quiet"),
        "release": fastindex("release", tree, release_zip, "--quiet"),
    }
    results: dict[str, dict] = {}
    failures: list[str] = []
    for name, cmd in commands.items():
        duration = timed(cmd)
        tally = results[name] = {"seconds uninterrupted": round(duration, 2), "kills": 0,
                                 "SIGKILL": 0, "SIGINT": 0, "SIGTERM": 0, "half swaps": 0,
                                 "failed": 0}
        for _ in range(args.rounds):
            sig, _code = kill_at_random(cmd, duration, rng)
            tally["kills"] += 1
            tally[sig] += 1
            ids = build_ids(tree)
            if ids is None:
                failures.append(f"{name} after {sig}: no tables left")
            elif ids[0] != ids[1]:
                tally["half swaps"] += 1
                if sig != "SIGKILL":
                    tally["failed"] += 1
                    failures.append(f"{name} after {sig}: the tables cut between renames")
            done = subprocess.run(cmd, capture_output=True, text=True)
            ids = build_ids(tree)
            left = temporaries(tree, out)
            if done.returncode != 0 or ids is None or ids[0] != ids[1] or left:
                tally["failed"] += 1
                failures.append(f"{name} after {sig}: exit {done.returncode}, ids {ids}, "
                                f"temporaries {left}: {done.stderr.strip()[-300:]}")
    results["fix"] = _fix_rounds(tree, work, args.rounds, rng, failures)
    print(f"{args.files} files; {machine()}")
    print(f"{'command':9} {'kills':>6} {'SIGKILL':>8} {'SIGINT':>7} {'SIGTERM':>8} "
          f"{'half swaps':>11} {'failed':>7}  uninterrupted")
    for name, t in results.items():
        print(f"{name:9} {t['kills']:6} {t['SIGKILL']:8} {t['SIGINT']:7} {t['SIGTERM']:8} "
              f"{t.get('half swaps', '-'):>11} {t['failed']:7}  {t['seconds uninterrupted']} s")
    for failure in failures:
        print(f"FAILED: {failure}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "kill_loop.json").write_text(json.dumps(
        {"files": args.files, "machine": machine(), "results": results,
         "failures": failures}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def _fix_rounds(tree: Path, work: Path, rounds: int, rng: random.Random,
                failures: list[str]) -> dict:
    """Kill ``fix --apply``; its journal's ``--undo`` must restore the tree exactly."""
    unpad(tree, rng)
    journal = work / "fix.jsonl"
    apply = fastindex("fix", tree, "--apply", "--journal", journal)
    duration = timed(apply)
    subprocess.run(fastindex("fix", tree, "--undo", journal), check=True, capture_output=True)
    tally = {"seconds uninterrupted": round(duration, 2), "kills": 0, "SIGKILL": 0,
             "SIGINT": 0, "SIGTERM": 0, "failed": 0}
    before = snapshot(tree)
    for _ in range(rounds):
        journal.unlink(missing_ok=True)
        sig, _code = kill_at_random(apply, duration, rng)
        tally["kills"] += 1
        tally[sig] += 1
        if journal.exists():
            undo = subprocess.run(fastindex("fix", tree, "--undo", journal),
                                  capture_output=True, text=True)
            if undo.returncode != 0:
                failures.append(f"fix --undo after {sig}: exit {undo.returncode}: "
                                f"{undo.stderr.strip()[-300:]}")
        if snapshot(tree) != before:
            tally["failed"] += 1
            failures.append(f"fix after {sig}: --undo did not restore the tree")
            break
    return tally


if __name__ == "__main__":
    sys.exit(main())

"""How long ``One(cache_dir, mode='local')`` takes to open fastindex's tables.

    python benchmarks/bench_one_load.py [--sizes 74000 1000000] [--repeat 3]
                                        [--workdir DIR] [--out DIR] [--baseline GIT-REF]

For each size, the IBL-behaviour tree of bench_scale.py (sparse files, seed 0) is
generated and built by `fastindex build` twice, with uuid ids and with `--string-ids`;
the tree is then deleted and the tables kept in --workdir (reused by a later run with the
same --workdir).  Two more copies of the uuid tables try layouts on ONE's unchanged
loader: rows shuffled (fastindex writes them already in the order ONE sorts them to, so
this shows what that order saves) and ids of Arrow's uuid type (read by pyarrow as
``uuid.UUID`` objects).  Then, each in a fresh process, in turn,
--repeat times after a warm-up: `One(...)` with ONE's own loader on the uuid tables,
with fastindex's fast path (`fastindex.use_fast_load()`) on the same tables, ONE's loader
on the string-id tables (the floor ONE reaches already), the fast path installed on the
string-id tables (where it hands over to ONE's loader), and ONE's loader on the two
other layouts.  The time is that of the `One(...)` call alone (what every script pays on
top of its imports), median of --repeat.  Once per size, a separate process checks that
the fast path's frames equal ONE's.  Writes one-load.csv and one-load.json to --out
(default benchmarks/results).  --baseline adds the fast path as of a commit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_build import worktree
from measure import machine, write_rows

from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent

OPEN = """
import sys, time, warnings
warnings.simplefilter("ignore")
from one.api import One
if sys.argv[2] == "fast":
    import fastindex
    assert fastindex.use_fast_load()
start = time.perf_counter()
One(cache_dir=sys.argv[1], mode="local")
print(time.perf_counter() - start)
"""

CHECK = """
import sys, warnings
warnings.simplefilter("ignore")
from one.alf.cache import load_tables
from fastindex import load_one_tables
fast, theirs = load_one_tables(sys.argv[1]), load_tables(sys.argv[1])
for name in ("sessions", "datasets"):
    a, b = fast[name], theirs[name]
    assert a.equals(b) and a.index.equals(b.index), name
    if a.index.nlevels > 1:
        assert all(x.equals(y) for x, y in zip(a.index.levels, b.index.levels)), name
    assert type(a.index[0][0] if a.index.nlevels > 1 else a.index[0]).__name__ == "UUID"
    assert list(a.dtypes) == list(b.dtypes)
print("equal")
"""


def tables(size: int, workdir: Path) -> dict[str, Path]:
    """The tables of a size's tree in each layout measured, made once."""
    home = workdir / f"one-load-{size}"
    made = {kind: home / kind for kind in ("uuid", "string", "shuffled", "uuid-typed")}
    if all((path / "datasets.pqt").exists() for path in made.values()):
        return made
    tree = home / "tree"
    print(f"generating {size} files ...", file=sys.stderr)
    make_tree(tree, files=size, shape="behaviour", seed=0, sparse_size=4096)
    for kind, extra in (("uuid", []), ("string", ["--string-ids"])):
        subprocess.run([sys.executable, "-m", "fastindex", "build", str(tree), "--out",
                        str(made[kind]), "--quiet", *extra], check=True)
    shutil.rmtree(tree)
    write_layouts(made)
    return made


def write_layouts(made: dict[str, Path]) -> None:
    """The uuid tables again, schema metadata kept: their rows shuffled (fastindex writes
    them in the UUIDs' integer order, the order ONE sorts them to), and their ids as
    Arrow's uuid type (which pyarrow hands pandas as ``uuid.UUID`` objects)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    for kind in ("shuffled", "uuid-typed"):
        made[kind].mkdir(parents=True, exist_ok=True)
    for name, keys in (("sessions", ["id"]), ("datasets", ["eid", "id"])):
        table = pq.read_table(made["uuid"] / f"{name}.pqt")
        order = np.random.default_rng(0).permutation(table.num_rows)
        pq.write_table(table.take(order), made["shuffled"] / f"{name}.pqt")
        for key in keys:
            ids = pa.array([bytes.fromhex(x.replace("-", "")) for x in
                            table.column(key).to_pylist()], pa.binary(16))
            table = table.set_column(table.schema.get_field_index(key), key,
                                     pa.ExtensionArray.from_storage(pa.uuid(), ids))
        pq.write_table(table, made["uuid-typed"] / f"{name}.pqt")


def open_once(folder: Path, loader: str, where: dict) -> float:
    done = subprocess.run([sys.executable, "-c", OPEN, str(folder), loader],
                          capture_output=True, text=True, check=True, **where)
    return float(done.stdout.split()[-1])


def measure_size(size: int, args, workdir: Path, base: Path | None) -> list[dict]:
    made = tables(size, workdir)
    cases = {
        "ONE's loader, uuid ids": (made["uuid"], "one"),
        "fast path, uuid ids": (made["uuid"], "fast"),
        "ONE's loader, string ids (floor)": (made["string"], "one"),
        "fast path installed, string ids": (made["string"], "fast"),
        "ONE's loader, uuid ids, rows shuffled": (made["shuffled"], "one"),
        "ONE's loader, ids of Arrow's uuid type": (made["uuid-typed"], "one"),
    }
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    where = {name: {"env": env} for name in cases}
    if base:
        name = f"fast path {args.baseline}, uuid ids"
        cases[name] = (made["uuid"], "fast")
        where[name] = {"env": {**os.environ, "PYTHONPATH": str(base)}, "cwd": base}
    check = subprocess.run([sys.executable, "-c", CHECK, str(made["uuid"])], env=env,
                           capture_output=True, text=True)
    print(f"  {size}: fast path vs ONE's frames: {check.stdout.strip() or check.stderr[-500:]}",
          file=sys.stderr)
    for name, (folder, loader) in cases.items():
        open_once(folder, loader, where[name])  # warm-up: page cache, imports
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # in turn, so that a slow minute hits every case
        for name, (folder, loader) in cases.items():
            samples[name].append(open_once(folder, loader, where[name]))
    rows = []
    for name, (folder, _) in cases.items():
        seconds = statistics.median(samples[name])
        rows.append({"files": size, "case": name, "one_s": seconds,
                     "samples": " ".join(f"{s:.2f}" for s in samples[name]),
                     "datasets_mb": (folder / "datasets.pqt").stat().st_size / 2**20,
                     "frames_equal": check.stdout.strip() == "equal"})
        print(f"  {size} {name}: {seconds:.2f} s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[74_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path,
                        help="where tables are made and kept for later runs (default: tmp)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--baseline", metavar="GIT-REF",
                        help="also time the fast path as of this commit (an A/B)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base = (stack.enter_context(worktree(args.baseline, workdir / "baseline"))
                if args.baseline else None)
        rows = [r for size in args.sizes for r in measure_size(size, args, workdir, base)]
    title = f"{machine()}; One(cache_dir, mode='local'), medians of {args.repeat}"
    write_rows(rows, args.out, "one-load", title)
    print(f"\n{title}")
    print(f"{'files':>9} {'case':42} {'One() s':>8} {'/ fast':>7}")
    for r in rows:
        fast = next(x for x in rows if x["files"] == r["files"]
                    and x["case"] == "fast path, uuid ids")
        print(f"{r['files']:9d} {r['case']:42} {r['one_s']:8.2f} "
              f"{r['one_s'] / fast['one_s']:7.2f}")
    print(json.dumps({"frames_equal": all(r["frames_equal"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How fastindex scales with the size of the tree, beside one-api, find and a bare walk.

    python benchmarks/bench_scale.py [--sizes 10000 74000 300000 1000000] [--repeat 3]
                                     [--one-max 74000] [--workdir DIR] [--out DIR]
                                     [--baseline GIT-REF] [--shape behaviour]

For each size, a tree of sparse files of --shape (treegen's shapes: behaviour, 40
sessions a subject; wide, 2: many small subjects) is generated (deterministic, seed 0;
kept in --workdir when one is given, and reused by later runs), then, side by side on
the same warm tree, as whole processes: `find -printf '%s %P\\n'`, a bare Python
os.scandir walk (benchmarks/scandir_walk.py), `fastindex build` with 1 and N workers,
and one-api's make_parquet_db up to --one-max files; above that one-api's time and
memory are extrapolated linearly from the largest size it ran, and marked so.  Wall
and CPU time are medians of --repeat runs; peak memory is the PSS of the whole process
tree (workers included) in one separately sampled run.  CPU is also given per million
files, user and system apart (the process and the workers it waited for), so the gap
above the bare walk, the floor for a Python lister, shows.
Writes scale.csv, scale.json and scale.png (log-log time and memory against files) to
--out (default benchmarks/results).  --baseline adds fastindex as of a commit with N
workers, run in turn with the others: an A/B at every size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench_build import worktree
from measure import machine, median, per_million, run, write_rows

from fastindex.executors import default_workers
from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent
ONE_API = ("import sys, warnings; warnings.simplefilter('ignore');"
           "from one.alf.cache import make_parquet_db; make_parquet_db(sys.argv[1], sys.argv[2])")


def commands(tree: Path, out: Path, workers: int) -> dict[str, list[str]]:
    fastindex = [sys.executable, "-m", "fastindex", "build", str(tree), "--out", str(out),
                 "--quiet", "--workers"]
    return {
        "find -printf": ["find", str(tree), "-type", "f", "-printf", "%s %P\n"],
        "python scandir walk": [sys.executable, str(HERE / "scandir_walk.py"), str(tree)],
        "fastindex 1 worker": [*fastindex, "1"],
        f"fastindex {workers} workers": [*fastindex, str(workers)],
        "one-api make_parquet_db": [sys.executable, "-c", ONE_API, str(tree), str(out)],
    }


def measure_size(size: int, args, workdir: Path, workers: int, base: Path | None
                 ) -> list[dict]:
    trees = args.workdir or workdir  # kept there, for the next run
    tree, out = trees / f"tree-{args.shape}-{size}", workdir / f"out-{size}"
    out.mkdir(parents=True, exist_ok=True)
    files = cached_tree(tree, size, args.shape)
    rows = []
    cmds = commands(tree, out, workers)
    where: dict[str, dict] = {}
    if base:
        name = f"fastindex {args.baseline} {workers} workers"
        cmds[name] = cmds[f"fastindex {workers} workers"]
        where[name] = {"cwd": base, "env": {**os.environ, "PYTHONPATH": str(base)}}
    if files > args.one_max:
        cmds = {k: v for k, v in cmds.items() if not k.startswith("one-api")}
    for name, cmd in cmds.items():
        run(cmd, **where.get(name, {}))  # warm-up: page cache, imports
    samples: dict[str, list] = {k: [] for k in cmds}
    for i in range(args.repeat):  # in turn, so that a slow minute hits every command
        for name, cmd in cmds.items():
            if not (name.startswith("one-api") and i):
                samples[name].append(run(cmd, **where.get(name, {})))
    for name, cmd in cmds.items():
        peak = run(cmd, memory=True, **where.get(name, {})).peak_mb
        timing = median(samples[name])
        rows.append({"files": files, "command": name, "wall_s": timing.wall_s,
                     "cpu_s": timing.cpu_s, "peak_mb": peak, "extrapolated": False,
                     "user_s_per_m": per_million(timing.user_s, files),
                     "sys_s_per_m": per_million(timing.sys_s, files)})
        print(f"  {files} {name}: {timing.wall_s:.2f} s, {peak:.0f} MB", file=sys.stderr)
    if not args.workdir:
        shutil.rmtree(tree)
    shutil.rmtree(out)
    return rows


def cached_tree(tree: Path, size: int, shape: str) -> int:
    """The files of ``tree``, generated unless a complete one is there (its count is
    written last, so an interrupted generation is made again)."""
    done = tree.with_name(tree.name + ".files")
    if done.exists():
        return int(done.read_text())
    if tree.exists():
        shutil.rmtree(tree)
    print(f"generating {size} files ...", file=sys.stderr)
    files = make_tree(tree, files=size, shape=shape, seed=0, sparse_size=4096)
    done.write_text(str(files))
    return files


def extrapolate_one_api(rows: list[dict]) -> list[dict]:
    """one-api's larger sizes, on the line through its two largest runs.

    one-api is linear in files (measured: 14 s at 74k, 66 s at 300k) with a fixed start;
    with a single run, its time and memory are scaled in proportion.
    """
    measured = sorted((r for r in rows if r["command"].startswith("one-api")),
                      key=lambda r: r["files"])
    if not measured:
        return []
    base = measured[-1]
    low = measured[-2] if len(measured) > 1 else {k: 0 for k in base}

    def line(key: str, n: int) -> float:
        slope = (base[key] - low[key]) / (base["files"] - low["files"])
        return base[key] + slope * (n - base["files"])

    sizes = sorted({r["files"] for r in rows if r["files"] > base["files"]})
    return [{**base, "files": n, "wall_s": line("wall_s", n), "cpu_s": line("cpu_s", n),
             "peak_mb": line("peak_mb", n), "extrapolated": True} for n in sizes]


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in dict.fromkeys(r["command"] for r in rows):
        for extrapolated, style in ((False, "-o"), (True, ":x")):
            pts = sorted((r["files"], r["wall_s"], r["peak_mb"]) for r in rows
                         if r["command"] == name and r["extrapolated"] == extrapolated)
            if not pts:
                continue
            label = name + (" (extrapolated)" if extrapolated else "")
            ax_t.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            ax_m.plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
    for ax, ylabel in ((ax_t, "wall time (s)"), (ax_m, "peak memory, whole process tree (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("files in the tree")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 74_000, 300_000,
                                                                   1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one-max", type=int, default=74_000)
    parser.add_argument("--workdir", type=Path, help="where to generate trees (default: tmp)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--baseline", metavar="GIT-REF",
                        help="also run fastindex as of this commit (an A/B)")
    parser.add_argument("--shape", default="behaviour", choices=("behaviour", "wide"),
                        help="the tree's shape (treegen): wide is many small subjects")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="redo the table and plot from an earlier scale.json")
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads(args.replot.read_text())
        report(saved["rows"], args.out, saved["title"], default_workers())
        return 0
    workers = default_workers()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, contextlib.ExitStack() as stack:
        base = (stack.enter_context(worktree(args.baseline, Path(tmp) / "baseline"))
                if args.baseline else None)
        rows = [r for size in args.sizes
                for r in measure_size(size, args, Path(tmp), workers, base)]
    report(rows, args.out, f"{args.shape} tree; {machine()}; medians of {args.repeat}",
           workers)
    return 0


def report(rows: list[dict], out: Path, title: str, workers: int) -> None:
    """Extrapolate one-api, then write the CSV, JSON and plot, and print the table."""
    rows = [r for r in rows if not r["extrapolated"]]
    rows += extrapolate_one_api(rows)
    rows.sort(key=lambda r: (r["files"], r["command"]))
    write_rows(rows, out, "scale", title)
    plot(rows, out / "scale.png", title)

    fast = f"fastindex {workers} workers"
    print(f"\n{title}")
    print(f"{'files':>9} {'command':28} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} "
          f"{'/ fastindex':>11} {'user s/M':>8} {'sys s/M':>8}")
    for r in rows:
        best = next(x for x in rows if x["files"] == r["files"] and x["command"] == fast)
        mark = " (extrapolated)" if r["extrapolated"] else ""
        print(f"{r['files']:9d} {r['command']:28} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} "
              f"{r['peak_mb']:8.0f} {r['wall_s'] / best['wall_s']:11.2f} "
              f"{r.get('user_s_per_m', 0):8.2f} {r.get('sys_s_per_m', 0):8.2f}{mark}")


if __name__ == "__main__":
    sys.exit(main())

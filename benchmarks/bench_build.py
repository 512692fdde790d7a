"""fastindex build against one-api's make_parquet_db and `find`, side by side, one run.

The Dask row starts a LocalCluster inside the process, so it shows the whole overhead of
the distributed path (cluster start included) on this machine.

    python benchmarks/bench_build.py [--files 74000] [--repeat 5] [--tree DIR]
                                     [--baseline GIT-REF]

Every command runs as a whole process (interpreter start and imports included), on the
same tree with a warm page cache, in rotation, ``--repeat`` times; medians of wall and CPU
time are reported with ratios and CPU per million files (user and system, the workers
included), beside a bare Python os.scandir walk (benchmarks/scandir_walk.py), the floor
for a Python lister, and written to benchmarks/results/build.json.  Peak
memory (PSS of the whole process tree) comes from one extra, separately sampled run.
``--baseline`` adds a row for fastindex as of a git commit (checked out in a temporary
worktree), in the same rotation: an A/B of a change on the same tree, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import behaviour_tree, machine, median, per_million, run

from fastindex.executors import default_workers

HERE = Path(__file__).resolve().parent
ONE_API = ("import sys, warnings; warnings.simplefilter('ignore');"
           "from one.alf.cache import make_parquet_db; make_parquet_db(sys.argv[1], sys.argv[2])")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=74_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="an existing tree (default: generate one)")
    parser.add_argument("--one-repeat", type=int, default=1,
                        help="runs of one-api (slow: ~0.2 ms per file)")
    parser.add_argument("--baseline", metavar="GIT-REF",
                        help="also run fastindex as of this commit, for an A/B")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        tree = behaviour_tree(args.tree, args.files, tmp)
        files = sum(len(names) for _, _, names in os.walk(tree))  # for CPU per million
        out = tmp / "out"
        out.mkdir()
        n = default_workers()
        commands = {
            "find -printf": ["find", str(tree), "-type", "f", "-printf", "%s %P\n"],
            "python scandir walk": [sys.executable, str(HERE / "scandir_walk.py"), str(tree)],
            "fastindex 1 worker": [sys.executable, "-m", "fastindex", "build", str(tree),
                                   "--out", str(out), "--quiet", "--workers", "1"],
            f"fastindex {n} workers": [sys.executable, "-m", "fastindex", "build", str(tree),
                                       "--out", str(out), "--quiet", "--workers", str(n)],
            f"fastindex on Dask local:{n}": [sys.executable, "-m", "fastindex", "build",
                                              str(tree), "--out", str(out), "--quiet",
                                              "--scheduler", f"local:{n}"],
            "one-api make_parquet_db": [sys.executable, "-c", ONE_API, str(tree), str(out)],
        }
        if args.one_repeat == 0:
            del commands["one-api make_parquet_db"]
        where: dict[str, dict] = {}  # run() options of a command
        if args.baseline:
            base = stack.enter_context(worktree(args.baseline, tmp / "baseline"))
            name = f"fastindex {args.baseline} {n} workers"
            commands[name] = commands[f"fastindex {n} workers"]
            where[name] = {"cwd": base, "env": {**os.environ, "PYTHONPATH": str(base)}}
        run(commands["find -printf"])  # warm the page cache
        peak = {name: run(cmd, memory=True, **where.get(name, {})).peak_mb
                for name, cmd in commands.items()}
        samples: dict[str, list] = {k: [] for k in commands}
        for i in range(args.repeat):
            for name, cmd in commands.items():
                if name.startswith("one-api") and i >= args.one_repeat:
                    continue
                samples[name].append(run(cmd, **where.get(name, {})))
                print(f"  {name}: {samples[name][-1].wall_s:.2f} s", file=sys.stderr)

    rows = {k: median(v) for k, v in samples.items()}
    for name, r in rows.items():
        r.peak_mb = peak[name]
    best = rows[f"fastindex {n} workers"]
    print(f"\n{args.files} files, IBL behaviour shape; {machine()}; medians of {args.repeat}")
    print(f"{'command':28} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'wall / fastindex':>17} "
          f"{'user s/M':>8} {'sys s/M':>8}")
    for name, r in rows.items():
        print(f"{name:28} {r.wall_s:8.2f} {r.cpu_s:8.2f} {r.peak_mb:8.0f} "
              f"{r.wall_s / best.wall_s:17.2f} {per_million(r.user_s, files):8.2f} "
              f"{per_million(r.sys_s, files):8.2f}")
    result = {"files": files, "machine": machine(), "repeat": args.repeat,
              "rows": {k: vars(v) for k, v in rows.items()}}
    (HERE / "results").mkdir(exist_ok=True)
    name = "build-ab.json" if args.baseline else "build.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=1) + "\n")
    return 0


@contextlib.contextmanager
def worktree(ref: str, path: Path):
    """fastindex's source as of ``ref``, checked out at ``path`` while the block runs."""
    repo = HERE.parent
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet",
                    str(path), ref], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                       check=True)


if __name__ == "__main__":
    sys.exit(main())

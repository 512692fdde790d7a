"""fastindex release against the by-hand path and `zip -r -0` alone, side by side, one run.

    python benchmarks/bench_release.py [--files 74000] [--tree DIR] [--repeat 3]

Commands, each a whole process tree, in rotation, ``--repeat`` times (medians reported):

- ``fastindex release --compression store`` and ``--compression deflate`` (check, build
  with md5, zip with every file checked against its row, SHA-256 of the zip);
- by hand: ``fastindex check`` + ``fastindex build --hash md5`` + ``fastindex verify
  --hash`` + ``zip -r`` (Info-ZIP, deflate), which is what a producer runs today;
- ``zip -r -0`` alone (store: no check, no tables, no verification).

Each command's bytes read are the ``rchar`` of its whole process tree (this process's
``/proc/self/io`` before and after: the kernel adds a reaped child's counters to its
parent's), beside the tree's bytes: a release that reads each data byte once is near 1.

Every zip is written to a temporary folder beside nothing else and removed after each
run; the tables a command writes in the tree are removed too, so each run starts from
the same tree.  Results: benchmarks/results/release.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from measure import behaviour_tree, machine, median, run

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=74_000)
    parser.add_argument("--tree", type=Path, help="an existing tree (default: generate one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = behaviour_tree(args.tree, args.files, tmp)
        zip_path = tmp / "release.zip"
        fi = f"{shlex.quote(sys.executable)} -m fastindex"
        t, z = shlex.quote(str(tree)), shlex.quote(str(zip_path))
        commands = {
            "zip -r -0 (alone)": f"cd {t} && zip -r -0 -q {z} .",
            "release --compression store": f"{fi} release {t} {z} --quiet",
            "release --compression deflate": f"{fi} release {t} {z} --quiet "
                                             f"--compression deflate",
            "by hand: check + build + verify + zip -r":
                f"{fi} check {t} > /dev/null && {fi} build {t} --hash md5 --quiet && "
                f"{fi} verify {t} --hash --quiet && cd {t} && zip -r -q {z} .",
        }
        files = sum(1 for p in tree.rglob("*") if p.is_file())
        tree_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        samples: dict[str, list] = {k: [] for k in commands}
        reads: dict[str, list] = {k: [] for k in commands}
        sizes: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, command in commands.items():
                before = _rchar()
                samples[name].append(run(["bash", "-c", command]))
                reads[name].append(_rchar() - before)
                sizes[name] = zip_path.stat().st_size
                zip_path.unlink()
                for table in ("sessions.pqt", "datasets.pqt"):
                    (tree / table).unlink(missing_ok=True)
                print(f"  {name}: {samples[name][-1].wall_s:.2f} s", file=sys.stderr)

    rows = {k: median(v) for k, v in samples.items()}
    base = rows["zip -r -0 (alone)"].wall_s
    read = {k: statistics.median(v) for k, v in reads.items()}
    print(f"\n{files} files, {tree_bytes / 1e6:.0f} MB, IBL behaviour shape; {machine()}; "
          f"medians of {args.repeat}")
    print(f"{'command':42} {'wall s':>8} {'cpu s':>8} {'zip MB':>8} {'wall / zip -r -0':>17} "
          f"{'read MB':>8} {'read / tree':>12}")
    for name, r in rows.items():
        print(f"{name:42} {r.wall_s:8.2f} {r.cpu_s:8.2f} {sizes[name] / 1e6:8.0f} "
              f"{r.wall_s / base:17.2f} {read[name] / 1e6:8.0f} {read[name] / tree_bytes:12.2f}")
    result = {"files": files, "tree_bytes": tree_bytes, "machine": machine(),
              "repeat": args.repeat,
              "rows": {k: {**vars(v), "zip_bytes": sizes[k], "rchar": read[k]}
                       for k, v in rows.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "release.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _rchar() -> int:
    """Bytes this process and its reaped children have read (``rchar``)."""
    with open("/proc/self/io") as f:
        return int(next(line.split()[1] for line in f if line.startswith("rchar")))


if __name__ == "__main__":
    sys.exit(main())

"""`fastindex update` after small changes, against a fresh `fastindex build`, one run.

    python benchmarks/bench_update.py [--files 74000] [--repeat 3] [--hash xxh3]
                                      [--shape behaviour|ephys] [--raw-mb LO HI]
                                      [--modes warm,cold]

A tree of the given shape is built with --hash; then, each round, 1% of its files are
rewritten (new content, same size, later mtime) and 1% are added (copies under new
names), and both `fastindex update` (on the tables of the previous round) and a fresh
`fastindex build --hash` of the same tree are timed as whole processes.  Modes:
- warm: every file's contents in the page cache (a tree that fits in memory and was
  just read); the walk, which both must do, dominates;
- cold: the files' contents evicted from the page cache before each timed run
  (``posix_fadvise``), as for a tree larger than memory; folders stay cached.
The behaviour shape has real arrays of about 6 kB; the ephys shape adds raw recordings,
sparse files of ``--raw-mb`` MB (real ones are tens of GB), which is where hashing costs
more than walking.  Sparse files need no disk space; reading one still costs the
kernel's zero-filling and the hashing (evicted, about the disk's sequential speed on the
machine of the README's figures).  Use --modes cold for trees larger than memory.
Medians over the rounds, written to benchmarks/results/update-SHAPE[-LO-HImb].json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

from measure import evict_contents, machine, median, run

from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent


def edit(tree: Path, files: list[Path], fraction: float, rng: random.Random, round_: str
         ) -> None:
    """Rewrite ``fraction`` of the files in place, and add as many new ones (copies)."""
    count = max(1, int(len(files) * fraction))
    for path in rng.sample(files, count):
        data = path.read_bytes()
        stat = path.stat()
        path.write_bytes(bytes(reversed(data)))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    for i, path in enumerate(rng.sample(files, count)):
        new = path.with_name(f"_new_r{round_}x{i}.extra{path.suffix}")
        new.write_bytes(path.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=74_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hash", default="xxh3")
    parser.add_argument("--shape", default="behaviour", choices=["behaviour", "ephys"])
    parser.add_argument("--raw-mb", type=int, nargs=2, default=(2, 8), metavar=("LO", "HI"),
                        help="size range of the ephys shape's raw recordings (sparse)")
    parser.add_argument("--modes", default="warm,cold",
                        help="comma-separated: warm, cold (default both)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= {"warm", "cold"}:
        parser.error(f"--modes: warm and/or cold, not {args.modes}")
    fastindex = [sys.executable, "-m", "fastindex"]
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tree, fresh = Path(tmp) / "tree", Path(tmp) / "fresh"
        fresh.mkdir()
        make_tree(tree, files=args.files, shape=args.shape, seed=0, raw_mb=tuple(args.raw_mb))
        files = sorted(p for p in tree.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        run(["find", str(tree), "-type", "f"])
        run([*fastindex, "build", str(tree), "--quiet", "--hash", args.hash])
        rows = {}
        for mode in modes:
            updates, builds = [], []
            for r in range(args.repeat):
                edit(tree, files, 0.01, rng, f"{mode}{r}")
                for cmd, samples in (
                        ([*fastindex, "update", str(tree), "--quiet"], updates),
                        ([*fastindex, "build", str(tree), "--out", str(fresh), "--quiet",
                          "--hash", args.hash], builds)):
                    if mode == "cold":
                        evict_contents(tree)
                    samples.append(run(cmd))
                print(f"  {mode} round {r}: update {updates[-1].wall_s:.2f} s, "
                      f"build {builds[-1].wall_s:.2f} s", file=sys.stderr)
            up, full = median(updates), median(builds)
            rows[mode] = {"update": vars(up), "build": vars(full),
                          "ratio": up.wall_s / full.wall_s}
    tree_desc = f"{len(files)} files, {size / 1e9:.1f} GB, {args.shape} shape"
    if args.shape == "ephys":
        tree_desc += f" (raw recordings {args.raw_mb[0]}-{args.raw_mb[1]} MB, sparse)"
    print(f"\n{tree_desc}; 1% changed + 1% added per round, --hash {args.hash}; "
          f"{machine()}; medians of {args.repeat}")
    for mode, row in rows.items():
        print(f"{mode}: update {row['update']['wall_s']:6.2f} s, fresh build "
              f"{row['build']['wall_s']:6.2f} s, update / build {row['ratio']:5.2f}")
    (HERE / "results").mkdir(exist_ok=True)
    name = args.shape + ("-{}-{}mb".format(*args.raw_mb) if args.shape == "ephys" else "")
    (HERE / "results" / f"update-{name}.json").write_text(json.dumps(
        {"machine": machine(), "tree": tree_desc, "files": len(files), "bytes": size,
         "hash": args.hash, **rows},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

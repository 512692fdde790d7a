"""Hashing: fastindex against one-api's hash_files=True, `cat` and parallel `md5sum`.

    python benchmarks/bench_hash.py [--small-files 20000] [--one-files 150]
                                    [--large-count 8] [--large-mb 512] [--repeat 3]

In one run, on this machine:
1. many small files: seconds per file of `fastindex build --hash md5` on the whole tree,
   against one-api's `make_parquet_db(hash_files=True)` on a sample of it (one-api takes
   about 0.13 s per file, so the whole tree would take hours);
2. few large files: `--hash xxh3` against `cat FILES > /dev/null` (reading alone), and
   `--hash md5` against `md5sum` in as many parallel processes as workers;
3. scaling: 1 and N workers on the large files, hashing-bound.
Medians of ``--repeat`` runs (one-api: one), written to benchmarks/results/hash.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from measure import machine, median, run

from fastindex.executors import default_workers
from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent
ONE_API = ("import sys, warnings; warnings.simplefilter('ignore');"
           "from one.alf.cache import make_parquet_db;"
           "make_parquet_db(sys.argv[1], sys.argv[2], hash_files=True)")


def fastindex_cmd(tree: Path, out: Path, hash: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "fastindex", "build", str(tree), "--out", str(out),
            "--quiet", "--hash", hash, "--workers", str(workers)]


def large_tree(root: Path, count: int, size_mb: int) -> list[Path]:
    """``count`` sessions of one large ALF file each, random bytes (no sparse holes)."""
    block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
    files = []
    for i in range(count):
        session = root / f"lab/Subjects/S{i}/2020-01-01/001"
        path = session / "raw_ephys_data/_spikeglx_ephysData.ap.cbin"
        path.parent.mkdir(parents=True)
        with open(path, "wb") as f:
            for _ in range(size_mb):
                f.write(block)
        files.append(path)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-files", type=int, default=20_000)
    parser.add_argument("--one-files", type=int, default=150)
    parser.add_argument("--large-count", type=int, default=8)
    parser.add_argument("--large-mb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = default_workers()
    rows: dict[str, dict] = {}

    def timed(name: str, cmd: list[str], repeat: int = args.repeat, **extra) -> float:
        s = median([run(cmd) for _ in range(repeat)])
        rows[name] = {**vars(s), **extra}
        print(f"  {name}: {s.wall_s:.2f} s", file=sys.stderr)
        return s.wall_s

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "out"
        out.mkdir()
        small, sample = tmp / "small", tmp / "sample"
        files = make_tree(small, files=args.small_files, shape="behaviour", seed=0)
        sample_files = make_tree(sample, files=args.one_files, shape="behaviour", seed=0)
        run(["find", str(small), "-type", "f"])
        fi = timed("small: fastindex --hash md5", fastindex_cmd(small, out, "md5", n),
                   files=files)
        one = timed("small sample: one-api hash_files=True",
                    [sys.executable, "-c", ONE_API, str(sample), str(out)], repeat=1,
                    files=sample_files)
        per_file = {"fastindex": fi / files, "one-api": one / sample_files}
        shutil.rmtree(small)

        big = tmp / "big"
        paths = [str(p) for p in large_tree(big, args.large_count, args.large_mb)]
        total_mb = args.large_count * args.large_mb
        run(["cat", *paths])  # warm the page cache
        cat = timed("large: cat > /dev/null", ["cat", *paths], mb=total_mb)
        md5sum = timed(f"large: md5sum, {n} processes",
                       ["sh", "-c", f'printf "%s\\n" "$@" | xargs -P {n} -n 1 md5sum', "sh",
                        *paths], mb=total_mb)
        xxh = {w: timed(f"large: fastindex --hash xxh3, {w} workers",
                        fastindex_cmd(big, out, "xxh3", w), mb=total_mb) for w in (1, n)}
        md5 = {w: timed(f"large: fastindex --hash md5, {w} workers",
                        fastindex_cmd(big, out, "md5", w), mb=total_mb) for w in (1, n)}

    ratios = {
        "one-api per file / fastindex per file": per_file["one-api"] / per_file["fastindex"],
        f"fastindex xxh3 {n} workers / cat": xxh[n] / cat,
        f"fastindex md5 {n} workers / md5sum x{n}": md5[n] / md5sum,
        f"md5 throughput {n} workers / 1 worker": md5[1] / md5[n],
        f"xxh3 throughput {n} workers / 1 worker": xxh[1] / xxh[n],
    }
    print(f"\n{machine()}; medians of {args.repeat}")
    for name, r in rows.items():
        print(f"{name:44} {r['wall_s']:8.2f} s")
    print(f"per file: fastindex {per_file['fastindex'] * 1e3:.3f} ms, "
          f"one-api {per_file['one-api'] * 1e3:.1f} ms")
    for name, value in ratios.items():
        print(f"{name:44} {value:8.2f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "hash.json").write_text(json.dumps(
        {"machine": machine(), "rows": rows, "per_file_s": per_file, "ratios": ratios},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fastindex on an S3 endpoint, side by side with a listing by hand and an s3fs mount.

    python benchmarks/bench_objectstore.py [--files 74000] [--mount-files 2000]
        [--one-files 500] [--delay-ms 20] [--cap 64] [--repeat 3] [--mount-repeat 1]
        [--tree DIR] [--no-mount] [--name objectstore] [--baseline GIT-REF]

The endpoint is ``thins3.py`` on 127.0.0.1: the files of a generated IBL-behaviour tree
as one bucket's keys, every request waiting ``--delay-ms`` (S3: 15 to 30 ms) in one of
``--cap`` slots.  In one run, each ``--repeat`` times (medians):

- ``fastindex build s3://bench`` (anonymous, the tables to a local folder);
- the boto3 paginator over the whole bucket, one page after the other: the listing a
  user scripts by hand, and the floor of any client that lists sequentially;
- ``find`` and ``fastindex build`` through an s3fs mount of the same endpoint (a fresh
  mount per run, so nothing is cached), on a tree of ``--mount-files`` (s3fs makes
  requests per file and per folder, about 40 ms a file here, so the full tree would take
  an hour through it), ``--mount-repeat`` times;
- one-api's ``make_parquet_db`` through the mount, on ``--one-files`` (one run).

``--baseline`` adds ``fastindex build s3://`` as of a git commit (a temporary worktree),
run in turn with the others on the same endpoint: an A/B of a change, in one run.

Writes benchmarks/results/NAME.json and .csv.  ``--no-mount`` leaves out the mount and
one-api rows: for a larger release (``--files 1000000 --no-mount --name objectstore-1m``).
Needs boto3 and, for the mount rows, Debian's ``s3fs`` (skipped with a note when
missing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_build import worktree
from measure import machine, median, run, write_rows

from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent
FASTINDEX = [sys.executable, "-m", "fastindex"]
PAGINATE = ("import sys, boto3, botocore; from botocore.config import Config;"
            "s3 = boto3.client('s3', endpoint_url=sys.argv[1],"
            " config=Config(signature_version=botocore.UNSIGNED));"
            "n = sum(len(p.get('Contents', ())) for p in"
            " s3.get_paginator('list_objects_v2').paginate(Bucket='bench'));"
            "print(n)")
ONE_API = ("import sys, warnings; warnings.simplefilter('ignore');"
           "from one.alf.cache import make_parquet_db; make_parquet_db(sys.argv[1], sys.argv[2])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def endpoint(tree: Path, delay_ms: float, cap: int):
    """thins3 serving ``tree`` as bucket ``bench``: its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "thins3.py"), str(tree), "--port",
                             str(port), "--delay-ms", str(delay_ms), "--cap", str(cap)],
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # "serving N keys": the tree is indexed
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@contextlib.contextmanager
def s3fs_mount(url: str, where: Path):
    """The bucket mounted read-only by s3fs, freshly (no cache from an earlier run)."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["s3fs", "bench", str(where), "-o", f"url={url}", "-o",
                    "use_path_request_style", "-o", "public_bucket=1", "-o", "ro",
                    "-o", "stat_cache_expire=600"], check=True)
    try:
        for _ in range(100):
            if (where / "README.txt").exists() or any(where.iterdir()):
                break
            time.sleep(0.1)
        yield where
    finally:
        subprocess.run(["fusermount3", "-u", str(where)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=74_000)
    parser.add_argument("--mount-files", type=int, default=2_000)
    parser.add_argument("--one-files", type=int, default=500)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mount-repeat", type=int, default=1,
                        help="runs of the (slow) mount rows")
    parser.add_argument("--tree", type=Path, help="an existing tree (default: generate)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--no-mount", action="store_true",
                        help="only fastindex and the paginator on the URL")
    parser.add_argument("--name", default="objectstore", help="results file stem")
    parser.add_argument("--baseline", metavar="GIT-REF",
                        help="also run fastindex as of this commit, in turn with the others")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastindex-s3bench-"))
    rows = []

    def row(what: str, files: int, samples: list, note: str = "") -> None:
        m = median(samples)
        rows.append({"command": what, "files": files, "wall_s": round(m.wall_s, 2),
                     "cpu_s": round(m.cpu_s, 2), "runs": len(samples), "note": note})
        print(f"  {what} ({files} files): {m.wall_s:.2f} s", file=sys.stderr)

    try:
        big = args.tree or _tree(work / "big", args.files)
        with endpoint(big, args.delay_ms, args.cap) as url, contextlib.ExitStack() as stack:
            out = work / "tables"
            build = [*FASTINDEX, "build", "s3://bench", "--out", str(out), "--endpoint-url",
                     url, "--no-sign-request", "--quiet"]
            commands = {"fastindex build s3://": (build, {}),
                        "boto3 paginator (by hand)": ([sys.executable, "-c", PAGINATE, url], {})}
            if args.baseline:
                base = stack.enter_context(worktree(args.baseline, work / "baseline"))
                commands[f"fastindex {args.baseline} build s3://"] = (build, {
                    "cwd": base, "env": {**os.environ, "PYTHONPATH": str(base)}})
            samples: dict[str, list] = {name: [] for name in commands}
            for _ in range(args.repeat):  # in turn, so that load falls on every row alike
                for name, (command, where) in commands.items():
                    samples[name].append(run(command, **where))
            for name, taken in samples.items():
                row(name, args.files, taken)
        if args.no_mount:
            pass
        elif shutil.which("s3fs") is None:
            print("  s3fs is not installed: no mount rows", file=sys.stderr)
        else:
            _mount_rows(work, args, row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    title = (f"{machine()}; thins3 on 127.0.0.1: {args.delay_ms:g} ms a request, "
             f"{args.cap} at once; medians of {args.repeat}")
    print(title)
    for r in rows:
        print(f"{r['command']:34} {r['files']:>8} {r['wall_s']:>8} s {r['cpu_s']:>8} s cpu")
    write_rows(rows, args.out, args.name, title)
    return 0


def _tree(where: Path, files: int) -> Path:
    print(f"generating {files} files ...", file=sys.stderr)
    make_tree(where, files=files, shape="behaviour", seed=0, sparse_size=4096)
    return where


def _mount_rows(work: Path, args, row) -> None:
    """find, fastindex and one-api through s3fs, on smaller trees."""
    small = _tree(work / "small", args.mount_files)
    with endpoint(small, args.delay_ms, args.cap) as url:
        mnt = work / "mnt"
        times = {"find": [], "fastindex": [], "url": []}
        for _ in range(args.mount_repeat):
            with s3fs_mount(url, mnt):
                times["find"].append(run(["find", str(mnt), "-printf", "%s\n"]))
            with s3fs_mount(url, mnt):
                times["fastindex"].append(run([*FASTINDEX, "build", str(mnt), "--out",
                                               str(work / "mtables"), "--quiet"]))
            times["url"].append(run([*FASTINDEX, "build", "s3://bench", "--out",
                                     str(work / "utables"), "--endpoint-url", url,
                                     "--no-sign-request", "--quiet"]))
        row("fastindex build s3://", args.mount_files, times["url"])
        row("find through s3fs", args.mount_files, times["find"])
        row("fastindex build through s3fs", args.mount_files, times["fastindex"])
    one = _tree(work / "one", args.one_files)
    with endpoint(one, args.delay_ms, args.cap) as url:
        (work / "onetables").mkdir()
        with s3fs_mount(url, work / "mnt"):
            sample = run([sys.executable, "-c", ONE_API, str(work / "mnt"),
                          str(work / "onetables")])
        row("one-api make_parquet_db through s3fs", args.one_files, [sample], "one run")
        row("fastindex build s3://", args.one_files, [
            run([*FASTINDEX, "build", "s3://bench", "--out", str(work / "onetables2"),
                 "--endpoint-url", url, "--no-sign-request", "--quiet"])], "one run")


if __name__ == "__main__":
    sys.exit(main())

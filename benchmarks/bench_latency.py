"""fastindex on storage with latency, beside find, a bare walk and one-api.

    sudo python benchmarks/bench_latency.py [--files 20000 74000] [--small-files 2000]
        [--delays-ms 0.5 10] [--cap 16] [--threads 0 4 16 64 256] [--repeat 3]
        [--one-repeat 1] [--one-max 20000] [--out DIR] [--baseline GIT-REF]
    python benchmarks/bench_latency.py --smoke     # no FUSE: checks the script itself

Network file systems answer each lookup, stat and listing after a round trip, and a
walk is bound by those waits, not by CPU.  This benchmark puts the trees behind
latencyfs (benchmarks/latencyfs/latencyfs.c, built here with cc), a FUSE view in which
every lookup/getattr, listing and open waits --delays-ms while holding one of --cap
server slots, names and attributes are cached for 3 s (NFS's minimum for files), and a
listing gives names only (NFSv3's READDIR), so a walker learns each entry's type and size
from a lookup.  Each run gets a fresh mount: every run is cold.

For each delay, IBL-behaviour trees (deterministic, seed 0): --files at the lowest delay,
--small-files at the others (a walk at 10 ms per request takes minutes).  Commands, one
after the other on the same mount settings: `find`, a bare Python os.scandir walk
(benchmarks/scandir_walk.py), `fastindex build` as it starts by default and with
--io-threads T for each T, and one-api's make_parquet_db on trees up to --one-max files.
Medians of --repeat runs (one-api: --one-repeat); with each, the requests latencyfs
served, the most it had in flight, and the CPU it used.  Writes latency.csv,
latency.json and latency.png to --out (default benchmarks/results).  --baseline adds
fastindex as of a git commit, as it starts by default, run in turn with the others on
the same mounts: an A/B of a change at every delay.

Needs: Linux, root (or /dev/fuse access), the Debian packages fuse3, libfuse3-dev and
pkg-config, and a C compiler.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench_build import worktree
from measure import machine, median, run, write_rows

from fastindex.folderlister import ENV
from fastindex.treegen import make_tree

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "latencyfs" / "latencyfs.c"
ONE_API = ("import sys, warnings; warnings.simplefilter('ignore');"
           "from one.alf.cache import make_parquet_db; make_parquet_db(sys.argv[1], sys.argv[2])")
#: Seconds the kernel keeps names and attributes (NFS keeps file attributes 3 s at least).
CACHE_S = 3
DEFAULT = "fastindex (default)"


def build_latencyfs(where: Path) -> Path:
    """Compile latencyfs; a clear message when the tools or the library are missing."""
    binary = where / "latencyfs"
    try:
        flags = subprocess.run(["pkg-config", "fuse3", "--cflags", "--libs"], check=True,
                               capture_output=True, text=True).stdout.split()
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(SOURCE), *flags],
                       check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        sys.exit(f"bench_latency: {err.filename} not found; install fuse3, libfuse3-dev, "
                 f"pkg-config and a C compiler (see benchmarks/README.md)")
    except subprocess.CalledProcessError as err:
        sys.exit(f"bench_latency: building latencyfs failed: {err.stderr.strip()}")
    return binary


@contextlib.contextmanager
def mounted(binary: Path, source: Path, mountpoint: Path, delay_ms: float, cap: int
            ) -> Iterator[dict]:
    """``source`` behind latencyfs at ``mountpoint`` while the block runs, freshly mounted
    (cold caches); the dict gets the server's counts and CPU seconds after unmounting."""
    stats = mountpoint.parent / "latencyfs-stats.json"
    stats.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [str(binary), f"--source={source}", f"--delay-us={round(delay_ms * 1000)}",
         f"--max-concurrent={cap}", f"--stats={stats}", "-f", str(mountpoint), "-o",
         f"ro,entry_timeout={CACHE_S},attr_timeout={CACHE_S},max_threads=256"],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"bench_latency: latencyfs did not mount: {proc.communicate()[1][-500:]}")
        time.sleep(0.01)
    served: dict = {}
    try:
        yield served
    finally:
        served["server_cpu_s"] = _cpu_seconds(proc.pid)
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
        proc.wait(timeout=30)
        if stats.exists():
            served.update(json.loads(stats.read_text()))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commands(tree: Path, out: Path, threads: list[int], one_api: bool,
             baseline: tuple[str, Path] | None = None) -> dict[str, tuple[list, dict]]:
    """Each command by name, with its ``run`` options; the environment never sets the
    I/O threads, so that the default is what a user gets."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    build = [sys.executable, "-m", "fastindex", "build", str(tree), "--out", str(out), "--quiet"]
    cmds = {"find": ["find", str(tree)],
            "python scandir walk": [sys.executable, str(HERE / "scandir_walk.py"), str(tree)],
            DEFAULT: build}
    cmds.update({f"fastindex --io-threads {t}": [*build, "--io-threads", str(t)]
                 for t in threads})
    if one_api:
        cmds["one-api make_parquet_db"] = [sys.executable, "-c", ONE_API, str(tree), str(out)]
    runs = {name: (cmd, {"env": env}) for name, cmd in cmds.items()}
    if baseline:
        ref, source = baseline
        runs[f"fastindex {ref} (default)"] = (build, {"cwd": source,
                                                      "env": {**env, "PYTHONPATH": str(source)}})
    return runs


def measure(args, binary: Path | None, work: Path, delay_ms: float, files: int,
            baseline: tuple[str, Path] | None = None) -> list[dict]:
    """Every command on one tree at one delay, each run on a fresh mount."""
    tree = work / f"tree-{files}"
    if not tree.exists():
        print(f"generating {files} files ...", file=sys.stderr)
        make_tree(tree, files=files, shape="behaviour", seed=0, sparse_size=4096)
    subprocess.run(["find", str(tree), "-printf", ""], check=True)  # the source: page cache
    mountpoint, out = work / "mnt", work / "out"
    mountpoint.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    target = mountpoint if binary else tree
    rows = []
    for name, (cmd, where) in commands(target, out, args.threads, files <= args.one_max,
                                       baseline).items():
        samples, served = [], []
        for _ in range(args.one_repeat if name.startswith("one-api") else args.repeat):
            with (mounted(binary, tree, mountpoint, delay_ms, args.cap) if binary
                  else contextlib.nullcontext({})) as server:
                samples.append(run(cmd, **where))
            served.append(server)
        timing = median(samples)
        last = served[-1]
        rows.append({"delay_ms": delay_ms if binary else 0.0, "files": files, "command": name,
                     "wall_s": timing.wall_s, "cpu_s": timing.cpu_s, "runs": len(samples),
                     "requests": sum(last.get(k, 0) for k in ("getattr", "readdir", "open")),
                     "peak_in_flight": last.get("peak_in_flight", 0),
                     "server_cpu_s": last.get("server_cpu_s", 0.0)})
        print(f"  {delay_ms} ms {files} {name}: {timing.wall_s:.2f} s "
              f"({rows[-1]['requests']} requests, at most {rows[-1]['peak_in_flight']} "
              f"in flight)", file=sys.stderr)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys((r["delay_ms"], r["files"]) for r in rows))
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4.5),
                             squeeze=False)
    for ax, (delay, files) in zip(axes[0], settings):
        here = [r for r in rows if (r["delay_ms"], r["files"]) == (delay, files)]
        names = [r["command"] for r in here]
        ax.barh(names, [r["wall_s"] for r in here],
                color=["C1" if n == DEFAULT else "C0" for n in names])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("wall time (s), cold, median")
        ax.set_title(f"{files} files, {delay} ms per request", fontsize=9)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict], out: Path, title: str) -> None:
    write_rows(rows, out, "latency", title)
    plot(rows, out / "latency.png", title)
    print(f"\n{title}")
    print(f"{'ms':>5} {'files':>6} {'command':28} {'wall s':>8} {'cpu s':>7} {'requests':>9} "
          f"{'in flight':>9} {'server cpu':>10} {'/ default':>9}")
    for r in rows:
        best = next(x for x in rows if x["command"] == DEFAULT
                    and (x["delay_ms"], x["files"]) == (r["delay_ms"], r["files"]))
        print(f"{r['delay_ms']:5} {r['files']:6d} {r['command']:28} {r['wall_s']:8.2f} "
              f"{r['cpu_s']:7.2f} {r['requests']:9d} {r['peak_in_flight']:9d} "
              f"{r['server_cpu_s']:10.2f} {r['wall_s'] / best['wall_s']:9.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[20_000, 74_000],
                        help="tree sizes at the lowest delay")
    parser.add_argument("--small-files", type=int, default=2_000,
                        help="tree size at the other delays")
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0.5, 10.0])
    parser.add_argument("--cap", type=int, default=16, help="requests served at once")
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 4, 16, 64, 256],
                        help="the --io-threads sweep")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one-repeat", type=int, default=1)
    parser.add_argument("--one-max", type=int, default=20_000,
                        help="largest tree one-api is run on")
    parser.add_argument("--workdir", type=Path, help="where the trees go (default: tmp)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--baseline", metavar="GIT-REF",
                        help="also run fastindex as of this commit, for an A/B")
    parser.add_argument("--smoke", action="store_true",
                        help="no FUSE: run every command on the plain tree, once")
    args = parser.parse_args(argv)
    delays = sorted(args.delays_ms)
    if args.smoke:
        delays, args.repeat, args.one_repeat = delays[:1], 1, 1
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        sys.exit("bench_latency: /dev/fuse is missing or not writable (run as root, or "
                 "pass --smoke to check the script without FUSE)")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        binary = None if args.smoke else build_latencyfs(work)
        baseline = args.baseline and (args.baseline, stack.enter_context(
            worktree(args.baseline, work / "baseline")))
        rows = []
        for delay in delays:
            for files in args.files if delay == delays[0] else [args.small_files]:
                rows += measure(args, binary, work, delay, files, baseline or None)
            if args.smoke:
                break
        shutil.rmtree(work / "out", ignore_errors=True)
    model = ("no FUSE (--smoke)" if args.smoke else
             f"latencyfs: each request {'/'.join(map(str, delays))} ms, {args.cap} at once, "
             f"names only in listings, {CACHE_S} s caches, cold mount per run")
    report(rows, args.out, f"{machine()}; {model}; medians of {args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

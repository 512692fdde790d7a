"""Run a command and measure its wall time, CPU time and peak memory of its process tree.

Peak memory is sampled from /proc every 5 ms as the sum of the proportional set size (PSS)
of the process and all its descendants (workers included), so it is Linux-only.  PSS
shares each page among the processes that map it, so forked workers are not counted
twice for the pages they share with their parent (summing RSS would); ``ru_maxrss``
alone would give only the largest single process.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sample:
    wall_s: float
    cpu_s: float  # user and system, the process and every child it waited for (workers)
    peak_mb: float
    user_s: float = 0.0
    sys_s: float = 0.0


def _tree_pss_kb(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run(cmd: list[str], memory: bool = False, **kwargs) -> Sample:
    """Run ``cmd`` to completion (output discarded); raise if it fails.

    Reading PSS walks the page tables and costs CPU, so memory is sampled only when asked
    (``memory=True``), in runs whose times are not reported.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while memory and not done.is_set():
            peak = max(peak, _tree_pss_kb(proc.pid))
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}): {err.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return Sample(wall, user + system, peak / 1024, user, system)


def median(samples: list[Sample]) -> Sample:
    return Sample(*(statistics.median(getattr(s, f) for s in samples)
                    for f in ("wall_s", "cpu_s", "peak_mb", "user_s", "sys_s")))


def per_million(seconds: float, files: int) -> float:
    """Seconds per million files: the cost of a file, comparable across tree sizes."""
    return seconds * 1e6 / files if files else 0.0


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpus} CPUs ({model or platform.processor()}), {mem:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


def evict_contents(root: str | os.PathLike) -> int:
    """Drop the page-cache copy of every file's contents under ``root``; return the count.

    The next read of each file then comes from the disk, as for a tree larger than
    memory.  Folders and inodes stay cached (evicting those needs root), so a walk is
    still as fast as when warm.  Dirty pages cannot be dropped, hence the sync first.
    """
    os.sync()
    count = 0
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                count += 1
            finally:
                os.close(fd)
    return count


def behaviour_tree(tree: Path | None, files: int, tmp: Path) -> Path:
    """``tree``, or a generated IBL-behaviour tree of about ``files`` files under ``tmp``."""
    from fastindex.treegen import make_tree

    if tree:
        return tree
    print(f"generating {files} files ...", file=sys.stderr)
    make_tree(tmp / "tree", files=files, shape="behaviour", seed=0)
    return tmp / "tree"


def write_rows(rows: list[dict], out: Path, stem: str, title: str) -> None:
    """``rows`` as ``stem.csv`` and, with ``title``, ``stem.json`` in ``out``."""
    import csv
    import json

    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{stem}.json").write_text(json.dumps({"title": title, "rows": rows}, indent=1)
                                      + "\n")

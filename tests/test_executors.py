"""The worker processes fastindex starts itself for spawn and forkserver."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool

import pytest

from fastindex.executors import CleanWorkers


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_clean_workers_run_tasks_and_return_their_errors(method) -> None:
    pool = CleanWorkers(2, method)
    try:
        futures = [pool.submit(pow, 2, n) for n in range(20)]
        assert [f.result(timeout=30) for f in futures] == [2**n for n in range(20)]
        assert len({pool.submit(os.getpid).result(timeout=30) for _ in range(8)} - {os.getpid()}
                   ) >= 1  # run elsewhere
        with pytest.raises(ValueError, match="invalid literal"):
            pool.submit(int, "x").result(timeout=30)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_dead_worker_breaks_the_pool(method) -> None:
    pool = CleanWorkers(2, method)
    try:
        with pytest.raises(BrokenProcessPool):
            pool.submit(os._exit, 1).result(timeout=30)
        with pytest.raises(BrokenProcessPool):
            pool.submit(pow, 2, 2)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_shutdown_without_waiting_stops_busy_workers() -> None:
    import socket
    import urllib.request

    # Each task asks this socket for a page that never comes: once both connections are
    # accepted, both workers are running a task that would wait forever.
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        pool = CleanWorkers(2, "forkserver")
        try:
            busy = [pool.submit(urllib.request.urlopen, url) for _ in range(2)]
            connections = [server.accept()[0] for _ in busy]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        for future in busy:
            with pytest.raises(BrokenProcessPool):
                future.result(timeout=10)
        for connection in connections:
            connection.close()


def test_a_forked_worker_whose_parent_is_already_gone_exits() -> None:
    """A worker that starts after its parent exited (a refusal right after the fork)
    is re-parented before its watch begins: the watch must still see the parent gone,
    not wait for work forever (found as an orphan worker of a refused `check`)."""
    import subprocess
    import sys

    code = ("import os, time\n"
            "from fastindex.executors import _exit_with_parent\n"
            "_exit_with_parent(os.getppid() + 1_000_000)  # a parent that is not this one's\n"
            "time.sleep(120)\n")
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True,
                          text=True)
    assert (done.returncode, done.stderr) == (1, "")  # the watch ended it, before the sleep

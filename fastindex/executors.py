"""Where the index stage runs: the executors, and how their worker processes start.

Every stage that fans out goes through ``executor_for``: an executor passed in (a Dask
cluster's, from ``given_executor``), the calling process itself for one worker
(``InlineExecutor``), or worker processes.

Worker processes start one of three ways.  ``fork`` (``ProcessPoolExecutor``) is the
cheapest, and is used while this process runs a single thread: the command line starts
its workers before it loads Arrow or polars.  A process that already runs threads (a
notebook that used polars, a script that imported ``one.api``) must not fork: another
thread may hold a lock the child then waits on forever.  There, and whenever ``spawn``
or ``forkserver`` is asked for, the workers are ``CleanWorkers``: fresh interpreters
that import only fastindex's worker modules.  multiprocessing's own spawn and
forkserver import the user's main module in each worker (or in the fork server): a
script without an ``if __name__ == '__main__':`` guard, which is how most scripts are
written, would run again inside them.  Its only switch for that is global, so fastindex
starts its own workers rather than change multiprocessing under the user's code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastindex.root import Root


class InlineExecutor(Executor):
    """Runs each task in the calling process as it is submitted: ``workers=1``."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


def default_workers() -> int:
    """The CPUs this process may run on (not the machine's count, under a cgroup or taskset)."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def given_executor(stack: contextlib.ExitStack, root: Root, executor: Executor | None = None,
                   client=None, scheduler: str | None = None) -> Executor | None:
    """The executor a caller asked for: ``executor``, or a Dask cluster's (``client`` or
    ``scheduler``, kept open on ``stack``); None for the local pool."""
    if client is None and scheduler is None:
        return executor
    from fastindex.dask_backend import dask_executor

    return stack.enter_context(dask_executor(scheduler, client, root))


@contextlib.contextmanager
def executor_for(given: Executor | None, workers: int, start_method: str | None,
                 fork_now: bool = False) -> Iterator[Executor]:
    """The executor to run batches on; a pool made here is shut down here, even on error.

    ``fork_now`` starts a fork pool's workers before returning it, for a caller that
    must load Arrow or polars before its first task (``update`` and ``verify`` read the
    old tables): the workers are then forked while this process still runs a single
    thread.  The other methods start their workers when the pool is made.
    """
    if given is not None:
        yield given
        return
    if workers == 1:
        yield InlineExecutor()
        return
    method = start_method or default_start_method()
    if method == "fork":
        pool: Executor = ProcessPoolExecutor(workers, mp_context=get_context("fork"),
                                             initializer=_exit_with_parent,
                                             initargs=(os.getpid(),))
        if fork_now:
            with _interrupts_held():  # a fork pool starts all its workers on the first task
                pool.submit(int).result()
    elif method in ("forkserver", "spawn") and os.name == "posix":
        pool = CleanWorkers(workers, method)
    else:  # Windows: multiprocessing's spawn, the only method there is
        pool = ProcessPoolExecutor(workers, mp_context=get_context(method))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # nobody will read the other batches
        raise
    pool.shutdown(wait=True)


def default_start_method() -> str:
    """``fork`` on Linux while this process runs a single thread, else ``forkserver``;
    elsewhere the platform's default (``spawn`` on macOS and Windows)."""
    if not sys.platform.startswith("linux"):
        return "spawn"
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = threading.active_count()
    return "fork" if threads == 1 else "forkserver"


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait (pending, not lost) while workers are forked.

    A signal handled inside ``os.fork``'s at-fork hooks raises ``KeyboardInterrupt``
    there, where Python prints it as "Exception ignored" and drops it: the command went
    on as if no Ctrl-C came.  Held, it is delivered when the forks are done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _exit_with_parent(parent: int) -> None:
    """In each forked worker: exit when the parent (its pid ``parent``, taken before the
    fork) is gone: killed with SIGKILL, say, or done before this worker started.

    A killed parent cannot shut its pool down, and its workers would otherwise wait for
    work forever.  The pid comes from the parent: read here, after a parent that had
    already exited, it would be the reaper's, and the watch would never end.
    (``CleanWorkers`` need no watch: their connection closes.)  The signals the parent
    held while forking are the worker's again.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="fastindex-parent-watch").start()


class CleanWorkers(Executor):
    """Worker processes that never run the user's main module.

    Each worker is a fresh interpreter (``spawn``), or a fork of one fresh interpreter
    (``forkserver``: one start-up and one import for all), that imports only
    ``fastindex.executors`` and what its tasks need, and serves tasks over a private
    socket pair: a pickled ``(fn, args, kwargs)`` in, ``(ok, value)`` out.  One thread
    here per worker feeds it from a shared queue.  A worker that dies breaks the pool
    (``BrokenProcessPool``, as ``ProcessPoolExecutor``); a parent that dies closes the
    sockets, and its workers exit.
    """

    def __init__(self, workers: int, method: str = "spawn") -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._shutdown = False
        pairs = [socket.socketpair() for _ in range(workers)]
        ours = [Connection(a.detach()) for a, _ in pairs]
        theirs = [b.detach() for _, b in pairs]
        try:
            self._starters = self._launch(theirs, method)
        finally:
            for fd in theirs:
                os.close(fd)
        self._pids: list[int] = []
        self._threads = [threading.Thread(target=self._feed, args=(conn,), daemon=True,
                                          name=f"fastindex-worker-{i}")
                         for i, conn in enumerate(ours)]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _launch(fds: list[int], method: str) -> list[subprocess.Popen]:
        """Start interpreters that serve ``fds``: one each, or one that forks for all."""
        package_parent = str(Path(__file__).resolve().parent.parent)
        entry = "serve" if method == "spawn" else "serve_forks"
        starters = []
        for group in ([fd] for fd in fds) if method == "spawn" else [fds]:
            code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
                    f"from fastindex.executors import {entry}; {entry}({group!r})")
            starters.append(subprocess.Popen([sys.executable, "-c", code], pass_fds=group,
                                             stdin=subprocess.DEVNULL))
        return starters

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            future: Future = Future()
            self._tasks.put((future, fn, args, kwargs))
            return future

    def _feed(self, conn: Connection) -> None:
        with conn:
            try:
                self._pids.append(conn.recv())
            except (EOFError, OSError):
                self._break("a worker process did not start")
                return
            while (item := self._tasks.get()) is not None:
                future, fn, args, kwargs = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    conn.send((fn, args, kwargs))
                    ok, value = conn.recv()
                except (EOFError, OSError) as err:
                    future.set_exception(BrokenProcessPool(f"a worker process died ({err})"))
                    self._break("a worker process died")
                    return
                (future.set_result if ok else future.set_exception)(value)

    def _break(self, why: str) -> None:
        """Fail every queued task: the pool cannot run them."""
        with self._lock:
            self._broken = self._broken or why
        self._drain(BrokenProcessPool(why))

    def _drain(self, error: BaseException | None) -> None:
        while True:
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._tasks.put(None)  # a stop for another feeder: leave it
                return
            if error is None:
                item[0].cancel()
            elif item[0].set_running_or_notify_cancel():
                item[0].set_exception(error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self._drain(None)
        for _ in self._threads:
            self._tasks.put(None)
        if not wait:  # an error or an interrupt: stop the workers now
            for pid in list(self._pids):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        else:
            for thread in self._threads:
                thread.join()
        for starter in self._starters:  # reap them (a fork server has already left)
            starter.wait()


def serve(fds: list[int]) -> None:
    """A worker: run the tasks that arrive on its socket until it closes."""
    conn = Connection(fds[0])
    try:
        conn.send(os.getpid())
        while True:
            try:
                task = conn.recv()
            except EOFError:
                return
            if task is None:
                return
            fn, args, kwargs = task
            try:
                reply = (True, fn(*args, **kwargs))
            except BaseException as err:  # the task's error is the caller's to raise
                reply = (False, err)
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as err:
                conn.send((False, RuntimeError(f"{reply[1]!r} (not picklable: {err})")))
    except (KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
        pass  # Ctrl-C reaches the whole process group; the parent reports it
    finally:
        os._exit(0)


def serve_forks(fds: list[int]) -> None:
    """A fork server: fork one worker per socket, then leave (the workers are orphans
    that the system reaps; each exits when its socket closes)."""
    for fd in fds:
        if os.fork() == 0:
            for other in fds:
                if other != fd:
                    os.close(other)
            serve([fd])
    os._exit(0)

"""Folder listings for the walks, many of them in flight at once.

On network storage (NFS, Lustre, SMB, object-store mounts) every listing and every
stat is a round trip to a server, and a walk is a chain of them: a folder must be
listed before its subfolders can be, and a file looked up before its size is known.
A walk that makes them one at a time waits out every round trip.  ``Scanner`` lists a
subtree ahead of the walk on a pool of threads (``os.scandir`` and ``os.stat`` release
the GIL): each listing, as it returns, starts the listings of its subfolders, so there
are as many requests in flight as threads, while the walk itself stays one loop that
takes the listings in its own, deterministic order.

With no threads, a listing is made when the walk asks for it: on a local disk, where
a stat is a microsecond, threads only add hand-offs.  ``io_threads`` picks the number
from a measurement of the storage (see ``IoThreads``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

#: Environment variable that sets the I/O threads per process (0: none), as --io-threads.
ENV = "FASTINDEX_IO_THREADS"
#: Threads per process once the storage is found to be slow.
DEFAULT_THREADS = 16
#: Listings slower than this per entry (and per listing) are round trips to a server or a
#: disk, not page-cache hits (a microsecond or two).
SLOW_ENTRY_S = 50e-6
#: Entries whose types and stats one thread fetches, of a listing made ahead.
FETCH_CHUNK = 8
#: A listing this slow per entry decides at once (no page-cache hiccup is this long).
CLEARLY_SLOW_S = 1e-3
#: Listings timed before deciding; the fastest decides, so that one hiccup (the first
#: touch of a freshly forked worker's memory) does not turn threads on.
TIMED_LISTINGS = 3

#: (root-relative folder, name) -> whether the listing goes on below a subfolder.
Descend = Callable[[str, str], bool]


@dataclass(frozen=True)
class IoThreads:
    """How many listings a process keeps in flight.

    ``threads`` None is automatic: a process starts without threads, times the first
    listings it makes, and turns ``DEFAULT_THREADS`` on when they are slow enough to be
    round trips (more than ``SLOW_ENTRY_S`` per entry); 0 never uses threads.
    """

    threads: int | None = None

    def start(self) -> int:
        """Threads to begin with."""
        return self.threads or 0


def io_threads(given: int | None = None) -> IoThreads:
    """``given``, else the ``FASTINDEX_IO_THREADS`` environment variable, else automatic."""
    if given is not None:
        return IoThreads(given)
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"{ENV}={value!r}: expected a whole number of threads") from None
        if n < 0:
            raise ValueError(f"{ENV}={value!r}: expected 0 or more threads")
        return IoThreads(n)
    return IoThreads()


#: Device -> whether its listings were found slow, in this process: later walks on it
#: start threaded, or serial, without timing again.
_slow_devices: dict[int, bool] = {}


def finding(path: str) -> IoThreads | None:
    """What this process found of the storage under ``path``: the threads its walks
    start with (so that workers need not time it again), or None when not yet timed."""
    try:
        slow = _slow_devices.get(os.stat(path).st_dev)
    except OSError:
        return None
    return None if slow is None else IoThreads(DEFAULT_THREADS if slow else 0)


class Scanner:
    """Lists folders for a walk, ahead of it when it has threads.

    ``start(path, rel)`` begins listing ``path`` and, through ``descend``, the folders
    below it; ``entries(path, rel)`` gives a listing (waiting for it, or making it now),
    with each entry's type, and with ``stat_files`` each file's stat, already fetched
    into the ``os.DirEntry`` (which keeps them), or raises the listing's ``OSError``.  A
    walk asks for a folder only after its parent's listing, so a started subtree is
    always found started.  ``where``: a path on the storage, whose device remembers a
    finding of slowness for the rest of the process.  Listings never asked for are
    dropped at ``close``.
    """

    def __init__(self, io: IoThreads, descend: Descend, where: str,
                 stat_files: bool = False) -> None:
        self._descend = descend
        self._stat_files = stat_files
        self._pending: dict[str, Future] = {}
        self._planned: dict[str, str] = {}  # started before the threads were on
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._device = self._timed = None
        threads = io.start()
        if io.threads is None:
            try:
                self._device = os.stat(where).st_dev
            except OSError:
                pass
            slow = _slow_devices.get(self._device)
            if slow:
                threads = DEFAULT_THREADS
            elif slow is None:
                self._timed = []  # seconds per entry of each listing, while deciding
        if threads:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fastindex-io")

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._planned.clear()

    def submit(self, fn, /, *args) -> Future | None:
        """Run ``fn(*args)`` on the I/O threads (a file's read); None when there are none."""
        pool = self._pool
        return pool.submit(fn, *args) if pool is not None else None

    def start(self, path: str, rel: str) -> None:
        """Begin listing ``path`` (root-relative ``rel``) and the folders below it."""
        if self._pool is not None:
            self._submit(path, rel)
        elif self._timed is not None:
            self._planned[path] = rel

    def entries(self, path: str, rel: str, sub: str = "") -> list[os.DirEntry]:
        """The entries of ``path``, at root-relative ``rel`` (joined with ``sub``, when
        given, only if needed); raises ``OSError`` as ``os.scandir`` does."""
        if self._pool is None and self._timed is None:  # serial: the walk stats what it needs
            with os.scandir(path) as it:
                return list(it)
        if sub:
            rel = f"{rel}/{sub}" if rel else sub
        with self._lock:
            future = self._pending.pop(path, None)
        if future is None and self._pool is not None:  # not started: start it, with its subtree
            future = self._submit(path, rel, keep=False)
        if future is not None:
            return future.result()
        self._planned.pop(path, None)
        began = time.perf_counter()
        entries = self._list(path)
        self._timed.append((time.perf_counter() - began) / (len(entries) + 1))
        if len(self._timed) == TIMED_LISTINGS or self._timed[-1] > CLEARLY_SLOW_S:
            slow = min(self._timed) > SLOW_ENTRY_S
            if self._device is not None:
                _slow_devices[self._device] = slow
            if slow:
                self._turn_on()
            else:
                self._timed = None  # fast: this walk stays serial
                self._planned.clear()
        return entries

    def _turn_on(self) -> None:
        """Slow storage: threads from now on, starting what the walk has planned."""
        self._timed = None
        self._pool = ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="fastindex-io")
        planned, self._planned = self._planned, {}
        for path, rel in planned.items():
            self._submit(path, rel)

    def _list(self, path: str) -> list[os.DirEntry]:
        with os.scandir(path) as it:
            entries = list(it)
        self._fetch(entries)
        return entries

    def _fetch(self, entries: list[os.DirEntry]) -> None:
        """Each entry's type (and a file's stat) fetched now, in this thread, and kept by
        the entry for the walk; errors are left for the walk to meet and report."""
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False) and self._stat_files:
                    entry.stat()
            except OSError:
                pass

    def _submit(self, path: str, rel: str, keep: bool = True) -> Future | None:
        pool = self._pool
        if pool is None:
            return None
        future: Future = Future()
        if keep:
            with self._lock:
                self._pending[path] = future
        try:
            pool.submit(self._list_ahead, pool, path, rel, future)
        except RuntimeError:  # closed while a listing was starting its subfolders
            future.cancel()
        return future

    def _list_ahead(self, pool: ThreadPoolExecutor, path: str, rel: str, future: Future
                    ) -> None:
        """List ``path`` in a thread, and fetch its entries' types and stats in chunks
        on other threads (one at a time, a large folder is a long chain of lookups)."""
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except BaseException as err:
            future.set_exception(err)
            return
        listing = _Listing(entries, rel, future, max(1, -(-len(entries) // FETCH_CHUNK)))
        for i in range(FETCH_CHUNK, len(entries), FETCH_CHUNK):
            try:
                pool.submit(self._fetch_chunk, listing, i)
            except RuntimeError:
                return  # closed: nobody waits for this listing
        self._fetch_chunk(listing, 0)

    def _fetch_chunk(self, listing: _Listing, i: int) -> None:
        """One chunk of a listing's entries; the last chunk done completes the listing
        and starts its subfolders, so no thread ever waits for another."""
        try:
            self._fetch(listing.entries[i:i + FETCH_CHUNK])
            with listing.lock:
                listing.left -= 1
                if listing.left:
                    return
            for entry in listing.entries:
                if entry.is_dir(follow_symlinks=False):  # known by now: no request
                    child = f"{listing.rel}/{entry.name}" if listing.rel else entry.name
                    if self._descend(child, entry.name):
                        self._submit(entry.path, child)
            listing.future.set_result(listing.entries)
        except BaseException as err:
            if not listing.future.done():
                listing.future.set_exception(err)


@dataclass
class _Listing:
    """A folder's entries while their types and stats are being fetched, in chunks."""

    entries: list[os.DirEntry]
    rel: str
    future: Future
    left: int  # chunks not yet fetched
    lock: threading.Lock = field(default_factory=threading.Lock)

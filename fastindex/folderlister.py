"""Folder listings for the walks, many of them in flight at once.

Three jobs, one class each: ``StorageProbe`` finds whether the storage is slow,
``IoPool`` holds the process's I/O threads (listings and, on slow storage, hashing),
and ``FolderLister`` lists a subtree ahead of the walk on them.

On network storage (NFS, Lustre, SMB, object-store mounts) every listing and every
stat is a round trip to a server, and a walk is a chain of them: a folder must be
listed before its subfolders can be, and a file looked up before its size is known.
A walk that makes them one at a time waits out every round trip.  ``FolderLister`` lists a
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
from collections.abc import Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

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


class StorageProbe:
    """Decides whether the storage under a path is slow, by timing its first listings.

    A decision is remembered per device in ``decisions`` (device -> slow), by default
    for the rest of the process, so that later walks on it (and workers told of it,
    ``finding``) start threaded, or serial, at once; ``forget`` clears the process's.
    """

    def __init__(self, io: IoThreads, probe_path: str,
                 decisions: MutableMapping[int, bool] | None = None) -> None:
        self.threads = io.start()  # threads to begin with
        self._decisions = _slow_devices if decisions is None else decisions
        self._device: int | None = None
        self._timed: list[float] | None = None  # seconds per entry, while deciding
        if io.threads is None:
            try:
                self._device = os.stat(probe_path).st_dev
            except OSError:
                pass
            slow = None if self._device is None else self._decisions.get(self._device)
            if slow:
                self.threads = DEFAULT_THREADS
            elif slow is None:
                self._timed = []

    @staticmethod
    def forget() -> None:
        """Forget what this process found of every device: the next walks time again."""
        _slow_devices.clear()

    @property
    def deciding(self) -> bool:
        return self._timed is not None

    def timed(self, seconds_per_entry: float) -> bool:
        """Record one listing (only while ``deciding``); True when the storage is now
        found slow."""
        timed = self._timed
        assert timed is not None, "decided already"
        timed.append(seconds_per_entry)
        if len(timed) < TIMED_LISTINGS and timed[-1] <= CLEARLY_SLOW_S:
            return False
        slow = min(timed) > SLOW_ENTRY_S
        if self._device is not None:
            self._decisions[self._device] = slow
        self._timed = None
        return slow


class IoPool:
    """The threads a process reads on: listings made ahead, and files hashed on slow
    storage.  Off until ``turn_on``; ``submit`` answers None while off."""

    def __init__(self, threads: int = 0) -> None:
        self._pool: ThreadPoolExecutor | None = None
        if threads:
            self.turn_on(threads)

    @property
    def on(self) -> bool:
        return self._pool is not None

    def turn_on(self, threads: int = DEFAULT_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fastindex-io")

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future | None:
        """Run ``fn(*args)`` on the threads; None when there are none (run it in line).
        Raises ``RuntimeError`` once closed."""
        pool = self._pool
        return pool.submit(fn, *args) if pool is not None else None

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class FolderLister:
    """A local tree's ``root.Lister``: lists folders for a walk, ahead of it when its
    pool has threads.

    ``start(path, rel)`` begins listing ``path`` and, through ``descend``, the folders
    below it; ``entries(path, rel)`` gives a listing (waiting for it, or making it now),
    with each entry's type, and with ``stat_files`` each file's stat, already fetched
    into the ``os.DirEntry`` (which keeps them), or raises the listing's ``OSError``.  A
    walk asks for a folder only after its parent's listing, so a started subtree is
    always found started.  ``probe_path``: a path on the storage, which ``StorageProbe``
    times when ``io`` is automatic (``decisions``: where it remembers what it found,
    see ``StorageProbe``).  ``pool`` is the process's I/O threads, lent to hashing too;
    ``turned_on`` says whether this walk's timed listings found the storage slow and
    turned them on.  Listings never asked for are dropped at ``close``.
    """

    def __init__(self, io: IoThreads, descend: Descend, probe_path: str,
                 stat_files: bool = False,
                 decisions: MutableMapping[int, bool] | None = None) -> None:
        self._descend = descend
        self._stat_files = stat_files
        self._pending: dict[str, Future] = {}
        self._planned: dict[str, str] = {}  # started before the threads were on
        self._lock = threading.Lock()
        self._probe = StorageProbe(io, probe_path, decisions)
        self.pool = IoPool(self._probe.threads)
        self.turned_on = False
        #: no threads and nothing to time: every listing is a plain ``scandir`` (the
        #: common case, a local disk, checked once per folder)
        self._serial = not self.pool.on and not self._probe.deciding

    def __enter__(self) -> FolderLister:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()
        self._pending.clear()
        self._planned.clear()

    def start_all(self, folders: list[tuple[str, str]]) -> None:
        """``start`` each of (path, rel): a worker's batch, listed ahead as a whole."""
        for path, rel in folders:
            self.start(path, rel)

    def start(self, path: str, rel: str) -> None:
        """Begin listing ``path`` (root-relative ``rel``) and the folders below it."""
        if self.pool.on:
            self._submit(path, rel)
        elif self._probe.deciding:
            self._planned[path] = rel

    def is_folder(self, path: str) -> bool:
        return os.path.isdir(path)

    def entries(self, path: str, rel: str) -> list[os.DirEntry]:
        """The entries of ``path``, at root-relative ``rel``; raises ``OSError`` as
        ``os.scandir`` does."""
        if self._serial:  # the walk stats what it needs itself
            with os.scandir(path) as it:
                return list(it)
        with self._lock:
            future = self._pending.pop(path, None)
        if future is None and self.pool.on:  # not started: start it, with its subtree
            future = self._submit(path, rel, keep=False)
        if future is not None:
            return future.result()
        self._planned.pop(path, None)
        began = time.perf_counter()
        entries = self._list(path)
        if self._probe.timed((time.perf_counter() - began) / (len(entries) + 1)):
            self._turn_on()
        elif not self._probe.deciding:
            self._planned.clear()  # fast: this walk stays serial
            self._serial = True
        return entries

    def _turn_on(self) -> None:
        """Slow storage: threads from now on, starting what the walk has planned."""
        self.pool.turn_on()
        self.turned_on = True
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
        if not self.pool.on:
            return None
        future: Future = Future()
        if keep:
            with self._lock:
                self._pending[path] = future
        try:
            self.pool.submit(self._list_ahead, path, rel, future)
        except RuntimeError:  # closed while a listing was starting its subfolders
            future.cancel()
        return future

    def _list_ahead(self, path: str, rel: str, future: Future) -> None:
        """List ``path`` in a thread, and fetch its entries' types and stats in chunks
        on other threads (one at a time, a large folder is a long chain of lookups)."""
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except BaseException as err:
            future.set_exception(err)
            return
        listing = _Fetching(entries, rel, future, max(1, -(-len(entries) // FETCH_CHUNK)))
        for i in range(FETCH_CHUNK, len(entries), FETCH_CHUNK):
            try:
                if self.pool.submit(self._fetch_chunk, listing, i) is None:
                    return  # closed: nobody waits for this listing
            except RuntimeError:
                return
        self._fetch_chunk(listing, 0)

    def _fetch_chunk(self, listing: _Fetching, i: int) -> None:
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
class _Fetching:
    """A folder's entries while their types and stats are being fetched, in chunks."""

    entries: list[os.DirEntry]
    rel: str
    future: Future
    left: int  # chunks not yet fetched
    lock: threading.Lock = field(default_factory=threading.Lock)

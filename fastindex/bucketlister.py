"""A bucket's folders as the walk lists them: ``BucketLister``.

Paths are ``s3://bucket/key`` strings; the entries it gives are ``bucketentries``'.
See ``bucket``'s docstring for the requests.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from fastindex import s3check
from fastindex.bucketentries import Gone, PrefixEntry, entry_of, gone, place
from fastindex.s3client import REQUESTS_IN_FLIGHT, SCHEME, bucket_error, client, page_reader
from fastindex.s3list import Unreadable

if TYPE_CHECKING:
    from fastindex.bucket import BucketRoot


#: Folders a worker's range lists at first: few enough that a batch's ranges are in
#: flight at once, enough small subjects to fill a page.  A range splits further as
#: its first page shows how many folders a page holds (``_list_range``).
RANGE_NAMES = 8


class BucketLister:
    """The walk's lister over a bucket (see ``bucket``'s docstring).

    Paths are ``s3://bucket/key`` strings.  ``entries(path, rel)`` answers from a flat
    listing started by ``start`` when ``path`` is inside one, else by one delimiter
    listing (made ahead, on the threads, for each subfolder ``descend`` keeps).
    """

    def __init__(self, root: BucketRoot, descend: Callable[[str, str], bool]) -> None:
        self.root = root
        self._descend = descend
        self._client = client(root)
        self._threads = ThreadPoolExecutor(REQUESTS_IN_FLIGHT,
                                           thread_name_prefix="fastindex-s3")
        self.pool = self._threads  # objects are read on the listing threads
        self._lock = threading.Lock()
        self._flat: dict[str, Future] = {}  # folder path -> future of {folder: entries}
        self._levels: set[int] = set()  # the '/'s in the paths of _flat's folders
        self._ahead: dict[str, Future] = {}  # folder path -> future of its entries

    def __enter__(self) -> BucketLister:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)

    def start(self, path: str, rel: str) -> None:
        """Nothing to begin: a folder's subfolders are listed ahead as it is listed, and
        only a worker's batch is listed flat (``start_all``)."""

    def is_folder(self, path: str) -> bool:
        """Whether any key is below ``path``: one request."""
        try:
            page = self._client.list_objects_v2(Bucket=self.root.bucket,
                                                Prefix=self._prefix(path), MaxKeys=1)
        except Exception:
            return False
        return bool(page.get("KeyCount"))

    def start_all(self, folders: list[tuple[str, str]]) -> None:
        """List every key below each folder of a worker's batch, flat, on the threads.

        A batch holds subjects, or the date folders (or sessions) of one or more
        subjects. Sibling folders' keys are contiguous in the bucket's order, so they
        are listed as ranges of their parent's keys (``StartAfter`` the first, up to
        the last), ``RANGE_NAMES`` folders a range, at once, 1,000 keys a request, not
        a request or more per folder; the folders of sibling subjects as ranges of
        their common parent's keys (subject/date names). Each folder's listing is
        served from its range's.
        """
        ranges: dict[tuple[str, int], list[str]] = {}
        for top, name in self._tops([path for path, _ in folders]):
            ranges.setdefault((top, name.count("/") + 1), []).append(name)
        with self._lock:
            for (top, depth), names in ranges.items():
                self._submit_ranges(top, sorted(names, key=lambda name: f"{name}/"),
                                    RANGE_NAMES)  # in their keys' order
                self._levels.add(top.count("/") + depth)

    def _submit_ranges(self, top: str, names: list[str], per_range: int) -> None:
        """List ``names`` (in their keys' order) as ranges of ``per_range`` names each,
        their folders served from those from now on (the lock held)."""
        for start in range(0, len(names), per_range):
            part = names[start:start + per_range]
            future = self._threads.submit(self._list_range, top, part)
            for name in part:
                self._flat[f"{top}/{name}"] = future

    def _tops(self, paths: list[str]) -> list[tuple[str, str]]:
        """(the folder whose keys a range lists, the path below it) for each of ``paths``:
        their parent, or their parents' parent where several parents in ``paths`` share
        it inside the root (small subjects: one range, not one a subject)."""
        parents = [path.rpartition("/") for path in paths]
        siblings: dict[str, set[str]] = {}
        for parent, _, _ in parents:
            siblings.setdefault(parent.rpartition("/")[0], set()).add(parent)
        inside = self.root.url
        tops = []
        for parent, _, name in parents:
            grand, _, subject = parent.rpartition("/")
            if len(siblings[grand]) > 1 and (grand == inside or
                                             grand.startswith(f"{inside}/")):
                tops.append((grand, f"{subject}/{name}"))
            else:
                tops.append((parent, name))
        return tops

    def entries(self, path: str, rel: str) -> list:
        while (future := self._range_of(path)) is not None:
            listed = future.result()
            if self._range_of(path) is future:  # else the range gave it to another
                found = listed.get(path, ())
                if isinstance(found, Gone):  # see ``_list_range``
                    raise FileNotFoundError(errno.ENOENT, "no key below it any more, "
                                            "though its parent's listing held it", path)
                return list(found)
        with self._lock:
            future = self._ahead.pop(path, None)
        entries = future.result() if future is not None else self._list_folder(path)
        for entry in entries:
            if entry.is_dir():
                child = f"{rel}/{entry.name}" if rel else entry.name
                if self._descend(child, entry.name):
                    with self._lock:
                        self._ahead[entry.path] = self._threads.submit(self._list_folder,
                                                                       entry.path)
        return entries

    def _range_of(self, path: str) -> Future | None:
        """The flat listing ``path`` is in: the folder's or its listed parent's, found by
        cutting ``path`` at the depth of the listed folders (one pass over ``path``
        for each depth, not a lookup for each level of ``path``, which a deep key would
        make cubic)."""
        flat = self._flat
        if (future := flat.get(path)) is not None:
            return future
        for level in self._levels:
            below = path.split("/", level + 1)
            if len(below) > level + 1:
                future = flat.get(path[:len(path) - len(below[-1]) - 1])
                if future is not None:
                    return future
        return None

    def _prefix(self, path: str) -> str:
        key = self.root.key(path)
        return f"{key}/" if key else ""

    def _list_folder(self, path: str) -> list:
        """One folder: its objects and common prefixes (``Delimiter='/'``)."""
        prefix = self._prefix(path)
        try:
            objects, prefixes = self._folder_listing(prefix)
        except s3check.Refused as err:
            raise err.named(f"{SCHEME}{self.root.bucket}/{prefix}") from None
        except Exception as err:
            raise bucket_error(err, self.root) from None
        entries: list = []
        for common in prefixes:
            name = common[len(prefix):].rstrip("/")
            entries.append(PrefixEntry(name, f"{path}/{name}"))
        for obj in objects:
            name = obj["Key"][len(prefix):]
            if name:  # '' is the folder's own marker, made by consoles
                entries.append(entry_of(obj, name, f"{path}/{name}"))
        return entries

    def _folder_listing(self, prefix: str) -> tuple[list[dict], list[str]]:
        """(objects, common prefixes) of one delimiter listing: by ``s3list`` while it
        can read the pages, else by boto3's paginator, from the start; either way
        checked (``s3check.Progress``)."""
        reader = page_reader(self.root)
        if reader.on:
            with contextlib.suppress(Unreadable):
                return reader.folder(self.root.bucket, prefix)
        progress = reader.progress(self.root.bucket, prefix)
        objects: list[dict] = []
        prefixes: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.root.bucket, Prefix=prefix, Delimiter="/")
        for page in _checked(pages, progress):
            common = [c["Prefix"] for c in page.get("CommonPrefixes", ())]
            contents = page.get("Contents", [])
            progress.page(contents, common, page.get("NextContinuationToken"))
            prefixes += common
            objects += contents
        return objects, prefixes

    def _list_range(self, top: str, names: list[str]) -> dict[str, list]:
        """Every key below ``top/NAME`` for each of ``names`` (in their keys' order:
        sorted as ``NAME/``, for ``a-b/`` comes before ``a/``; all as deep: a folder's
        name, or subject/folder), in one listing of the range from the first to
        the last: path -> entries, as a walk lists them.

        Each name was a common prefix of its parent's listing: one with no key in the
        range (deleted since, or an endpoint that skipped it) is listed as ``Gone``, for
        ``entries`` to raise ``FileNotFoundError``, as a local folder gone since its
        parent was listed: its sessions are not lost without a word.

        A range whose first page ends before its last name gives the names after that
        page to ranges of their own (``_split``), listed at once: how many names a
        page holds is only known once one is read, and a range's pages come one after
        another, so large folders would otherwise be listed one page at a time.
        """
        prefix = self._prefix(top)
        depth = names[0].count("/") + 1
        wanted = set(names)
        end = f"{prefix}{names[-1]}/"  # the last folder's keys all start with it
        folders: dict[str, list] = {top: [], **{f"{top}/{n}": [] for n in names}}
        seen: set[str] = set()  # names with a key (or a marker) in the range
        last: tuple[str, str] | None = None  # (name, folder below it) of the last key
        into = ""  # and the folder it went in: a folder's keys come one after another
        try:
            for objects in self._range_pages(prefix, f"{prefix}{names[0]}"):
                for obj in objects:
                    key = obj["Key"]
                    if key > end and not key.startswith(end):
                        return gone(folders, top, names, seen)
                    parts = key[len(prefix):].split("/", depth)
                    if len(parts) > depth and (name := "/".join(parts[:depth])) in wanted:
                        below, _, leaf = parts[depth].rpartition("/")
                        if last == (name, below) and leaf:
                            folders[into].append(entry_of(obj, leaf, f"{into}/{leaf}"))
                        else:  # a name's first key always comes here
                            seen.add(name)
                            into = place(folders, f"{top}/{name}", parts[depth], obj)
                            last = (name, below) if below.count("/") < s3check.MAX_DEPTH \
                                else None
                if objects and len(names) > 1:  # names in key order: see ``start_all``
                    kept = max(1, bisect.bisect_right([f"{n}/" for n in names],
                                                      objects[-1]["Key"][len(prefix):]))
                    if kept < len(names) and self._split(top, names[kept:], kept):
                        for name in names[kept:]:
                            wanted.discard(name)
                            del folders[f"{top}/{name}"]
                        names = names[:kept]
                        end = f"{prefix}{names[-1]}/"
        except s3check.Refused as err:
            raise err.named(f"{SCHEME}{self.root.bucket}/{prefix}") from None
        except Exception as err:
            raise bucket_error(err, self.root) from None
        return gone(folders, top, names, seen)

    def _split(self, top: str, names: list[str], per_range: int) -> bool:
        """``_submit_ranges`` for the names a range being listed gives away; False when
        the threads are shut down (the batch is being abandoned: the range goes on
        whole)."""
        with self._lock:
            try:
                self._submit_ranges(top, names, per_range)
            except RuntimeError:
                return False
        return True

    def _range_pages(self, prefix: str, after: str) -> Iterator[list[dict]]:
        """The objects after ``after`` under ``prefix``, a page at a time: read by
        ``s3list`` while it can, then by boto3's paginator from the last key given; the
        one listing's rules checked across both (``s3check.Progress``)."""
        reader = page_reader(self.root)
        progress = reader.progress(self.root.bucket, prefix, after)
        if reader.on:
            try:
                for objects in reader.pages(self.root.bucket, prefix, after, progress):
                    yield objects
                    if objects:
                        after = objects[-1]["Key"]
                return
            except Unreadable:
                pass
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.root.bucket, Prefix=prefix, StartAfter=after)
        for page in _checked(pages, progress):
            contents = page.get("Contents", [])
            progress.page(contents, [], page.get("NextContinuationToken"))
            yield contents


def _checked(pages, progress: s3check.Progress) -> Iterator[dict]:
    """boto3's pages, its own refusal of a listing (a token repeated at once) as ours."""
    from botocore.exceptions import PaginationError

    try:
        yield from pages
    except PaginationError as err:
        raise progress.refuse(str(err)) from None

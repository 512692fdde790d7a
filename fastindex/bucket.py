"""An S3 bucket as a second source of entries: ``fastindex build s3://bucket/prefix``.

The walk (``walk.py``) asks a lister for each folder's entries; ``BucketLister`` answers
from the bucket's listing API instead of ``os.scandir``, so the ALF rules, the problems
and their reasons, the ignore rules, ids and order are the same code as for a local
tree, and a bucket and a local copy of it give the same tables.

Requests: above the date folders (labs, subjects) a folder is one listing with a
delimiter, as a folder is one ``scandir``; the date folders handed to a worker are
listed *flat*, as one range of their parent's keys (1,000 a request), and turned into
folders in memory, so a session costs no request of its own. Listings run on threads,
many in flight (``REQUESTS_IN_FLIGHT``), each listing as soon as its parent's is known,
as the local lister does on slow storage. An object's entry carries its size, its last-
modified time (the ``mtime_ns`` that ``update`` compares) and its ETag; with ``--hash``
it is streamed once (``GetObject`` with ``If-Match`` its ETag, so a key rewritten since
the listing is ``changed_while_reading``, not a digest of another version).

The client is boto3's (the standard credential chain: environment, profile, instance
role; ``anonymous`` signs nothing, as ``aws --no-sign-request``).  It is an optional
extra: ``pip install 'fastindex[s3]'``.  Listings' pages are read by
``s3list.PageReader`` (boto3 signs the request, ElementTree reads the answer), and by
boto3's paginator from the first page it cannot read.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from fastindex.errors import InputError
from fastindex.s3list import Unreadable

SCHEME = "s3://"
#: Listings and reads in flight per process.  S3 answers a request in 15 to 30 ms
#: whatever else is in flight; 32 keeps a 2-core process busy parsing pages.
REQUESTS_IN_FLIGHT = 32
#: A bucket's worker processes per CPU: a worker waits for its batch's first page, so
#: twice the CPUs keep them busy (100k keys at 20 ms a request on 2 CPUs: 4.4 s with 4
#: workers, 5.1 s with 2).
WORKERS_PER_CPU = 2
#: Seconds to connect or to wait for an answer (botocore's defaults).
TIMEOUT_S = 60


def is_url(given) -> bool:
    """Whether what the user typed names a bucket (``s3://bucket/prefix``)."""
    return isinstance(given, str) and given.startswith(SCHEME)


@dataclass(frozen=True)
class BucketRoot:
    """A bucket's tree (a ``root.Root``): where it is and how to reach it, all that a
    worker needs to list and read it with a client of its own."""

    bucket: str
    prefix: str  # '' or a key prefix without a trailing '/'
    endpoint_url: str | None = None
    anonymous: bool = False
    workers_per_cpu = WORKERS_PER_CPU
    keeps_etags = True

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None, anonymous: bool = False
              ) -> BucketRoot:
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InputError(f"not an S3 URL (s3://bucket/prefix): {url}")
        prefix = parts.path.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise InputError(f"the prefix of {url} has an empty, . or .. part")
        return cls(parts.netloc, prefix, endpoint_url, anonymous)

    def __str__(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    @property
    def top(self) -> str:
        return self.url

    def join(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def key(self, path: str) -> str:
        """The key of an entry's path (``s3://bucket/key``)."""
        return path[len(SCHEME) + len(self.bucket) + 1:]

    def lister(self, io, descend: Callable[[str, str], bool], where: str | None = None,
               stat_files: bool = False) -> BucketLister:
        """Listings are requests on the lister's own threads, whatever ``io`` says."""
        return BucketLister(self, descend)

    def read_small(self, name: str, cap: int) -> bytes | None:
        return read_small(self, name, cap)

    def digest(self, path: str, algorithms: tuple[str, ...], buffer: bytearray,
               listed=None) -> tuple[int, dict[str, str]]:
        return digest_object(self, path, algorithms, buffer, getattr(listed, "etag", None))

    def own_files(self) -> frozenset[str]:
        """The ignore file; a bucket's tables are written elsewhere (``tables_folder``)."""
        from fastindex.ignore import IGNORE_FILE

        return frozenset({self.join(IGNORE_FILE)})

    def warnings(self) -> list:
        return []

    def link_prefix(self) -> str:
        return ""  # keys are not links

    def io_found(self):
        return None  # a bucket's listers keep their own requests in flight

    def readable_here(self) -> bool | str:
        """Each worker lists the prefix with a client of its own, its own credentials."""
        try:
            check_bucket(self)
        except InputError as err:
            return f"cannot list {self.url}: {err}"
        return True

    def tables_folder(self, given, option: str):
        if given is None:
            raise InputError(f"the tables of a bucket are written to a local folder: "
                             f"{option} DIR")
        return given


def open_bucket(url: str, endpoint_url: str | None, anonymous: bool) -> BucketRoot:
    """The bucket tree at ``url``, checked with one request (``check_bucket``)."""
    root = BucketRoot.parse(url, endpoint_url, anonymous)
    check_bucket(root)
    return root


def client(root: BucketRoot):
    """A boto3 S3 client for ``root``, one per process: clients are thread-safe, but not
    fork-safe (a forked worker would share its parent's connections)."""
    with _CLIENTS:  # a boto3 session is not thread-safe; listing threads ask for clients
        return _client(root, os.getpid())


_CLIENTS = threading.Lock()


@functools.lru_cache(maxsize=8)
def _client(root: BucketRoot, pid: int):
    session = _session()  # first: it says when boto3 is missing
    import botocore
    from botocore.config import Config

    config = Config(max_pool_connections=REQUESTS_IN_FLIGHT,
                    retries={"max_attempts": 5, "mode": "standard"},
                    **({"signature_version": botocore.UNSIGNED} if root.anonymous else {}))
    return session.client("s3", endpoint_url=root.endpoint_url, config=config)


@functools.lru_cache(maxsize=1)
def _session():
    """The process's boto3 session.  Forked workers inherit it with its service model
    loaded: a client then takes 0.02 s to make, not the 0.13 s of a fresh session (the
    start-up of every worker)."""
    core = _core()  # first: it says when boto3 is missing
    import boto3

    return boto3.session.Session(botocore_session=core)


@functools.lru_cache(maxsize=1)
def _core():
    """botocore's session under ``_session``, with listings' times read by
    ``parse_timestamp``; the CA bundle the page reader verifies with comes from it."""
    try:
        import boto3  # noqa: F401
        import botocore.session
    except ImportError:
        raise InputError("indexing a bucket needs boto3: pip install 'fastindex[s3]'") from None
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp)
    return core


def page_reader(root: BucketRoot):
    """The reader of ``root``'s listings (``s3list``), one per client."""
    return _page_reader(client(root))


@functools.lru_cache(maxsize=8)
def _page_reader(s3):
    from fastindex.s3list import PageReader

    verify = _core().get_config_variable("ca_bundle") or True
    return PageReader(s3, verify, TIMEOUT_S, REQUESTS_IN_FLIGHT)


def parse_timestamp(value: str) -> datetime:
    """A listing's ``LastModified`` (ISO 8601, ``2026-12-03T13:17:34.000Z``) as botocore
    reads it, without dateutil: botocore's own parser spends three quarters of a 1,000-key
    page's parsing on the timestamps (measured: 74k keys, 10.1 s of CPU against 3.0 s).
    Anything ``fromisoformat`` does not read exactly (headers' RFC 1123 dates, Python
    3.10's narrower ``fromisoformat``, a time without a zone) goes to botocore's."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        from botocore.utils import parse_timestamp as botocore_parse

        return botocore_parse(value)
    return parsed


class ObjectStat:
    """What the walk and the workers read of an object, as of a file's ``os.stat``."""

    __slots__ = ("st_size", "st_mtime_ns", "etag")
    st_mode = 0o100444  # a regular file anyone may read: the bucket's reader can
    st_ctime_ns = 0

    def __init__(self, size: int, mtime_ns: int, etag: str) -> None:
        self.st_size, self.st_mtime_ns, self.etag = size, mtime_ns, etag


class ObjectEntry:
    """An object, as an ``os.DirEntry`` of a file."""

    __slots__ = ("name", "path", "_stat")

    def __init__(self, name: str, path: str, stat: ObjectStat) -> None:
        self.name, self.path, self._stat = name, path, stat

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return False

    def is_file(self, follow_symlinks: bool = True) -> bool:
        return True

    def is_symlink(self) -> bool:
        return False

    def stat(self, follow_symlinks: bool = True) -> ObjectStat:
        return self._stat


class PrefixEntry:
    """A common prefix (``a/b/``), as an ``os.DirEntry`` of a folder."""

    __slots__ = ("name", "path")

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return True

    def is_file(self, follow_symlinks: bool = True) -> bool:
        return False

    def is_symlink(self) -> bool:
        return False

    def stat(self, follow_symlinks: bool = True):
        raise NotADirectoryError(errno.ENOTSUP, "a prefix has no stat", self.path)


def bucket_error(err: Exception, root: BucketRoot) -> Exception:
    """A client error as what the walk and the commands expect: ``FileNotFoundError``
    for a missing key, ``InputError`` for what the user must fix (bucket, endpoint,
    credentials), else ``OSError`` (reported ``unreadable``, the rest goes on)."""
    from botocore import exceptions as e

    if isinstance(err, e.ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404"):
            return FileNotFoundError(errno.ENOENT, "no such key (deleted since listed)")
        if code == "NoSuchBucket":
            return InputError(f"no such bucket: {root.bucket}"
                              + (f" at {root.endpoint_url}" if root.endpoint_url else ""))
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "403", "AllAccessDisabled"):
            return InputError(f"access to {root.url} denied ({code}): check the credentials "
                              f"(AWS_PROFILE, AWS_ACCESS_KEY_ID...), or --no-sign-request "
                              f"for a public bucket")
        return OSError(errno.EIO, f"{code}: {err}")
    if isinstance(err, e.NoCredentialsError):
        return InputError("no AWS credentials found (environment, profile, instance role); "
                          "--no-sign-request reads a public bucket without them")
    if isinstance(err, (e.EndpointConnectionError, e.ConnectTimeoutError)):
        return InputError(f"cannot reach the S3 endpoint "
                          f"{root.endpoint_url or 'of AWS'}: {err}")
    if isinstance(err, e.BotoCoreError):
        return OSError(errno.EIO, str(err))
    return err


def _mtime_ns(obj: dict) -> int:
    return int(obj["LastModified"].timestamp()) * 1_000_000_000


def _stat(obj: dict) -> ObjectStat:
    return ObjectStat(obj["Size"], _mtime_ns(obj), obj.get("ETag", ""))


class BucketLister:
    """The walk's lister over a bucket (see the module's docstring).

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

        A batch is one subject's date folders (or sessions), siblings whose keys are
        contiguous in the bucket's order: they are listed as one range of the parent's
        keys (``StartAfter`` the first, up to the last), 1,000 keys a request, not a
        request or more per folder; each folder's listing is served from the range's.
        """
        by_parent: dict[str, list[str]] = {}
        for path, _ in folders:
            parent, _, name = path.rpartition("/")
            by_parent.setdefault(parent, []).append(name)
        with self._lock:
            for parent, names in by_parent.items():
                future = self._threads.submit(self._list_range, parent, sorted(names))
                for name in names:
                    self._flat.setdefault(f"{parent}/{name}", future)

    def entries(self, path: str, rel: str) -> list:
        if (future := self._range_of(path)) is not None:
            return list(future.result().get(path, ()))
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
        """The flat listing ``path`` is in: the folder's or its nearest listed parent's (a
        lookup per level, not a scan of the batch's folders for every folder)."""
        top = path
        while len(top) > len(SCHEME):
            if (future := self._flat.get(top)) is not None:
                return future
            top = top.rpartition("/")[0]
        return None

    def _prefix(self, path: str) -> str:
        key = self.root.key(path)
        return f"{key}/" if key else ""

    def _list_folder(self, path: str) -> list:
        """One folder: its objects and common prefixes (``Delimiter='/'``)."""
        prefix = self._prefix(path)
        try:
            objects, prefixes = self._folder_listing(prefix)
        except Exception as err:
            raise bucket_error(err, self.root) from None
        entries: list = []
        for common in prefixes:
            name = common[len(prefix):].rstrip("/")
            entries.append(PrefixEntry(name, f"{path}/{name}"))
        for obj in objects:
            name = obj["Key"][len(prefix):]
            if name:  # '' is the folder's own marker, made by consoles
                entries.append(ObjectEntry(name, f"{path}/{name}", _stat(obj)))
        return entries

    def _folder_listing(self, prefix: str) -> tuple[list[dict], list[str]]:
        """(objects, common prefixes) of one delimiter listing: by ``s3list`` while it
        can read the pages, else by boto3's paginator, from the start."""
        reader = page_reader(self.root)
        if reader.on:
            with contextlib.suppress(Unreadable):
                return reader.folder(self.root.bucket, prefix)
        objects: list[dict] = []
        prefixes: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.root.bucket, Prefix=prefix, Delimiter="/"):
            prefixes += (common["Prefix"] for common in page.get("CommonPrefixes", ()))
            objects += page.get("Contents", ())
        return objects, prefixes

    def _list_range(self, parent: str, names: list[str]) -> dict[str, list]:
        """Every key below ``parent/NAME`` for each of ``names`` (sorted), in one listing
        of the range from the first to the last: path -> entries, as a walk lists them."""
        prefix = self._prefix(parent)
        wanted = set(names)
        end = f"{prefix}{names[-1]}/\U0010ffff"
        folders: dict[str, list] = {parent: [], **{f"{parent}/{n}": [] for n in names}}
        try:
            for objects in self._range_pages(prefix, f"{prefix}{names[0]}"):
                for obj in objects:
                    key = obj["Key"]
                    if key > end:
                        return folders
                    name, slash, rest = key[len(prefix):].partition("/")
                    if slash and name in wanted:
                        _place(folders, f"{parent}/{name}", rest, obj)
        except Exception as err:
            raise bucket_error(err, self.root) from None
        return folders

    def _range_pages(self, prefix: str, after: str) -> Iterator[list[dict]]:
        """The objects after ``after`` under ``prefix``, a page at a time: read by
        ``s3list`` while it can, then by boto3's paginator from the last key given."""
        reader = page_reader(self.root)
        if reader.on:
            try:
                for objects in reader.pages(self.root.bucket, prefix, after):
                    yield objects
                    if objects:
                        after = objects[-1]["Key"]
                return
            except Unreadable:
                pass
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.root.bucket, Prefix=prefix, StartAfter=after)
        for page in pages:
            yield page.get("Contents", ())


def _place(folders: dict[str, list], top: str, rest: str, obj: dict) -> None:
    """Put one key (``rest``, below ``top``) in its folder, making the folders above."""
    *dirs, name = rest.split("/")
    folder = top
    for part in dirs:
        child = f"{folder}/{part}"
        if child not in folders:
            folders[child] = []
            folders[folder].append(PrefixEntry(part, child))
        folder = child
    if name:  # a key ending in '/' is a folder marker
        folders[folder].append(ObjectEntry(name, f"{folder}/{name}", _stat(obj)))


def digest_object(root: BucketRoot, path: str, algorithms: tuple[str, ...],
                  buffer: bytearray, etag: str | None = None) -> tuple[int, dict[str, str]]:
    """Stream one object once: (bytes read, digests).  ``etag``: the listing's; a key
    rewritten since then is ``ChangedWhileReading``."""
    from fastindex import hashing

    try:
        response = client(root).get_object(Bucket=root.bucket, Key=root.key(path),
                                           **({"IfMatch": etag} if etag else {}))
    except Exception as err:
        from botocore.exceptions import ClientError

        if isinstance(err, ClientError) and err.response.get("Error", {}).get(
                "Code") in ("PreconditionFailed", "412"):
            raise hashing.ChangedWhileReading(errno.EAGAIN, "rewritten since it was listed",
                                              path) from None
        raise bucket_error(err, root) from None
    with response["Body"] as body:
        return hashing.digest_stream(_Readinto(body), algorithms, buffer)


class _Readinto:
    """``readinto`` over a stream that only has ``read`` (botocore's body)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def readinto(self, view: memoryview) -> int:
        data = self._stream.read(len(view))
        view[:len(data)] = data
        return len(data)


def read_small(root: BucketRoot, name: str, cap: int) -> bytes | None:
    """The bytes of the object ``name`` at the root (None when there is none), or a
    refusal when it is larger than ``cap``: the bucket's ``.fastindexignore``."""
    key = f"{root.prefix}/{name}" if root.prefix else name
    try:
        response = client(root).get_object(Bucket=root.bucket, Key=key)
    except Exception as err:
        mapped = bucket_error(err, root)
        if isinstance(mapped, FileNotFoundError):
            return None
        raise mapped from None
    with response["Body"] as body:
        data = body.read(cap + 1)
    if len(data) > cap:
        raise InputError(f"{root.url}/{name} is larger than {cap} bytes; refused")
    return data


def check_bucket(root: BucketRoot) -> None:
    """One request before any work: the bucket exists, is reachable and readable, and
    holds keys under the prefix; else a one-line refusal (exit 2)."""
    prefix = f"{root.prefix}/" if root.prefix else ""
    try:
        page = client(root).list_objects_v2(Bucket=root.bucket, Prefix=prefix, MaxKeys=1)
    except Exception as err:
        mapped = bucket_error(err, root)
        if isinstance(mapped, InputError):
            raise mapped from None
        raise InputError(f"cannot list {root.url}: {mapped}") from None
    if not page.get("KeyCount"):
        raise InputError(f"no keys under {root.url}: check the bucket and the prefix")

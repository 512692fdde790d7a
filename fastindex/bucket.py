"""An S3 bucket as a second source of entries: ``fastindex build s3://bucket/prefix``.

The walk (``walk.py``) asks a lister for each folder's entries; ``BucketLister`` answers
from the bucket's listing API instead of ``os.scandir``, so the ALF rules, the problems
and their reasons, the ignore rules, ids and order are the same code as for a local
tree, and a bucket and a local copy of it give the same tables.

Requests: above the subjects (labs, ``Subjects``) a folder is one listing with a
delimiter, as a folder is one ``scandir``; the subjects handed to a worker (the date
folders, for subjects outside a lab) are listed *flat*, as ranges of their parent's
keys (a page of up to 1,000 keys a request), and turned into folders in memory, so a
subject or a session costs no request of its own. Listings run on threads,
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

``bucketlister`` holds the lister, ``bucketentries`` its entries, ``s3client`` the
client, its session and the mapping of its errors; here is the root and what it reads.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from fastindex.bucketlister import BucketLister
from fastindex.errors import InputError
from fastindex.s3check import MAX_OBJECT_SIZE, Limits, Refused
from fastindex.s3client import SCHEME, bucket_error, client

#: A bucket's worker processes per CPU: a worker spends much of its time waiting for
#: its batch's pages, so twice the CPUs keep the CPUs busy.
WORKERS_PER_CPU = 2


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
    #: what one listing or request may take (a test passes smaller ones)
    limits: Limits = Limits()
    workers_per_cpu = WORKERS_PER_CPU
    keeps_etags = True
    #: a worker lists its batch's subjects as ranges of keys (``BucketLister.start_all``)
    hands_off_subjects = True

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

    def lister(self, io, descend: Callable[[str, str], bool], probe_path: str | None = None,
               stat_files: bool = False) -> BucketLister:
        """Listings are requests on the lister's own threads, whatever ``io`` says."""
        return BucketLister(self, descend)

    def read_small(self, name: str, cap: int) -> bytes | None:
        return read_small(self, name, cap)

    def digest(self, path: str, algorithms: tuple[str, ...], buffer: bytearray,
               listed=None) -> tuple[int, dict[str, str]]:
        # listed: the walk's ObjectStat, or a hashing.Listed (a task of its own, update)
        return digest_object(self, path, algorithms, buffer, getattr(listed, "etag", None),
                             getattr(listed, "st_size", None))

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


def digest_object(root: BucketRoot, path: str, algorithms: tuple[str, ...],
                  buffer: bytearray, etag: str | None = None, size: int | None = None
                  ) -> tuple[int, dict[str, str]]:
    """Stream one object once: (bytes read, digests).  ``etag``: the listing's; a key
    rewritten since then is ``ChangedWhileReading``.  ``size``: the listing's; at most
    one byte more is read (else the answer's ``Content-Length``), within a deadline
    that grows with it (``Limits.object_deadline``).

    Whatever goes wrong with this object is an ``OSError`` (its problem, reported; the
    build goes on): an answer botocore cannot read (a ``Content-Length`` that is no
    number), a body cut short or too slow, a refusal of its key.
    """
    from fastindex import hashing

    try:
        response = client(root).get_object(Bucket=root.bucket, Key=root.key(path),
                                           **({"IfMatch": etag} if etag else {}))
        expected = size if size is not None else response.get("ContentLength")
        if type(expected) is not int or not 0 <= expected <= MAX_OBJECT_SIZE:
            raise OSError(errno.EIO, f"an answer of {expected!r} bytes")
        deadline = root.limits.object_deadline(expected)
        with response["Body"] as body:
            return hashing.digest_stream(_Readinto(body, deadline), algorithms, buffer,
                                         limit=expected + 1)
    except OSError:
        raise
    except Exception as err:
        raise _object_error(err, root, path) from None


def _object_error(err: Exception, root: BucketRoot, path: str) -> OSError:
    """A failed read of one object as its problem."""
    from botocore.exceptions import ClientError

    from fastindex import hashing

    if isinstance(err, ClientError) and err.response.get("Error", {}).get(
            "Code") in ("PreconditionFailed", "412"):
        return hashing.ChangedWhileReading(errno.EAGAIN, "rewritten since it was listed",
                                           path)
    try:
        mapped = bucket_error(err, root)
    except Exception:  # noqa: BLE001 - mapping must not fail the build either
        mapped = err
    if isinstance(mapped, OSError):
        return mapped
    return OSError(errno.EIO, f"{type(err).__name__}: {err}")


class _Readinto:
    """``readinto`` over a stream that only has ``read`` (botocore's body, whose reads
    return what has arrived: ``s3check.Body``), up to a deadline."""

    def __init__(self, stream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def readinto(self, view: memoryview) -> int:
        if time.monotonic() > self._deadline:
            raise TimeoutError(errno.ETIMEDOUT, "not read within its deadline")
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
    data = bytearray(cap + 1)
    try:
        with response["Body"] as body:
            read = _fill(_Readinto(body, root.limits.object_deadline(cap)), data)
    except Exception as err:
        raise InputError(f"cannot read {root.url}/{name}: {err}") from None
    if read > cap:
        raise InputError(f"{root.url}/{name} is larger than {cap} bytes; refused")
    return bytes(data[:read])


def _fill(source: _Readinto, into: bytearray) -> int:
    """Fill ``into`` from ``source`` until it is full or the source ends: bytes read."""
    view = memoryview(into)
    total = 0
    while total < len(into) and (n := source.readinto(view[total:])):
        total += n
    return total


def check_bucket(root: BucketRoot) -> None:
    """One request before any work: the bucket exists, is reachable and readable, and
    holds keys under the prefix; else a one-line refusal (exit 2)."""
    prefix = f"{root.prefix}/" if root.prefix else ""
    try:
        page = client(root).list_objects_v2(Bucket=root.bucket, Prefix=prefix, MaxKeys=1)
    except Refused as err:  # the endpoint's answer, not the user's input: exit 3
        raise err.named(root.url) from None
    except Exception as err:
        mapped = bucket_error(err, root)
        if isinstance(mapped, InputError):
            raise mapped from None
        raise InputError(f"cannot list {root.url}: {mapped}") from None
    if not page.get("KeyCount"):
        raise InputError(f"no keys under {root.url}: check the bucket and the prefix")

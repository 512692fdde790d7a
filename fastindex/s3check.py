"""Every answer of a bucket's endpoint checked before it is used.

The endpoint is untrusted (docs/THREAT-MODEL.md): it may be an S3-compatible store with
bugs, or anyone's server on the ``--endpoint-url`` the user was given.  So:

- a listing must make progress (``Progress``): a continuation token never repeats,
  keys and common prefixes strictly increase within and across its pages, each starts
  with the requested prefix and, for a range listing, comes after its ``StartAfter``;
  a listing has at most ``Limits.pages`` pages.  A listing that breaks a rule is
  ``Refused`` (exit 3, as any build that could not be completed: the tree cannot be
  listed whole, and nothing the user typed can fix the endpoint's answers);
- a listing page is read with a byte cap (``Limits.page_bytes``) and a deadline, never
  whole: an endless or huge page is refused, not read into memory;
- each listed object is held to the rules the tables are checked with when read back
  (``entry_fault``: ``tablecheck``'s ETag form, a size S3 can hold, a time from 1970
  to 2200): one that fails is its key's problem (``bad_listing``), the rest indexed;
- bodies are read as they arrive (``Body``: no read waits for a whole buffer), so a
  deadline checked between reads ends a body that trickles.

Every request the client makes for a listing or an object is sent here (``guard``: the
client's ``before-send`` event, with an HTTP session made from the client's own
configuration), so boto3's paginator, its retries and its errors get the same caps.
"""

from __future__ import annotations

import errno
import operator
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice

from fastindex.errors import FastindexError
from fastindex.tablecheck import ETAG_FORM

#: S3's largest object (5 TiB): a listed size above it is no object's.
MAX_OBJECT_SIZE = 5 << 40
#: Listed times are taken from the epoch up to this (excluded): the tables hold
#: non-negative nanoseconds, and a time centuries ahead is a store's bug.
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
#: Folders below a worker's batch folder that a key may make: S3 keys are at most 1,024
#: bytes, so no key of S3's is deeper; the rest of a deeper one is one name.
MAX_DEPTH = 512
#: How much a read asks for at a time (it takes what has arrived, up to this).
READ_CHUNK = 1 << 16

_ETAG = re.compile(ETAG_FORM)
_LATEST_S = LATEST.timestamp()


@dataclass(frozen=True)
class Limits:
    """What one listing or one request may take (a ``BucketRoot`` carries them)."""

    #: pages of one listing: 100 million keys at S3's 1,000 a page
    pages: int = 100_000
    #: bytes of one listing page: S3's 1,000 keys of 1,024 bytes, escaped, fit with room
    page_bytes: int = 16 << 20
    #: seconds for one answer, body included (a listing page; an object, plus below)
    deadline_s: float = 300.0
    #: an object's read gets ``deadline_s`` plus its size at this many bytes a second
    bytes_per_s: int = 64 << 10

    def object_deadline(self, size: int) -> float:
        """When the read of an object of ``size`` bytes, starting now, must be done."""
        return time.monotonic() + self.deadline_s + size / self.bytes_per_s


class Refused(FastindexError):
    """The endpoint's answers to a listing cannot be made consistent: the build stops
    (exit 3), nothing is written."""

    def named(self, where: str) -> Refused:
        """This refusal, naming the listing when it does not yet."""
        text = str(self)
        return self if text.startswith("refused the listing") else Refused(
            f"refused the listing of {where}: {text}")


class Progress:
    """The rules one listing's pages must keep, checked page by page (``page``)."""

    __slots__ = ("where", "prefix", "last", "tokens", "pages", "limits")

    def __init__(self, where: str, prefix: str, after: str, limits: Limits) -> None:
        self.where = where  # s3://bucket/prefix, for the messages
        self.prefix = prefix
        self.last = after  # every key and common prefix comes after this
        self.tokens: set[str] = set()
        self.pages = 0
        self.limits = limits

    def page(self, objects: list[dict], prefixes: list[str], token: str | None) -> None:
        """Check one page (its objects' keys, its common prefixes, its continuation
        token, None on the last page); ``Refused`` naming the rule it breaks."""
        self.pages += 1
        if self.pages > self.limits.pages:
            raise self.refuse(f"more than {self.limits.pages} pages")
        if token is not None:
            if token in self.tokens:
                raise self.refuse(f"the continuation token {_shown(token)} came twice")
            self.tokens.add(token)
        keys = [o["Key"] for o in objects]
        firsts, lasts = [], []
        for what, names in (("key", keys), ("common prefix", prefixes)):
            if not names:
                continue
            if not all(map(operator.lt, names, islice(names, 1, None))):
                bad = next(b for a, b in zip(names, names[1:]) if not a < b)
                raise self.refuse(f"{what} {_shown(bad)} is not after the one before it")
            # keys that share a prefix are contiguous in order: the ends are enough
            for name in (names[0], names[-1]):
                if not name.startswith(self.prefix):
                    raise self.refuse(f"{what} {_shown(name)} is outside the prefix "
                                       f"{_shown(self.prefix)}")
            firsts.append(names[0])
            lasts.append(names[-1])
        if firsts:
            if min(firsts) <= self.last:
                raise self.refuse(f"{_shown(min(firsts))} is not after "
                                   f"{_shown(self.last)}, listed or asked for before it")
            self.last = max(lasts)

    def refuse(self, rule: str) -> Refused:
        """A refusal of this listing for breaking ``rule``."""
        return Refused(f"refused the listing of {self.where}: {rule}")


def entry_fault(obj: dict) -> str | None:
    """Why a listed object's size, time or ETag cannot be a row, or None."""
    size = obj["Size"]
    if type(size) is not int or not 0 <= size <= MAX_OBJECT_SIZE:
        return f"listed Size {_shown(size)} is not an object's size (0 to 5 TiB)"
    when = obj["LastModified"]
    try:
        seconds = when.timestamp()
    except (AttributeError, ValueError, OverflowError):
        seconds = -1.0
    if not 0 <= seconds < _LATEST_S:
        return (f"listed LastModified {_shown(when)} is not a time from 1970 to "
                f"{LATEST.year}")
    etag = obj.get("ETag")
    if not isinstance(etag, str) or _ETAG.fullmatch(etag) is None:
        return f"listed ETag {_shown(etag)} is not an ETag (1 to 200 printable ASCII)"
    return None


class Body:
    """A response body read as it arrives (each ``read`` returns what has come, never
    waiting for a whole buffer), at most ``cap`` bytes (more: ``Refused``) and up to
    ``deadline`` (``time.monotonic()``; past it: ``TimeoutError``)."""

    def __init__(self, raw, cap: int | None = None, deadline: float | None = None) -> None:
        self._raw = raw  # urllib3's response
        self._cap = cap
        self._deadline = deadline
        self._read = 0

    def read(self, amt: int | None = None) -> bytes:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TimeoutError(errno.ETIMEDOUT, "the answer did not arrive in time")
        data = self._raw.read1(amt if amt is not None and amt >= 0 else READ_CHUNK)
        self._read += len(data)
        if self._cap is not None and self._read > self._cap:
            self.close()
            raise Refused(f"an answer of more than {self._cap} bytes")
        return data

    def stream(self, amt: int = READ_CHUNK):
        """The body's chunks to its end (botocore reads a whole answer this way)."""
        while data := self.read(amt):
            yield data

    def close(self) -> None:
        self._raw.close()

    def release_conn(self) -> None:
        self._raw.release_conn()

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


def read_whole(raw, cap: int, deadline: float) -> bytes:
    """A body to its end, capped and under a deadline (see ``Body``)."""
    return b"".join(Body(raw, cap, deadline).stream())


def http_session(s3, verify):
    """An HTTP session as botocore makes a client's, from the client's configuration."""
    from botocore.httpsession import URLLib3Session
    from botocore.utils import get_environ_proxies

    config = s3.meta.config
    return URLLib3Session(verify=verify,
                          proxies=config.proxies or get_environ_proxies(s3.meta.endpoint_url),
                          timeout=(config.connect_timeout, config.read_timeout),
                          max_pool_connections=config.max_pool_connections,
                          client_cert=config.client_cert, proxies_config=config.proxies_config)


def guard(s3, http, limits: Limits) -> None:
    """Send the client's listings and object reads here: bodies read as they arrive
    (``Body``); a listing's page, and any error's answer, capped in bytes and time."""
    from botocore.awsrequest import AWSResponse

    def send(request, listing: bool):
        request.stream_output = True  # the body is read by botocore through ``Body``
        response = http.send(request)
        capped = listing or response.status_code >= 300
        body = Body(response.raw, limits.page_bytes if capped else None,
                    time.monotonic() + limits.deadline_s if capped else None)
        return AWSResponse(response.url, response.status_code, response.headers, body)

    s3.meta.events.register("before-send.s3.ListObjectsV2",
                            lambda request, **_: send(request, True))
    s3.meta.events.register("before-send.s3.GetObject",
                            lambda request, **_: send(request, False))


def _shown(value) -> str:
    """A value as one short line of a message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."

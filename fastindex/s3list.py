"""A bucket's listings, read without botocore's response parser.

A ``ListObjectsV2`` page (up to 1,000 keys) is read here by ElementTree (C), taking only
the four fields a listing needs, not by botocore's generic, model-driven XML parser,
which is the largest part of a bucket build's CPU even with ``LastModified`` read by
``fromisoformat``.  boto3 still makes each request what it would be (the client's
endpoint, addressing style, credentials and signature: ``generate_presigned_url``, with
the ``encoding-type=url`` botocore adds itself) and botocore's HTTP session sends it;
only the answer is read differently.

Anything unexpected (an HTTP error, an answer that is not a ``ListBucketResult``, a
missing key) raises ``Unreadable``: the caller goes on with boto3's own paginator from
the last key it was given (a folder's listing: from its start), so errors are still
boto3's, with its retries and messages.
Keys are decoded as botocore decodes them, so both ways give the same keys.

Each page is read with a byte cap and a deadline and checked by the listing's
``s3check.Progress`` (a page too large, or one that breaks a rule, is ``Refused``, not
handed to boto3); a Size or LastModified that does not read as a number or a time is
kept as its text, for ``s3check.entry_fault`` to make it its key's problem.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from datetime import datetime

from fastindex import s3check
from fastindex.log import logger

#: How long a page's signed request stays valid: it is sent at once.
EXPIRES_S = 900


class Unreadable(Exception):
    """A page this reader cannot read: boto3's paginator takes over."""


class PageReader:
    """Reads the pages of one client's listings (one per process, as the client)."""

    def __init__(self, client, http, limits: s3check.Limits) -> None:
        self._client = client
        self._http = http  # s3check.http_session's
        self.limits = limits
        self.on = True  # off for good after the first page it could not read

    def progress(self, bucket: str, prefix: str, after: str = "") -> s3check.Progress:
        """The rules of one listing, kept across its pages (and across the handover to
        boto3's paginator)."""
        return s3check.Progress(f"s3://{bucket}/{prefix}", prefix, after, self.limits)

    def pages(self, bucket: str, prefix: str, after: str,
              progress: s3check.Progress | None = None) -> Iterator[list[dict]]:
        """The objects under ``prefix`` after the key ``after``, a page at a time, as
        boto3's ``Contents`` (Key, Size, ETag, LastModified)."""
        progress = progress or self.progress(bucket, prefix, after)
        token = None
        while True:
            params = {"Bucket": bucket, "Prefix": prefix,
                      **({"ContinuationToken": token} if token else
                         {"StartAfter": after} if after else {})}
            objects, _, token = self._page(params, progress)
            yield objects
            if token is None:
                return

    def folder(self, bucket: str, prefix: str) -> tuple[list[dict], list[str]]:
        """A whole listing with ``Delimiter='/'``: the objects directly under ``prefix``
        and its common prefixes (a page that cannot be read fails it all: it is listed
        again by boto3)."""
        progress = self.progress(bucket, prefix)
        objects: list[dict] = []
        prefixes: list[str] = []
        token = None
        while True:
            params = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/",
                      **({"ContinuationToken": token} if token else {})}
            more, common, token = self._page(params, progress)
            objects += more
            prefixes += common
            if token is None:
                return objects, prefixes

    def _page(self, params: dict, progress: s3check.Progress
              ) -> tuple[list[dict], list[str], str | None]:
        """One page, read and checked: ``Unreadable`` when boto3 may do better, else
        ``Refused`` (a rule broken, too large) or ``TimeoutError``."""
        from botocore.awsrequest import AWSRequest

        try:
            url = self._client.generate_presigned_url("list_objects_v2", Params=params,
                                                      ExpiresIn=EXPIRES_S)
            request = AWSRequest(method="GET", url=url).prepare()
            request.stream_output = True  # read below, capped
            response = self._http.send(request)
        except Exception as err:
            raise self._off(f"{type(err).__name__}: {err}") from None
        deadline = time.monotonic() + self.limits.deadline_s
        if response.status_code != 200:
            response.raw.close()
            raise self._off(f"HTTP {response.status_code}")
        try:
            body = s3check.read_whole(response.raw, self.limits.page_bytes, deadline)
        except s3check.Refused as err:
            raise err.named(progress.where) from None
        except TimeoutError:
            raise
        except Exception as err:  # the connection's: boto3 tries again, its way
            raise self._off(f"{type(err).__name__}: {err}") from None
        try:
            page = read_page(body)
        except (ElementTree.ParseError, AttributeError, ValueError, TypeError) as err:
            raise self._off(f"{type(err).__name__}: {err}") from None
        progress.page(*page)
        return page

    def _off(self, why: str) -> Unreadable:
        self.on = False
        logger.debug("bucket listing: boto3's paginator from here on (%s)", why)
        return Unreadable(why)


def read_page(body: bytes) -> tuple[list[dict], list[str], str | None]:
    """A ``ListBucketResult``'s objects, common prefixes and continuation token (None:
    the last page)."""
    from botocore.compat import unquote_str


    root = ElementTree.fromstring(body)
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != f"{ns}ListBucketResult":
        raise ValueError(f"not a listing: {root.tag}")
    decode = unquote_str if root.findtext(f"{ns}EncodingType") == "url" else str
    key, size, etag, modified = (f"{ns}Key", f"{ns}Size", f"{ns}ETag", f"{ns}LastModified")
    objects = []
    times: dict[str, datetime | str] = {}  # a page's objects often share their time
    for item in root.iterfind(f"{ns}Contents"):
        fields = {child.tag: child.text or "" for child in reversed(item)}  # first wins
        if key not in fields or size not in fields or modified not in fields:
            missing = next(tag for tag in (key, size, modified) if tag not in fields)
            raise ValueError(f"a listing entry without its {missing}")
        when = fields[modified]
        if (parsed := times.get(when)) is None:
            parsed = times[when] = _time(when)
        objects.append({"Key": decode(fields[key]), "Size": _number(fields[size]),
                        "ETag": fields.get(etag, ""), "LastModified": parsed})
    prefixes = [decode(_text(item, f"{ns}Prefix", ""))
                for item in root.iterfind(f"{ns}CommonPrefixes")]
    if root.findtext(f"{ns}IsTruncated") != "true":
        return objects, prefixes, None
    token = root.findtext(f"{ns}NextContinuationToken")
    if not token:
        raise ValueError("a truncated listing without a continuation token")
    return objects, prefixes, token


def _number(text: str) -> int | str:
    """A listed size, or its text when it is not a number (``s3check.entry_fault``)."""
    try:
        return int(text)
    except ValueError:
        return text


def _time(text: str) -> datetime | str:
    """A listed time, or its text when it is not a time (``s3check.entry_fault``)."""
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError, TypeError):
        return text


def _text(item: ElementTree.Element, tag: str, empty: str | None = None) -> str:
    """The text of ``item``'s ``tag``, ``empty`` when the element is empty; ValueError
    when it is missing (or empty, without ``empty``)."""
    found = item.find(tag)
    text = None if found is None else found.text if found.text is not None else empty
    if text is None:
        raise ValueError(f"a listing entry without its {tag}")
    return text


def parse_timestamp(value: str) -> datetime:
    """A listing's ``LastModified`` (ISO 8601, ``2026-12-03T13:17:34.000Z``) as botocore
    reads it, without dateutil, which is most of what botocore's own parser spends on a
    page.  Anything ``fromisoformat`` does not read exactly (headers' RFC 1123 dates, Python
    3.10's narrower ``fromisoformat``, a time without a zone) goes to botocore's."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        from botocore.utils import parse_timestamp as botocore_parse

        return botocore_parse(value)
    return parsed

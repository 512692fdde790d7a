"""A small S3 endpoint of the tests' own, whose answers the tests can change.

An ``http.server`` on 127.0.0.1 (nothing leaves the machine) serving ``ListObjectsV2``
(with ``Delimiter``, ``StartAfter`` and continuation tokens), ``GetObject`` (with
``If-Match``) and ``HeadBucket`` from an in-memory dict of one bucket's objects, path-
style, with no check of signatures.  Hooks change any answer:

- ``entry(fields)``: a listed object's fields (Key, Size, ETag, LastModified: text);
- ``page(params, objects, prefixes, token)``: a page before it is written, returning
  (objects, prefixes, token);
- ``listing(handler, params)``: writes the whole answer to a listing itself;
- ``get(handler, key)``: writes the whole answer to a ``GetObject`` itself (True), or
  leaves it to the fake (False);
- ``refuse_presigned``: answer the page reader's (presigned) listings with HTTP 503,
  so that every listing goes through boto3's paginator.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

WHEN = "2021-01-01T00:00:00.000Z"
WHEN_HTTP = "Fri, 01 Jan 2021 00:00:00 GMT"
NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class FakeS3:
    """One bucket (``name``) of ``objects`` (key -> bytes), listed ``page_size`` entries
    a page; ``url`` is its endpoint while it runs (``with FakeS3(...) as s3``)."""

    def __init__(self, name: str, objects: dict[str, bytes], page_size: int = 1000) -> None:
        self.name = name
        self.objects = dict(objects)
        self.page_size = page_size
        self.entry: Callable[[dict], dict] = lambda fields: fields
        self.page: Callable[[dict, list, list, str | None], tuple] = (
            lambda params, objects, prefixes, token: (objects, prefixes, token))
        self.listing: Callable[[Handler, dict], None] | None = None
        self.get: Callable[[Handler, str], bool] | None = None
        self.refuse_presigned = False
        self.url = ""

    def __enter__(self) -> FakeS3:
        fake = self

        class Bound(Handler):
            s3 = fake

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Bound)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def etag(body: bytes) -> str:
        return f'"{hashlib.md5(body).hexdigest()}"'

    def list_page(self, params: dict) -> tuple[list[dict], list[str], str | None]:
        """One page of a listing as S3 gives it: (object fields, common prefixes, token)."""
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        token = params.get("continuation-token")
        after = bytes.fromhex(token).decode() if token else params.get("start-after", "")
        objects: list[dict] = []
        prefixes: list[str] = []
        last = ""
        for key in sorted(self.objects):
            if not key.startswith(prefix) or key <= after:
                continue
            if delimiter and after.endswith(delimiter) and key.startswith(after):
                continue  # below a common prefix already given
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest[:rest.index(delimiter) + 1]
                if prefixes and prefixes[-1] == common:
                    continue
                if len(objects) + len(prefixes) == self.page_size:
                    return objects, prefixes, last.encode().hex()
                prefixes.append(common)
                last = common
                continue
            if len(objects) + len(prefixes) == self.page_size:
                return objects, prefixes, last.encode().hex()
            body = self.objects[key]
            objects.append({"Key": key, "Size": str(len(body)), "ETag": self.etag(body),
                            "LastModified": WHEN})
            last = key
        return objects, prefixes, None

    def render(self, params: dict, objects: list[dict], prefixes: list[str],
               token: str | None) -> bytes:
        """A ``ListBucketResult``."""
        parts = [f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">',
                 f"<Name>{self.name}</Name><Prefix>{escape(params.get('prefix', ''))}"
                 f"</Prefix><KeyCount>{len(objects) + len(prefixes)}</KeyCount>"
                 f"<MaxKeys>{self.page_size}</MaxKeys>"
                 f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>"]
        if token:
            parts.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
        for fields in objects:
            parts.append("<Contents>" + "".join(f"<{k}>{escape(str(v))}</{k}>"
                                                for k, v in fields.items())
                         + "<StorageClass>STANDARD</StorageClass></Contents>")
        for common in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{escape(common)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        return "".join(parts).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers for ``s3``, a ``FakeS3``."""

    s3: FakeS3
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def stream(self, chunks: Iterator[bytes], headers: dict | None = None) -> None:
        """A 200 whose body is ``chunks``, sent until they end or the client leaves."""
        self.send_response(200)
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        s3 = self.s3
        parts = urlparse(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        params = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if bucket != s3.name:
            return self.answer(404, b"<Error><Code>NoSuchBucket</Code></Error>")
        if not key:
            if self.command == "HEAD":
                return self.answer(200, b"")
            if s3.refuse_presigned and "X-Amz-Signature" in params:
                return self.answer(503, b"<Error><Code>SlowDown</Code></Error>")
            if s3.listing is not None:
                return s3.listing(self, params)
            objects, prefixes, token = s3.list_page(params)
            objects, prefixes, token = s3.page(params, [s3.entry(dict(o)) for o in objects],
                                               prefixes, token)
            return self.answer(200, s3.render(params, objects, prefixes, token),
                               {"Content-Type": "application/xml"})
        key = unquote(key)
        if s3.get is not None and s3.get(self, key):
            return None
        if key not in s3.objects:
            return self.answer(404, b"<Error><Code>NoSuchKey</Code></Error>")
        body = s3.objects[key]
        etag = s3.etag(body)
        if self.headers.get("If-Match") not in (None, etag):
            return self.answer(412, b"<Error><Code>PreconditionFailed</Code></Error>")
        self.answer(200, body, {"ETag": etag, "Last-Modified": WHEN_HTTP})

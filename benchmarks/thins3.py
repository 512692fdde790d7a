"""A thin S3 endpoint over a local tree, for benchmarks: a fixed delay per request.

    python benchmarks/thins3.py ROOT --bucket NAME --port 9000 [--delay-ms 20] [--cap 64]
        [--stats FILE]

Serves the files under ROOT as the keys of one bucket, read-only: ListObjects (V1 and
V2, with prefix, delimiter, pagination at 1,000 keys), GetObject, HeadObject and
HeadBucket, without authentication (clients sign nothing: ``--no-sign-request``).
Every request waits ``--delay-ms`` while holding one of ``--cap`` slots, as a store
that answers that many requests at once, each in that time (S3 answers in 15 to 30 ms).
The keys, sizes and times are read once at start and kept sorted, so a 1,000-key page
costs the server a few milliseconds of Python, well below the delay (moto, the S3
server the tests use, takes about 0.2 s a page: it would be the floor of every client).
ETags are an md5 of the key, size and mtime, not of the contents (stated where used).

``GET /_thins3/stats`` (no delay, not counted) answers the counters since the start or
the last ``GET /_thins3/stats?reset=1`` (which answers them, then zeroes them) as JSON:
``requests`` (every S3 request), ``list_pages`` (listing requests: one page each),
``gets`` and ``heads`` (objects; HeadBucket is a head), ``others`` (GetBucketLocation),
and ``max_in_flight``, the most requests received and not yet answered at once (those
waiting for a slot included): what a client keeps outstanding, seen from the store's
side.  ``--stats FILE`` writes them to FILE, as JSON, on SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import email.utils
import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import escape

PAGE = 1000


class Tree:
    """The keys of ROOT, sorted, with (size, mtime, etag)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        entries = []
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                st = os.stat(path)
                key = os.path.relpath(path, root).replace(os.sep, "/")
                etag = hashlib.md5(f"{key}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
                entries.append((key, st.st_size, st.st_mtime, etag))
        entries.sort()
        self.keys = [e[0] for e in entries]
        self.meta = {e[0]: e[1:] for e in entries}

    def page(self, prefix: str, delimiter: str, after: str, limit: int
             ) -> tuple[list[str], list[str], bool, str]:
        """(keys, common prefixes, truncated, last key or prefix returned)."""
        if after and delimiter and after.endswith(delimiter):  # past a whole prefix
            i = bisect.bisect_left(self.keys, after + "\U0010ffff")
        else:
            i = bisect.bisect_right(self.keys, after) if after else 0
        i = max(i, bisect.bisect_left(self.keys, prefix))
        keys: list[str] = []
        prefixes: list[str] = []
        last = ""
        while i < len(self.keys) and len(keys) + len(prefixes) < limit:
            key = self.keys[i]
            if not key.startswith(prefix):
                break
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                prefixes.append(common)
                last = common
                i = bisect.bisect_left(self.keys, common + "\U0010ffff")
            else:
                keys.append(key)
                last = key
                i += 1
        more = i < len(self.keys) and self.keys[i].startswith(prefix)
        return keys, prefixes, more, last


class Counters:
    """Requests seen, by kind, and the most in flight at once; thread-safe."""

    KINDS = ("requests", "list_pages", "gets", "heads", "others")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._zero()

    def _zero(self) -> None:
        self.counts = dict.fromkeys(self.KINDS, 0)
        self.max_in_flight = self._in_flight

    def enter(self) -> None:
        with self._lock:
            self.counts["requests"] += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def leave(self, kind: str) -> None:
        with self._lock:
            self._in_flight -= 1
            if kind:
                self.counts[kind] += 1

    def snapshot(self, reset: bool = False) -> dict:
        with self._lock:
            out = {**self.counts, "max_in_flight": self.max_in_flight}
            if reset:
                self._zero()
            return out


def handler(tree: Tree, bucket: str, delay: float, slots: threading.Semaphore,
            counters: Counters):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _wait(self) -> None:
            with slots:
                time.sleep(delay)

        def do_HEAD(self) -> None:
            counters.enter()
            try:
                self._head()
            finally:
                counters.leave("heads")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/_thins3/stats":
                reset = parse_qs(url.query).get("reset") == ["1"]
                body = json.dumps(counters.snapshot(reset)).encode()
                return self._send(200, body, headers={"Content-Type": "application/json"})
            counters.enter()
            kind = ("gets" if self._key() is not None else
                    "others" if "location" in parse_qs(url.query, keep_blank_values=True)
                    else "list_pages")
            try:
                self._get()
            finally:
                counters.leave(kind)

        def _head(self) -> None:
            self._wait()
            key = self._key()
            if key is None:
                return self._send(200, b"", head=True)
            if key not in tree.meta:
                return self._send(404, b"", head=True)
            self._object(key, head=True)

        def _get(self) -> None:
            self._wait()
            key = self._key()
            if key is None:
                return self._list()
            if key not in tree.meta:
                return self._send(404, _error("NoSuchKey"))
            self._object(key)

        def _key(self) -> str | None:
            path = unquote(urlparse(self.path).path).lstrip("/")
            name, _, key = path.partition("/")
            return key or None

        def _object(self, key: str, head: bool = False) -> None:
            size, mtime, etag = tree.meta[key]
            if self.headers.get("If-Match", etag).strip('"') != etag:
                return self._send(412, _error("PreconditionFailed"))
            body = b"" if head else (tree.root / key).read_bytes()
            self._send(200, body, head=head, length=size, headers={
                "ETag": f'"{etag}"', "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
                "Content-Type": "application/octet-stream"})

        def _list(self) -> None:
            query = parse_qs(urlparse(self.path).query, keep_blank_values=True)
            if "location" in query:
                return self._send(200, b'<?xml version="1.0" encoding="UTF-8"?>'
                                       b"<LocationConstraint/>")
            one = {k: v[0] for k, v in query.items()}
            v2 = one.get("list-type") == "2"
            prefix, delimiter = one.get("prefix", ""), one.get("delimiter", "")
            after = one.get("continuation-token") or one.get("start-after") or one.get(
                "marker", "")
            limit = min(int(one.get("max-keys", PAGE)), PAGE)
            keys, prefixes, more, last = tree.page(prefix, delimiter, after, limit)
            url = one.get("encoding-type") == "url"
            enc = (lambda s: quote(s, safe="/")) if url else escape
            parts = [f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                     f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{bucket}</Name>'
                     f"<Prefix>{enc(prefix)}</Prefix><MaxKeys>{limit}</MaxKeys>"
                     f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"]
            if delimiter:
                parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
            if url:
                parts.append("<EncodingType>url</EncodingType>")
            if v2:
                parts.append(f"<KeyCount>{len(keys) + len(prefixes)}</KeyCount>")
                if more:
                    parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
            elif more:
                parts.append(f"<NextMarker>{enc(last)}</NextMarker>")
            for key in keys:
                size, mtime, etag = tree.meta[key]
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(mtime))
                parts.append(f"<Contents><Key>{enc(key)}</Key><LastModified>{stamp}"
                             f"</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{size}"
                             f"</Size><StorageClass>STANDARD</StorageClass></Contents>")
            for common in prefixes:
                parts.append(f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>")
            parts.append("</ListBucketResult>")
            self._send(200, "".join(parts).encode(), headers={"Content-Type": "application/xml"})

        def _send(self, code: int, body: bytes, head: bool = False, length: int | None = None,
                  headers: dict | None = None) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


def _error(code: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{code}</Message></Error>").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--cap", type=int, default=64, help="requests served at once")
    parser.add_argument("--stats", type=Path, help="write the counters here on SIGTERM")
    args = parser.parse_args()
    tree = Tree(args.root)
    counters = Counters()
    server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                 handler(tree, args.bucket, args.delay_ms / 1000,
                                         threading.Semaphore(args.cap), counters))
    server.daemon_threads = True

    def stop(signum, frame) -> None:
        if args.stats:
            args.stats.write_text(json.dumps(counters.snapshot()) + "\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"serving {len(tree.keys)} keys", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

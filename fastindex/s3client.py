"""The S3 client of a bucket's tree: boto3's, one per process, its session, the
timestamps of listings, and client errors as what the commands expect.

boto3 is an optional extra: ``pip install 'fastindex[s3]'``; nothing here imports it
until a client is asked for.
"""

from __future__ import annotations

import errno
import functools
import os
import threading
from typing import TYPE_CHECKING

from fastindex import s3check, s3list
from fastindex.errors import FastindexError, InputError

if TYPE_CHECKING:
    from fastindex.bucket import BucketRoot

#: How a bucket's URL begins (``s3://bucket/prefix``).
SCHEME = "s3://"
#: Listings and reads in flight per process, at most: S3's time to answer does not
#: grow with the requests in flight, so many in flight keep a process busy parsing.
REQUESTS_IN_FLIGHT = 32
#: Seconds to connect or to wait for the next bytes of an answer (botocore's
#: defaults); a whole answer has its deadline too (``s3check.Limits``).
TIMEOUT_S = 60


def client(root: BucketRoot):
    """A boto3 S3 client for ``root``, one per process: clients are thread-safe, but not
    fork-safe (a forked worker would share its parent's connections)."""
    with _CLIENTS:  # a boto3 session is not thread-safe; listing threads ask for clients
        return _client(root, os.getpid())


_CLIENTS = threading.Lock()


@functools.lru_cache(maxsize=8)
def _client(root: BucketRoot, pid: int):
    check_endpoint(root.endpoint_url)
    session = _session()  # first: it says when boto3 is missing
    import botocore
    from botocore.config import Config

    config = Config(max_pool_connections=REQUESTS_IN_FLIGHT,
                    connect_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S,
                    retries={"max_attempts": 5, "mode": "standard"},
                    **({"signature_version": botocore.UNSIGNED} if root.anonymous else {}))
    s3 = session.client("s3", endpoint_url=root.endpoint_url, config=config)
    s3check.guard(s3, s3check.http_session(s3, _verify()), root.limits)
    return s3


def check_endpoint(url: str | None) -> None:
    """An endpoint is an ``http://`` or ``https://`` URL, or the refusal says which form
    to give (boto3's own words, "Invalid endpoint", do not)."""
    if url is None or url.lower().startswith(("http://", "https://")):
        return
    if "://" in url:
        raise InputError(f"the endpoint URL {url} is not http:// or https://: give the "
                         f"store's address, such as https://s3.example.org")
    raise InputError(f"the endpoint URL {url} has no scheme: give http://{url} or "
                     f"https://{url}")


def _verify():
    """What TLS is verified with: the configured CA bundle, else the system's."""
    return _core().get_config_variable("ca_bundle") or True


@functools.lru_cache(maxsize=1)
def _session():
    """The process's boto3 session.  Forked workers inherit it with its service model
    loaded, so a worker makes its client without loading the model again."""
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
        timestamp_parser=s3list.parse_timestamp)
    return core


def page_reader(root: BucketRoot):
    """The reader of ``root``'s listings (``s3list``), one per client."""
    return _page_reader(client(root), root.limits)


@functools.lru_cache(maxsize=8)
def _page_reader(s3, limits: s3check.Limits):
    return s3list.PageReader(s3, s3check.http_session(s3, _verify()), limits)


def forget_clients() -> None:
    """Drop this process's clients, session and page readers: they keep the credentials
    and configuration they found when made (a long-lived process whose environment
    changed, or a test that sets one, starts afresh)."""
    with _CLIENTS:
        for cached in (_page_reader, _client, _session, _core):
            cached.cache_clear()


def bucket_error(err: Exception, root: BucketRoot) -> Exception:
    """A client error as what the walk and the commands expect: ``FileNotFoundError``
    for a missing key, ``InputError`` for what the user must fix (bucket, endpoint,
    credentials), else ``OSError`` (reported ``unreadable``, the rest goes on).  An error
    of fastindex's own (boto3 missing: no client was made) is returned as it is."""
    if isinstance(err, FastindexError):
        return err
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

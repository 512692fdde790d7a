"""A bucket's endpoint that answers as an attacker would (``fakes3``): nothing hangs,
nothing grows without bound, and each answer ends in a one-line refusal or in a problem
of its key with the rest indexed.

Each build runs in a child process with a time limit (the subprocess's timeout), which
reports its outcome and its peak memory; a hang or a crash fails the test, never the
session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BEHAVIOUR, npy
from fakes3 import NS, FakeS3, Handler

pytest.importorskip("boto3")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
URL = "s3://b/data"
VICTIM = BEHAVIOUR[0]
#: Seconds a child may take: far more than a build of this tree needs, far less than
#: any of the answers below would keep an unguarded build.
LIMIT_S = 90

CHILD = r"""
import json, sys
spec = json.loads(sys.argv[1])
out = {"code": 0, "error": None}
import fastindex
from fastindex.bucket import BucketRoot
from fastindex.errors import FastindexError
from fastindex.s3check import Limits
root = BucketRoot("b", "data", spec["endpoint"], limits=Limits(**spec["limits"]))
try:
    result = fastindex.build(root, spec["out"], hash=spec["hash"], workers=1)
    out["skipped"] = result.skipped.rows()
    out["n_datasets"] = result.n_datasets
except FastindexError as err:
    out["code"], out["error"] = err.exit_code, str(err)
# this process's own high-water mark (ru_maxrss would count the forking parent's too)
with open("/proc/self/status") as status:
    out["peak_kb"] = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
print(json.dumps(out))
"""


def _fake(page_size: int = 3) -> FakeS3:
    return FakeS3("b", {f"data/{key}": npy(3) for key in BEHAVIOUR}, page_size)


def _build(tmp_path: Path, fake: FakeS3, hash: str = "none", **limits) -> dict:
    spec = {"endpoint": fake.url, "out": str(tmp_path / "out"), "hash": hash,
            "limits": limits}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)],
                          capture_output=True, text=True, timeout=LIMIT_S,
                          env={**os.environ, **CREDENTIALS})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _refused(outcome: dict, *words: str) -> None:
    """A one-line refusal (exit 3) naming the bucket and the rule."""
    assert outcome["code"] == 3, outcome
    error = outcome["error"]
    assert "\n" not in error and "s3://b/data" in error, error
    for word in words:
        assert word in error, error


def _one_problem(outcome: dict, path: str, reason: str) -> str:
    """The rest indexed, ``path`` the one problem: its detail."""
    assert outcome["code"] == 0, outcome
    assert [(row[0], row[1]) for row in outcome["skipped"]] == [(path, reason)]
    assert outcome["n_datasets"] == len(BEHAVIOUR) - 1
    return outcome["skipped"][0][2]


def _unchanged_request(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "continuation-token"}


def _token_forever(fake: FakeS3) -> None:
    """Every page of every listing is its first page, with the same token."""
    def listing(handler: Handler, params: dict) -> None:
        objects, prefixes, _ = fake.list_page(_unchanged_request(params))
        handler.answer(200, fake.render(params, objects, prefixes, "T"))
    fake.listing = listing


def _out_of_order(fake: FakeS3) -> None:
    fake.page = lambda params, objects, prefixes, token: (objects[::-1], prefixes, token)


def _outside_prefix(fake: FakeS3) -> None:
    def page(params, objects, prefixes, token):
        extra = {**objects[0], "Key": "elsewhere/x.y.npy"} if objects else None
        return [*objects, *([extra] if extra else [])], prefixes, token
    fake.page = page


def _boundary_repeated(fake: FakeS3) -> None:
    """Each page after the first begins with the last entry of the page before it."""
    def page(params, objects, prefixes, token):
        if "continuation-token" in params:
            last = bytes.fromhex(params["continuation-token"]).decode()
            if last in fake.objects:
                objects = [{**(objects or [{"Size": "1", "ETag": '"e"',
                                            "LastModified": "2021-01-01T00:00:00Z"}])[0],
                            "Key": last}, *objects]
            else:
                prefixes = [last, *prefixes]
        return objects, prefixes, token
    fake.page = page


def _prefix_twice(fake: FakeS3) -> None:
    fake.page = lambda params, objects, prefixes, token: (objects, prefixes + prefixes[-1:],
                                                          token)


LISTINGS = {"token_forever": (_token_forever, "twice"),
            "out_of_order": (_out_of_order, "is not after"),
            "outside_prefix": (_outside_prefix, "outside the prefix"),
            "boundary_repeated": (_boundary_repeated, "is not after"),
            "prefix_twice": (_prefix_twice, "is not after")}


@pytest.mark.parametrize("via", ["reader", "boto3"])
@pytest.mark.parametrize("case", list(LISTINGS))
def test_a_listing_that_makes_no_progress_is_refused_in_one_line(tmp_path, case, via) -> None:
    """Pages read by fastindex's page reader, or (every presigned request answered 503)
    by boto3's paginator: either way the listing is checked, and refused."""
    hook, rule = LISTINGS[case]
    with _fake() as fake:
        hook(fake)
        fake.refuse_presigned = via == "boto3"
        _refused(_build(tmp_path, fake), rule)


def test_a_refused_listing_is_one_line_from_the_command(tmp_path) -> None:
    with _fake() as fake:
        _token_forever(fake)
        done = subprocess.run([sys.executable, "-m", "fastindex", "build", URL, "--out",
                               str(tmp_path / "out"), "--endpoint-url", fake.url, "--quiet"],
                              capture_output=True, text=True, timeout=LIMIT_S,
                              env={**os.environ, **CREDENTIALS})
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "s3://b/data" in lines[0] and "twice" in lines[0], lines
    assert not (tmp_path / "out" / "datasets.pqt").exists()


def _endless_pages(fake: FakeS3) -> None:
    """Every page is new: a new token, keys after the last page's, without end."""
    def listing(handler: Handler, params: dict) -> None:
        n = int(params.get("continuation-token", "0"))
        prefix = params.get("prefix", "")
        objects = [{"Key": f"{prefix}~{n:09d}.{i}", "Size": "1", "ETag": '"e"',
                    "LastModified": "2021-01-01T00:00:00Z"} for i in range(3)]
        handler.answer(200, fake.render(params, objects, [], str(n + 1)))
    fake.listing = listing


def test_a_listing_longer_than_its_page_limit_is_refused(tmp_path) -> None:
    with _fake() as fake:
        _endless_pages(fake)
        _refused(_build(tmp_path, fake, pages=5), "more than 5 pages")


def _huge_page(size: int | None):
    """A listing answered with one page of ``size`` bytes (None: without end), except
    the first request's (``MaxKeys=1``: the check that the prefix holds keys)."""
    def listing(handler: Handler, params: dict) -> None:
        if params.get("max-keys") == "1":
            objects, prefixes, token = handler.s3.list_page(params)
            return handler.answer(200, handler.s3.render(params, objects, prefixes, token))
        entry = (b"<Contents><Key>data/a</Key><Size>1</Size><ETag>e</ETag><LastModified>"
                 b"2021-01-01T00:00:00Z</LastModified></Contents>") * 512
        head = f'<ListBucketResult xmlns="{NS}"><IsTruncated>false</IsTruncated>'.encode()

        def chunks():
            yield head
            sent = len(head)
            while size is None or sent < size:
                yield entry
                sent += len(entry)
            yield b"</ListBucketResult>"
        handler.stream(chunks())
    return listing


@pytest.mark.parametrize("size", [256 << 20, None], ids=["256MiB", "endless"])
def test_a_huge_or_endless_page_is_refused_not_read(tmp_path, size) -> None:
    """Read up to the page cap (16 MiB) and refused: memory stays far below the page."""
    with _fake() as fake:
        fake.listing = _huge_page(size)
        outcome = _build(tmp_path, fake)
    _refused(outcome, "more than 16777216 bytes")
    assert outcome["peak_kb"] < 200 << 10  # the page alone would be 256 MiB


def _set(field: str, value: str):
    def entry(fields: dict) -> dict:
        return {**fields, field: value} if fields["Key"] == f"data/{VICTIM}" else fields
    return entry


ENTRIES = {"etag_newline": ("ETag", '"abc\ndef"'),
           "etag_long": ("ETag", "e" * 201),
           "year_1": ("LastModified", "0001-01-01T00:00:00Z"),
           "year_9999": ("LastModified", "9999-12-31T23:59:59Z"),
           "before_1970": ("LastModified", "1969-12-31T23:59:59Z"),
           "not_a_time": ("LastModified", "yesterday"),
           "size_negative": ("Size", "-1"),
           "size_2_70": ("Size", str(2 ** 70)),
           "size_not_a_number": ("Size", "zzz")}


@pytest.mark.parametrize("case", list(ENTRIES))
def test_an_object_listed_with_values_no_table_may_hold_is_its_problem(tmp_path,
                                                                       case) -> None:
    field, value = ENTRIES[case]
    with _fake() as fake:
        fake.entry = _set(field, value)
        detail = _one_problem(_build(tmp_path, fake), VICTIM, "bad_listing")
    assert field in detail


def test_entries_listed_by_boto3_are_held_to_the_same_rules(tmp_path) -> None:
    with _fake() as fake:
        fake.entry = _set("Size", "-1")
        fake.refuse_presigned = True
        assert "Size" in _one_problem(_build(tmp_path, fake), VICTIM, "bad_listing")


def _answer_for(key: str, answer):
    """``GetObject``: ``answer(handler, body)`` for ``key``, the stored object else."""
    def get(handler: Handler, asked: str) -> bool:
        if asked != key:
            return False
        answer(handler, handler.s3.objects[asked])
        return True
    return get


def _endless_body(handler: Handler, body: bytes) -> None:
    def chunks():
        while True:
            yield body
    handler.stream(chunks(), {"ETag": FakeS3.etag(body)})


def _content_length_zzz(handler: Handler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "zzz")
    handler.send_header("ETag", FakeS3.etag(body))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    handler.wfile.write(body)


def _trickle(handler: Handler, body: bytes) -> None:
    def chunks():
        for byte in body:
            time.sleep(0.5)  # the endpoint's pace: a byte every half second
            yield bytes([byte])
    handler.stream(chunks(), {"ETag": FakeS3.etag(body), "Content-Length": str(len(body))})


OBJECTS = {"longer_than_listed": (_endless_body, "changed_while_reading", {}),
           "content_length_zzz": (_content_length_zzz, "unreadable", {}),
           "trickle": (_trickle, "unreadable", {"deadline_s": 2.0})}


@pytest.mark.parametrize("case", list(OBJECTS))
def test_an_object_whose_read_goes_wrong_is_its_problem(tmp_path, case) -> None:
    """A body without end is read to its listed size + 1; an answer botocore cannot
    read, or one slower than its deadline, is the object's problem; the rest hashed."""
    answer, reason, limits = OBJECTS[case]
    with _fake() as fake:
        fake.get = _answer_for(f"data/{VICTIM}", answer)
        _one_problem(_build(tmp_path, fake, "md5", **limits), VICTIM, reason)


def test_a_key_thousands_of_folders_deep_is_reported_quickly(tmp_path) -> None:
    """A key 8,000 folders deep in a session (no S3 key is deeper than 512) is one
    problem, found in bounded time, not thousands of folders looked up level by level."""
    session = VICTIM.split("/alf/")[0]
    deep = f"{session}/alf/{'a/' * 8000}x.y.npy"
    with _fake(page_size=1000) as fake:
        fake.objects[f"data/{deep}"] = npy(3)
        outcome = _build(tmp_path, fake)
    assert outcome["code"] == 0, outcome
    assert [(row[0], row[1]) for row in outcome["skipped"]] == [(deep, "not_alf_name")]
    assert outcome["n_datasets"] == len(BEHAVIOUR)


def _skip_subject(fake: FakeS3) -> None:
    """A range's pages (listed from a subject on, with no delimiter) leave out KS002's
    keys, in order otherwise: an endpoint that hides a subject its parent's listing
    showed."""
    def page(params, objects, prefixes, token):
        if "start-after" in params and not params.get("delimiter"):
            objects = [o for o in objects if "/KS002/" not in o["Key"]]
        return objects, prefixes, token
    fake.page = page


def _delete_subject(fake: FakeS3) -> None:
    """KS002's keys are deleted just after the parent lists the subjects."""
    def page(params, objects, prefixes, token):
        if params.get("delimiter") and params.get("prefix") == "data/cortexlab/Subjects/":
            for key in [k for k in fake.objects if "/KS002/" in k]:
                del fake.objects[key]
        return objects, prefixes, token
    fake.page = page


@pytest.mark.parametrize("hook", [_skip_subject, _delete_subject])
def test_a_subject_its_range_finds_no_key_of_is_refused_not_lost(tmp_path, hook) -> None:
    """A subject handed to a worker whose range lists no key of it (hidden by the
    endpoint, or deleted since its parent was listed) fails the build in one line, as a
    local folder gone during the walk does: never tables without its sessions."""
    with _fake(1000) as fake:
        hook(fake)
        outcome = _build(tmp_path, fake)
    assert outcome["code"] == 3, outcome
    assert "\n" not in outcome["error"], outcome
    assert "s3://b/data/cortexlab/Subjects/KS002" in outcome["error"], outcome
    assert "nothing was written" in outcome["error"], outcome

"""Buckets as trees: ``fastindex build s3://bucket/prefix`` against a real S3 API.

The server is moto's, in server mode, started here on 127.0.0.1 (nothing leaves the
machine); the client is the one fastindex uses.  A bucket and a local copy of the same
tree must give the same tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import BEHAVIOUR, npy, write_tree
from hypothesis import given
from hypothesis import strategies as st

import fastindex
from fastindex import bucket, s3client, s3list
from fastindex import problems as p
from fastindex.cli import main
from fastindex.update import update

boto3 = pytest.importorskip("boto3")
SES = "lab/Subjects/sub/2021-01-01/001"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _moto(**env: str):
    """moto's S3 server in a process of its own, on 127.0.0.1: its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # its start (imports) is slow on a busy machine
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            assert proc.poll() is None, "moto's server did not start"
            assert time.monotonic() < deadline, "moto's server is not listening"
            time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def endpoint():
    with _moto() as url:
        yield url


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3client.forget_clients()  # they hold the credentials they found


def _put(endpoint: str, name: str, objects: dict[str, bytes]) -> None:
    """Upload ``objects`` (key -> body) to the bucket ``name``, several at a time."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(s3.put_object, Bucket=name, Key=key, Body=body)
                     for key, body in objects.items()]:
            done.result()


def _upload(endpoint: str, name: str, tree: Path, prefix: str = "data") -> str:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    top = f"{prefix}/" if prefix else ""
    _put(endpoint, name, {f"{top}{path.relative_to(tree).as_posix()}": path.read_bytes()
                          for path in sorted(tree.rglob("*"))
                          if path.is_file() and not path.is_symlink()})
    return f"s3://{name}/{prefix}" if prefix else f"s3://{name}"


def _rows(folder: Path) -> dict:
    """Both tables' rows and schemas, less what says where and when they were built."""
    out = {}
    for name in ("sessions.pqt", "datasets.pqt"):
        table = pq.read_table(folder / name)
        out[name] = (table.drop_columns([c for c in ("mtime_ns", "etag")
                                         if c in table.column_names])
                     .replace_schema_metadata(None).to_pylist())
    return out


def _one_paths(folder: Path):
    """The datasets of a folder's tables with the path ONE loads each from."""
    import polars as pl

    from fastindex.alf import one_paths

    return one_paths(pl.read_parquet(folder / "sessions.pqt"),
                     pl.read_parquet(folder / "datasets.pqt"), False)


def _report(folder: Path) -> list:
    import json

    return [(r["path"], r["reason"]) for r in
            json.loads((folder / "r.json").read_text())["problems"]]


MESSY = [*BEHAVIOUR, f"{SES}/alf/trials.table.npy", f"{SES}/alf/#2021-02-01#/trials.table.npy",
         "lab/Subjects/sub/2021-01-01/1/alf/unloadable.thing.npy",
         "lab/Subjects/sub/2021-01-01/002/notes.txt", "lab/Subjects/README.md",
         "other/2020-13-01/001/alf/bad.date.npy"]


@pytest.mark.parametrize("hash_mode", ["none", "xxh3+md5"])
def test_a_bucket_and_its_local_copy_give_the_same_tables(tmp_path, endpoint,
                                                           hash_mode) -> None:
    tree = write_tree(tmp_path / "t", MESSY)
    (tree / ".fastindexignore").write_text("README*\n")
    url = _upload(endpoint, f"same-{hash_mode.replace('+', '-')}", tree)
    local, remote = tmp_path / "local", tmp_path / "remote"
    for out, root, extra in ((local, tree, []), (remote, url, ["--endpoint-url", endpoint])):
        out.mkdir()
        assert main(["build", str(root), "--out", str(out), "--hash", hash_mode, "--quiet",
                     "--report", str(out / "r.json"), "--workers", "2", *extra]) == 0
    assert _rows(remote) == _rows(local)
    assert _report(remote) == _report(local)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    listed = {o["Key"].removeprefix("data/"): o["ETag"] for o in
              s3.list_objects_v2(Bucket=f"same-{hash_mode.replace('+', '-')}")["Contents"]}
    rows = _one_paths(remote)
    assert rows["etag"].to_list() == [listed[path] for path in rows["path"]]
    assert "etag" not in pq.read_table(local / "datasets.pqt").column_names
    assert ("lab/Subjects/sub/2021-01-01/1/alf/unloadable.thing.npy",
            p.UNLOADABLE_SESSION) in _report(remote)
    assert pq.read_table(remote / "datasets.pqt").num_rows == len(BEHAVIOUR) + 2


def test_one_loads_the_rows_from_a_mirror_of_the_bucket(tmp_path, endpoint) -> None:
    """The tables of a bucket, beside a synced copy of it: ONE loads every row."""
    from one.api import One

    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    url = _upload(endpoint, "mirror", tree, prefix="")
    mirror = tmp_path / "mirror"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for obj in s3.list_objects_v2(Bucket="mirror")["Contents"]:
        (mirror / obj["Key"]).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file("mirror", obj["Key"], str(mirror / obj["Key"]))
    fastindex.build(url, mirror, hash="md5", workers=1, endpoint_url=endpoint)
    one = One(cache_dir=mirror, mode="local")
    paths = [one.load_dataset(eid, rel, download_only=True) for eid in one.search()
             for rel in one.list_datasets(eid)]
    assert len(paths) == len(BEHAVIOUR) and all(Path(x).is_file() for x in paths)


#: Keys of the bucket ``pages``: two pages and a half of a listing, under one prefix.
PAGES = [f"{SES}/alf/obj{i:04d}.times.npy" for i in range(2500)]


@pytest.fixture(scope="module")
def pages_bucket(endpoint) -> str:
    """The bucket ``pages`` (``PAGES`` under ``data/``), read by the tests, never changed."""
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="pages")
    _put(endpoint, "pages", {f"data/{name}": b"x" for name in PAGES})
    return "s3://pages/data"


def test_more_than_a_page_of_keys_under_one_prefix(tmp_path, endpoint, pages_bucket) -> None:
    result = fastindex.build(pages_bucket, tmp_path / "out", workers=1, endpoint_url=endpoint)
    assert result.n_datasets == len(PAGES) > 1000


@dataclasses.dataclass(frozen=True)
class _DeletingBucket(bucket.BucketRoot):
    """A bucket tree whose ``victim`` key is deleted right before it is read: after the
    listing, before the hashing, as another writer would."""

    victim: str = ""

    def digest(self, path, algorithms, buffer, listed=None):
        if self.key(path) == self.victim:
            boto3.client("s3", endpoint_url=self.endpoint_url).delete_object(
                Bucket=self.bucket, Key=self.victim)
        return super().digest(path, algorithms, buffer, listed)


def test_a_key_deleted_between_listing_and_hashing_is_vanished(tmp_path, endpoint) -> None:
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    _upload(endpoint, "vanish", tree)
    root = _DeletingBucket("vanish", "data", endpoint, victim=f"data/{BEHAVIOUR[0]}")
    result = fastindex.build(root, tmp_path / "out", hash="md5", workers=1)
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons == {BEHAVIOUR[0]: p.VANISHED}
    assert result.n_datasets == len(BEHAVIOUR) - 1


def _one_line(args: list[str], code: int = 2) -> str:
    done = subprocess.run([sys.executable, "-m", "fastindex", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **CREDENTIALS})
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_wrong_bucket_prefix_or_endpoint_is_one_line(tmp_path, endpoint) -> None:
    tree = write_tree(tmp_path / "t", [f"{SES}/alf/trials.table.npy"])
    _upload(endpoint, "right", tree)
    out = str(tmp_path / "out")
    assert "no such bucket: wrong" in _one_line(
        ["build", "s3://wrong/data", "--out", out, "--endpoint-url", endpoint])
    assert "no keys under s3://right/nothing" in _one_line(
        ["build", "s3://right/nothing", "--out", out, "--endpoint-url", endpoint])
    assert "cannot reach the S3 endpoint" in _one_line(
        ["build", "s3://right/data", "--out", out, "--endpoint-url",
         f"http://127.0.0.1:{_free_port()}"])
    assert "a local folder: --out DIR" in _one_line(
        ["build", "s3://right/data", "--endpoint-url", endpoint])
    assert "not a bucket" in _one_line(["release", "s3://right/data", out + ".zip"])


def test_wrong_credentials_are_one_line(tmp_path) -> None:
    with _moto(INITIAL_NO_AUTH_ACTION_COUNT="0") as strict:
        line = _one_line(["build", "s3://any/data", "--out", str(tmp_path / "out"),
                          "--endpoint-url", strict])
    assert "denied" in line and "credentials" in line


@pytest.mark.skipif(shutil.which("s3fs") is None, reason="needs Debian's s3fs (FUSE)")
def test_one_loads_the_rows_through_an_s3fs_mount(tmp_path, endpoint, strict_warnings) -> None:
    """The other way to ONE: the bucket mounted read-only as the cache folder, the
    tables in a folder of their own (``tables_dir``)."""
    from one.api import One

    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    url = _upload(endpoint, "mounted", tree, prefix="")
    tables = tmp_path / "tables"
    fastindex.build(url, tables, hash="md5", workers=1, endpoint_url=endpoint)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    passwd = tmp_path / "passwd"  # s3fs's credentials file, as it wants it: mode 600
    passwd.write_text(f"{CREDENTIALS['AWS_ACCESS_KEY_ID']}:{CREDENTIALS['AWS_SECRET_ACCESS_KEY']}")
    passwd.chmod(0o600)
    mounted = subprocess.run(["s3fs", "mounted", str(mnt), "-o", f"url={endpoint}", "-o",
                              "use_path_request_style", "-o", f"passwd_file={passwd}", "-o",
                              "ro"], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"s3fs cannot mount here: {mounted.stderr.strip()}")
    try:
        deadline = time.monotonic() + 60
        while not (mnt / "lab").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        one = One(cache_dir=mnt, tables_dir=tables, mode="local")
        paths = [one.load_dataset(eid, rel, download_only=True) for eid in one.search()
                 for rel in one.list_datasets(eid)]
        assert len(paths) == len(BEHAVIOUR)
        for path in paths:  # ONE's path, through the mount, holds the file's bytes
            assert path.read_bytes() == (tree / path.relative_to(mnt)).read_bytes()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)


def test_verify_and_update_take_a_bucket(tmp_path, endpoint) -> None:
    """verify compares the tables with the bucket; update rehashes only the keys whose
    size or ETag changed (a bucket's keys are never racy: any write changes the ETag)."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    url = _upload(endpoint, "changing", tree)
    out = tmp_path / "out"
    common = ["--endpoint-url", endpoint, "--workers", "1", "--quiet"]
    assert main(["build", url, "--out", str(out), "--hash", "md5", *common]) == 0
    assert main(["verify", url, "--tables", str(out), "--hash", *common]) == 0
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.put_object(Bucket="changing", Key=f"data/{BEHAVIOUR[0]}", Body=b"rewritten")
    report = tmp_path / "v.json"
    assert main(["verify", url, "--tables", str(out), "--hash", "--report", str(report),
                 *common]) == 1
    import json

    kinds = {(r["kind"], r["path"]) for r in json.loads(report.read_text())["differences"]}
    assert kinds == {("size_mismatch", BEHAVIOUR[0])}
    result = update(url, out, workers=1, endpoint_url=endpoint)
    assert (result.incremental, result.rehashed) == (True, 1)
    assert main(["verify", url, "--tables", str(out), "--hash", *common]) == 0


def test_etags_find_rewrites_of_the_same_size_and_keep_digests_of_the_same_bytes(
        tmp_path, endpoint) -> None:
    """The tables keep each object's ETag: verify without --hash finds a rewrite that
    kept the size; update hashes it again, and not an object uploaded again unchanged
    (a new last-modified time, the same ETag)."""
    tree = write_tree(tmp_path / "t", {f: npy(3) for f in BEHAVIOUR})
    url = _upload(endpoint, "etags", tree)
    out = tmp_path / "out"
    common = ["--endpoint-url", endpoint, "--workers", "1", "--quiet"]
    assert main(["build", url, "--out", str(out), "--hash", "md5", *common]) == 0
    s3 = boto3.client("s3", endpoint_url=endpoint)
    same, changed = (f"data/{f}" for f in BEHAVIOUR[:2])
    s3.put_object(Bucket="etags", Key=same, Body=(tree / BEHAVIOUR[0]).read_bytes())
    s3.put_object(Bucket="etags", Key=changed,
                  Body=bytes(reversed((tree / BEHAVIOUR[1]).read_bytes())))
    report = tmp_path / "v.json"
    assert main(["verify", url, "--tables", str(out), "--report", str(report), *common]) == 1
    import json

    found = json.loads(report.read_text())["differences"]
    assert [(r["kind"], r["path"]) for r in found] == [("content_mismatch", BEHAVIOUR[1])]
    assert found[0]["expected"].startswith("etag:")
    result = update(url, out, workers=1, endpoint_url=endpoint)
    assert (result.incremental, result.rehashed) == (True, 1)
    assert main(["verify", url, "--tables", str(out), "--hash", *common]) == 0


def test_keys_no_folder_can_hold_are_reported_and_the_rest_indexed(tmp_path, endpoint) -> None:
    """Keys with '.', '..' or empty parts: a bucket holds them, no file system can. Each
    is reported with its reason; none stops the listing (object_store-based clients
    refuse the whole listing over one such key)."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR[:2])
    url = _upload(endpoint, "odd-keys", tree)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    session = BEHAVIOUR[0].rsplit("/alf/", 1)[0]
    odd = [f"{session}/alf/./x.y.npy", f"{session}/alf//x.y.npy",
           f"{session}/alf/../x.y.npy"]
    for key in odd:
        s3.put_object(Bucket="odd-keys", Key=f"data/{key}", Body=b"1")
    result = fastindex.build(url, tmp_path / "out", workers=1, endpoint_url=endpoint)
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert sorted(reasons) == sorted(odd)
    assert set(reasons.values()) == {p.BAD_COLLECTION}
    assert result.n_datasets == 2


@given(when=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                         timezones=st.sampled_from([timezone.utc,
                                                    timezone(timedelta(hours=-5))])),
       form=st.sampled_from(["listing", "offset", "header", "naive"]))
def test_timestamps_are_read_as_botocore_reads_them(when, form) -> None:
    """The fast ``LastModified`` parser gives botocore's datetime for every form a
    response can hold: a listing's ``...000Z``, an offset, a header's RFC 1123 date, and a
    time without a zone (left to botocore)."""
    from botocore.utils import parse_timestamp as botocore_parse

    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    text = {"listing": when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
            "offset": when.isoformat(),
            "header": email.utils.format_datetime(when.astimezone(timezone.utc), usegmt=True),
            "naive": when.replace(tzinfo=None).isoformat()}[form]
    ours, theirs = s3list.parse_timestamp(text), botocore_parse(text)
    assert ours == theirs
    assert ours.timestamp() == theirs.timestamp()


ODD_NAMES = ["sp ace", "plus+sign", "pct%20", "pct%", "amp&lt<gt>", "quote\"'", "uni\u00e9",
             "nfd\u0065\u0301", "ctl\x01", "del\x7f", "emoji\U0001f600", "tab\t", "back\\"]


def _boto3_pages(endpoint: str, name: str, prefix: str, after: str = "") -> list[dict]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix,
                                                         StartAfter=after)
    return [{k: o[k] for k in ("Key", "Size", "ETag", "LastModified")}
            for page in pages for o in page.get("Contents", ())]


def test_range_listings_read_the_keys_sizes_etags_and_times_boto3_reads(tmp_path,
                                                                       endpoint) -> None:
    """The page reader (``s3list``) against boto3's paginator on the same bucket: keys a
    file system could not hold and characters XML and URLs escape, over several pages."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="odd-names")
    keys = [f"data/{SES}/alf/{name}.{i}.npy" for name in ODD_NAMES for i in range(90)]
    keys += [f"data/{SES}/alf/{name}/x.y.npy" for name in ODD_NAMES]  # odd folders
    _put(endpoint, "odd-names", {key: b"x" * (i % 7) for i, key in enumerate(keys)})
    root = bucket.BucketRoot.parse("s3://odd-names/data", endpoint)
    reader = s3client.page_reader(root)
    ours = [o for page in reader.pages("odd-names", "data/", "") for o in page]
    assert reader.on  # read here, not handed to boto3
    assert len(ours) == len(keys) > 1000
    assert ours == _boto3_pages(endpoint, "odd-names", "data/")
    after = sorted(keys)[500]
    assert [o for page in reader.pages("odd-names", "data/", after) for o in page] == \
        _boto3_pages(endpoint, "odd-names", "data/", after)
    folder = f"data/{SES}/alf/"
    objects, prefixes = reader.folder("odd-names", folder)
    pages = list(s3.get_paginator("list_objects_v2").paginate(
        Bucket="odd-names", Prefix=folder, Delimiter="/"))
    assert prefixes == [c["Prefix"] for page in pages for c in page.get("CommonPrefixes", ())]
    assert prefixes == [f"{folder}{name}/" for name in sorted(ODD_NAMES)]
    assert objects == [{k: o[k] for k in ("Key", "Size", "ETag", "LastModified")}
                       for page in pages for o in page.get("Contents", ())]
    assert reader.on


def test_a_page_the_reader_cannot_read_is_listed_by_boto3_from_the_last_key(
        tmp_path, endpoint, pages_bucket, monkeypatch) -> None:
    """The second page is refused by the reader: boto3's paginator lists the rest of
    the range from the last key given (two pages more), and the tables are whole."""
    url, read, pages = pages_bucket, s3list.read_page, []

    def second_refused(body: bytes):
        pages.append(body)
        if len(pages) == 2:
            raise ValueError("refused for the test")
        return read(body)

    monkeypatch.setattr(s3list, "read_page", second_refused)
    result = fastindex.build(url, tmp_path / "out", workers=1, endpoint_url=endpoint)
    assert len(pages) == 2  # the reader stopped at its first refusal
    assert result.n_datasets == len(PAGES)
    assert not s3client.page_reader(bucket.BucketRoot.parse(url, endpoint)).on


AMPLIFIED = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
             + b"".join(f'<!ENTITY {n} "{("&" + p + ";") * 10}">'.encode()
                        for p, n in zip("abcdefg", "bcdefgh"))
             + b"]><ListBucketResult><Contents><Key>&h;</Key></Contents></ListBucketResult>")


def test_an_answer_that_would_expand_entities_is_not_read(tmp_path) -> None:
    """An endpoint answering a listing with nested entities (a billion laughs): the page
    reader refuses it and hands over to boto3, which refuses it in one line."""
    import http.server
    import threading

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(AMPLIFIED)))
            self.end_headers()
            self.wfile.write(AMPLIFIED)

        do_HEAD = do_GET

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        reader = s3client.page_reader(bucket.BucketRoot.parse("s3://b/data", endpoint))
        with pytest.raises(s3list.Unreadable):
            next(reader.pages("b", "data/", ""))
        assert not reader.on
        line = _one_line(["build", "s3://b/data", "--out", str(tmp_path), "--endpoint-url",
                          endpoint])
        assert line.startswith("fastindex: error: cannot list s3://b/data")
    finally:
        server.shutdown()


def test_a_bucket_on_a_dask_cluster_gives_the_process_pools_tables(tmp_path, endpoint) -> None:
    """Dask workers list and hash their own prefixes with clients of their own: no shared
    filesystem is needed, and every command gives what the process pool gives."""
    distributed = pytest.importorskip("distributed")
    from fastindex.dask_backend import dask_executor, local_cluster

    tree = write_tree(tmp_path / "t", MESSY)
    url = _upload(endpoint, "on-dask", tree)
    pool, cluster = tmp_path / "pool", tmp_path / "cluster"
    common = ["--endpoint-url", endpoint, "--hash", "md5", "--quiet"]
    for out, how in ((pool, ["--workers", "2"]), (cluster, ["--scheduler", "local:2"])):
        out.mkdir()
        assert main(["build", url, "--out", str(out), "--report", str(out / "r.json"),
                     *common, *how]) == 0
    assert _rows(cluster) == _rows(pool)
    assert _report(cluster) == _report(pool)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.put_object(Bucket="on-dask", Key=f"data/{SES}/alf/new.thing.npy", Body=b"new")
    with local_cluster(2) as workers, distributed.Client(workers) as client:
        settings = {"client": client, "endpoint_url": endpoint}
        assert fastindex.check(url, **settings).datasets.height == len(BEHAVIOUR) + 3
        updated = update(url, cluster, **settings)
        assert (updated.build.n_datasets, updated.rehashed) == (len(BEHAVIOUR) + 3, 1)
        assert main(["verify", url, "--tables", str(cluster), "--hash", "--endpoint-url",
                     endpoint, "--scheduler", "local:1", "--quiet"]) == 0
        gone = bucket.BucketRoot.parse("s3://no-such-bucket", endpoint)
        with pytest.raises(fastindex.FastindexError, match="cannot list s3://no-such-bucket"):
            with dask_executor(client=client, root=gone):
                pass


#: Subjects whose names sort apart from their keys (``S1-x/`` and ``S1.b/`` come before
#: ``S1/``), of one key to many pages each.
SPLIT_SUBJECTS = {"S1": 8, "S1-x": 1, "S1.b": 4, "S10": 2, "S2": 7, "S3": 1, "T": 3}


def test_subjects_listed_as_ranges_that_split_give_the_local_copys_tables(tmp_path) -> None:
    """A worker lists its subjects as ranges of keys that split as pages show how many
    keys a subject holds: every key once, in the subject it belongs to."""
    from fakes3 import FakeS3

    keys = [f"lab/Subjects/{subject}/2021-01-0{1 + i % 2}/00{1 + i // 2}/alf/x.y{i}.npy"
            for subject, n in SPLIT_SUBJECTS.items() for i in range(n)]
    tree = write_tree(tmp_path / "t", keys)
    local, remote = tmp_path / "local", tmp_path / "remote"
    fastindex.build(tree, local, workers=2)
    with FakeS3("b", {f"data/{key}": (tree / key).read_bytes() for key in keys},
                page_size=3) as fake:
        result = fastindex.build(bucket.BucketRoot("b", "data", fake.url), remote, workers=2)
    assert result.n_datasets == len(keys)
    assert _rows(remote) == _rows(local)


def test_a_key_late_in_the_order_of_a_ranges_last_subject_is_listed(tmp_path) -> None:
    """A range ends past every key of its last subject, however late in the order a
    key's name sorts (U+10FFFF is the last code point): none is left out."""
    from fakes3 import FakeS3

    keys = [f"lab/Subjects/S{i}/2021-01-01/001/alf/x.y.npy" for i in range(3)] + [
        "lab/Subjects/S2/\U0010ffff\U0010ffff/x.txt",
        "lab/Subjects/S2/2021-01-01/001/alf/\U0010ffff\U0010ffff.npy"]
    tree = write_tree(tmp_path / "t", keys)
    local, remote = tmp_path / "local", tmp_path / "remote"
    expected = fastindex.build(tree, local, workers=1)
    with FakeS3("b", {f"data/{key}": (tree / key).read_bytes() for key in keys}) as fake:
        result = fastindex.build(bucket.BucketRoot("b", "data", fake.url), remote, workers=1)
    assert len(result.skipped) == len(expected.skipped) == 2
    assert result.skipped.rows() == expected.skipped.rows()
    assert _rows(remote) == _rows(local)

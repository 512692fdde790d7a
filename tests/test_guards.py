"""No tables lost without a word: a tree that could not be listed whole writes nothing,
tables are not emptied (or halved) unless the user says so, and a missing extra is one
line.  The bucket's side of these guards is in ``test_bucket.py``.

A folder that fails to list is a ``LocalRoot`` whose lister fails for one folder (a
root passed to the API, as any caller may), the way an NFS mount answers EIO.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, age_files, write_tree

from fastindex import problems as p
from fastindex.build import build, check
from fastindex.cli import main
from fastindex.errors import ListingFailed, ShrinkRefused
from fastindex.root import LocalRoot
from fastindex.update import update

SESSIONS = 5  # in BEHAVIOUR


class _FailingLister:
    """A folder lister that fails to list one folder (``OSError`` with ``code``), and
    lists every other as the lister it wraps."""

    def __init__(self, inner, failing: str, code: int) -> None:
        self._inner, self._failing, self._code = inner, failing, code

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._inner.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def entries(self, path: str, rel: str) -> list:
        if path == self._failing:
            raise OSError(self._code, os.strerror(self._code), path)
        return self._inner.entries(path, rel)


@dataclasses.dataclass(frozen=True)
class _FailingRoot(LocalRoot):
    """A folder whose ``fails`` (root-relative, '' the root) cannot be listed."""

    fails: str = ""
    code: int = errno.EIO

    def lister(self, io, descend, probe_path=None, stat_files=False):
        return _FailingLister(super().lister(io, descend, probe_path, stat_files),
                              self.join(self.fails), self.code)


def _tables(folder: Path) -> tuple[bytes, bytes]:
    return ((folder / "sessions.pqt").read_bytes(), (folder / "datasets.pqt").read_bytes())


@pytest.fixture
def built(tmp_path) -> tuple[Path, Path]:
    """A tree with good tables (hashed: update keeps digests) in a folder of their own."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    age_files(tree)
    out = tmp_path / "out"
    assert build(tree, out, hash="md5", workers=1).n_sessions == SESSIONS
    return tree, out


@pytest.mark.parametrize("fails", [
    "",  # the root: nothing would be indexed
    "cortexlab/Subjects",  # listed by the parent's walk: a lab's subjects
    "cortexlab/Subjects/KS001/2020-01-01",  # a date folder, listed by a worker
])
def test_a_folder_that_cannot_be_listed_writes_no_tables(built, fails) -> None:
    tree, out = built
    before = _tables(out)
    root = _FailingRoot(tree.resolve(), fails)
    where = str(tree.resolve() / fails) if fails else str(tree.resolve())
    run_on = {"workers": 1}  # a worker's batch runs here: its date folders, listed
    for run in (lambda: build(root, out, hash="md5", **run_on),
                lambda: build(root, out, allow_shrink=True, **run_on),
                lambda: update(root, out, **run_on),
                lambda: update(root, out, keep_missing=True, **run_on)):
        with pytest.raises(ListingFailed) as failed:
            run()
        message = str(failed.value)
        assert message.startswith(f"cannot list {where}: ") and "Input/output error" in message
        assert "nothing was written" in message and "no sessions" not in message
        assert failed.value.exit_code == 3
        assert _tables(out) == before
    # check writes no tables: it reports the folder, as any problem
    index = check(root, **run_on)
    assert (fails or ".", p.UNREADABLE) in [(r[0], r[1]) for r in index.skipped.iter_rows()]


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENAMETOOLONG])
def test_a_folder_without_read_permission_is_a_problem_not_a_failure(built, code) -> None:
    """Permissions (and a path too long) are facts of the tree, the same on every run:
    reported, the rest built (only a permission on the root itself fails the build)."""
    tree, out = built
    root = _FailingRoot(tree.resolve(), "hoferlab/Subjects", code)
    result = build(root, out, hash="md5", workers=1)
    assert result.n_sessions == SESSIONS - 1
    assert ("hoferlab/Subjects", p.UNREADABLE) in [
        (r[0], r[1]) for r in result.skipped.iter_rows()]
    with pytest.raises(ListingFailed, match="Permission denied"):
        build(_FailingRoot(tree.resolve(), "", errno.EACCES), out, workers=1)


def _release(tmp_path: Path) -> tuple[Path, Path]:
    """A tree published under ``release1`` (as in s3://lab-data/release1), and its
    tables, built from the right folder."""
    tree = write_tree(tmp_path / "lab-data" / "release1", BEHAVIOUR)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["build", str(tree), "--out", str(out), "--quiet"]) == 0
    return tree, out


@pytest.mark.parametrize("command", ["build", "update"])
def test_a_root_one_level_too_high_does_not_empty_the_tables(tmp_path, capsys,
                                                            command) -> None:
    tree, out = _release(tmp_path)
    before = _tables(out)
    capsys.readouterr()
    assert main([command, str(tree.parent), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"the tables in {out.resolve()} hold {SESSIONS} sessions" in err
    assert f"this {command} of {tree.parent} found 0" in err and "--allow-shrink" in err
    assert _tables(out) == before
    assert main([command, str(tree.parent), "--out", str(out), "--quiet",
                 "--allow-shrink"]) == 0
    assert pl.read_parquet(out / "sessions.pqt").height == 0


def test_losing_more_than_half_the_sessions_needs_the_users_word(tmp_path) -> None:
    tree, out = _release(tmp_path)
    subjects = tree / "cortexlab" / "Subjects"
    shutil.rmtree(subjects / "KS002")  # 4 of 5 sessions left: updated
    assert update(tree, out).build.n_sessions == SESSIONS - 1
    shutil.rmtree(subjects / "KS001" / "2020-01-01")  # 2 of 4 left: half is not fewer
    assert update(tree, out).build.n_sessions == SESSIONS - 3
    shutil.rmtree(subjects / "KS001")  # 1 of 2 left: still half
    shutil.rmtree(tree / "hoferlab")  # none: refused
    before = _tables(out)
    for run in (lambda: update(tree, out), lambda: build(tree, out)):
        with pytest.raises(ShrinkRefused, match="hold 2 sessions; this .* found 0"):
            run()
        assert _tables(out) == before
    assert update(tree, out, keep_missing=True).build.n_sessions == 2  # nothing lost
    assert build(tree, out, allow_shrink=True).n_sessions == 0
    assert build(tree / "cortexlab", out).n_sessions == 0  # no session to lose
    write_tree(tree, BEHAVIOUR)
    (out / "sessions.pqt").write_bytes(b"not parquet")  # protects nothing: rebuilt
    assert build(tree, out).n_sessions == SESSIONS


BLOCK_BOTO3 = ("import sys; sys.modules['boto3'] = sys.modules['botocore'] = None; "
               "from fastindex.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["build", "check", "update", "verify"])
def test_a_bucket_without_the_s3_extra_is_one_line(tmp_path, command) -> None:
    """Installed without ``fastindex[s3]`` (boto3 and botocore cannot be imported)."""
    args = [command, "s3://lab-data/release1", "--endpoint-url", "http://127.0.0.1:9"]
    if command in ("build", "update"):
        args += ["--out", str(tmp_path)]
    done = subprocess.run([sys.executable, "-c", BLOCK_BOTO3, *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("fastindex: error: indexing a bucket needs boto3: "
                           "pip install 'fastindex[s3]'\n")


# A bucket: moto's server (as in test_bucket.py), behind a fake endpoint of our own
# where a test changes the answers it needs to.

@pytest.fixture(scope="module")
def moto_endpoint():
    pytest.importorskip("boto3")
    from test_bucket import _moto

    with _moto() as url:
        yield url


@pytest.fixture
def s3env(monkeypatch, moto_endpoint) -> str:
    """moto's endpoint, with the credentials the tests use and fresh clients."""
    from test_bucket import CREDENTIALS

    from fastindex import s3client

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3client.forget_clients()
    return moto_endpoint


@contextlib.contextmanager
def _fake_endpoint(upstream: str, answer):
    """An S3 endpoint on 127.0.0.1 that forwards every request to ``upstream``, except
    those ``answer(query)`` answers itself, with (status, body)."""
    import http.client
    import http.server
    import threading
    from urllib.parse import parse_qs, urlsplit

    host, port = urlsplit(upstream).hostname, urlsplit(upstream).port

    class Fake(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            own = answer(parse_qs(urlsplit(self.path).query))
            if own is not None:
                status, body, headers = *own, {}
            else:
                connection = http.client.HTTPConnection(host, port, timeout=60)
                connection.request(self.command, self.path, headers=dict(self.headers))
                response = connection.getresponse()
                status, body = response.status, response.read()
                headers = {k: v for k, v in response.getheaders() if k.lower() not in (
                    "content-length", "transfer-encoding", "connection")}
                connection.close()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            """A client that left (a worker's other listings, abandoned once one has
            failed) is not the fake's error: its trace would land in the command's
            captured stderr."""
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _bucket(endpoint: str, name: str, tree: Path, prefix: str = "data") -> str:
    from test_bucket import _upload

    return _upload(endpoint, name, tree, prefix)


def _is_listing(query: dict) -> bool:
    """A listing, other than the one-key requests that check a root exists."""
    return "list-type" in query and query.get("max-keys") != ["1"]


def _cli(capsys, args: list[str]) -> tuple[int, str, str]:
    """The CLI's exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _error(code: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f'<Message>{code}</Message><RequestId>1</RequestId></Error>').encode()


@pytest.mark.parametrize("where", ["root", "range"])
def test_a_bucket_that_answers_503_writes_no_tables(tmp_path, capsys, s3env, where) -> None:
    """HTTP 503, after boto3's retries: on the root's listing (the parent's walk), or on
    a worker's range listing of its date folders.  SlowDown (a throttling error: boto3
    waits seconds between tries) for the root's first build, ServiceUnavailable for the
    rest (retried at once; a worker's batches would each wait for SlowDown's tries)."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    url = _bucket(s3env, f"slow-{where}", tree)
    out = tmp_path / "out"
    out.mkdir()
    common = ["--out", str(out), "--workers", "1", "--quiet"]
    assert main(["build", url, "--hash", "md5", *common, "--endpoint-url", s3env]) == 0
    before = _tables(out)
    codes = ["SlowDown" if where == "root" else "ServiceUnavailable", "ServiceUnavailable"]

    def unavailable(query: dict):
        failing = (query.get("prefix") == ["data/"] and "delimiter" in query
                   if where == "root" else "start-after" in query)
        return (503, _error(codes[0])) if _is_listing(query) and failing else None

    with _fake_endpoint(s3env, unavailable) as fake:
        for command in ("build", "update"):
            code, _, err = _cli(capsys, [command, url, *common, "--endpoint-url", fake])
            assert code == 3, err
            assert err.startswith(f"fastindex: error: cannot list {url}") and codes[0] in err
            assert "no sessions" not in err and len(err.splitlines()) == 1, err
            assert _tables(out) == before
            codes.pop(0)
        code, listed, err = _cli(capsys, ["check", url, "--workers", "1", "--quiet",
                                          "--endpoint-url", fake])
        assert code == 1 and f"\t{p.UNREADABLE}\t" in listed, err  # check reports it


def test_a_listing_answered_by_an_error_body_does_not_empty_the_tables(tmp_path, capsys,
                                                                       s3env) -> None:
    """HTTP 200 whose body is an S3 ``<Error>``: at worst nothing is listed, and the
    tables are not replaced by empty ones."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    url = _bucket(s3env, "error-body", tree)
    out = tmp_path / "out"
    out.mkdir()
    common = ["--out", str(out), "--workers", "1", "--quiet"]
    assert main(["build", url, *common, "--endpoint-url", s3env]) == 0
    before = _tables(out)
    error = _error("InternalError")
    with _fake_endpoint(s3env, lambda q: (200, error) if _is_listing(q) else None) as fake:
        for command in ("build", "update"):
            code, _, err = _cli(capsys, [command, url, *common, "--endpoint-url", fake])
            assert code in (2, 3) and "no sessions" not in err, err
            assert _tables(out) == before


@pytest.mark.parametrize("command", ["build", "update"])
def test_a_bucket_prefix_one_level_too_high_does_not_empty_the_tables(tmp_path, capsys,
                                                                     s3env, command) -> None:
    """``s3://lab-data`` for ``s3://lab-data/release1``: its sessions are one level too
    deep for ONE (unloadable), so a build would find none."""
    tree = write_tree(tmp_path / "t", BEHAVIOUR)
    url = _bucket(s3env, f"lab-data-{command}", tree, prefix="release1")
    top = url.removesuffix("/release1")
    out = tmp_path / "out"
    out.mkdir()
    common = ["--out", str(out), "--workers", "1", "--quiet", "--endpoint-url", s3env]
    assert main(["build", url, *common]) == 0
    before = _tables(out)
    code, _, err = _cli(capsys, [command, top, *common])
    assert code == 2, err
    assert f"hold {SESSIONS} sessions; this {command} of {top} found 0" in err
    assert "--allow-shrink" in err and len(err.splitlines()) == 1
    assert _tables(out) == before
    assert main([command, top, *common, "--allow-shrink"]) == 0
    assert pl.read_parquet(out / "sessions.pqt").height == 0


def test_the_advice_after_a_bucket_build_works_on_the_bucket(tmp_path, capsys, s3env) -> None:
    """Sessions where ONE does not look: no ``fastindex fix s3://`` (it takes no bucket);
    the command that lists the problems names the endpoint, and runs."""
    import shlex

    tree = write_tree(tmp_path / "t", [*BEHAVIOUR, "lab/Subjects/sub/2021-01-01/1/alf/a.b.npy"])
    url = _bucket(s3env, "advice", tree)
    code, _, err = _cli(capsys, ["build", url, "--out", str(tmp_path), "--workers", "1",
                                 "--endpoint-url", s3env])
    assert code == 0, err
    assert "fastindex fix" not in err.replace("fastindex fix renames local folders", "")
    assert "move their keys to the prefix ONE looks in" in err
    listed = err.split("to list them: ")[1].split(" (or --report FILE)")[0]
    code, problems, err = _cli(capsys, shlex.split(listed)[1:] + ["--quiet"])
    assert code == 1, err  # problems listed, not a bad option or an unreachable endpoint
    assert f"{p.UNLOADABLE_SESSION}\tlab/Subjects/sub/2021-01-01/1/alf/a.b.npy" in problems

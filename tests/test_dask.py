"""The same build on a Dask cluster (LocalCluster: 2 worker processes, loopback only)."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import age_files, table_bytes

import fastindex
from fastindex.cli import main
from fastindex.store import TableStore
from fastindex.treegen import make_tree

distributed = pytest.importorskip("distributed")
from fastindex.dask_backend import local_cluster  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    make_tree(root, files=3000, shape="ephys", seed=5)
    return root


def _both(out) -> tuple:
    return table_bytes(out / "sessions.pqt"), table_bytes(out / "datasets.pqt")


@pytest.mark.parametrize("hash", [None, "xxh3+md5"])
def test_dask_build_equals_the_process_pool_build(client, tree, tmp_path, hash) -> None:
    local, remote = tmp_path / "local", tmp_path / "dask"
    local.mkdir()
    remote.mkdir()
    fastindex.build(tree, local, workers=2, hash=hash)
    result = fastindex.build(tree, remote, client=client, hash=hash)
    assert result.n_datasets > 2000
    assert _both(remote) == _both(local)


def test_cli_local_scheduler(tree, tmp_path) -> None:
    assert main(["build", str(tree), "--out", str(tmp_path), "--quiet",
                 "--scheduler", "local:2"]) == 0
    reference = tmp_path / "ref"
    reference.mkdir()
    fastindex.build(tree, reference, workers=1)
    assert _both(tmp_path) == _both(reference)


def test_workers_that_cannot_see_the_root_fail_clearly(client, tmp_path) -> None:
    from fastindex.dask_backend import dask_executor
    from fastindex.root import LocalRoot

    # a folder only this process would see, as on a machine without the shared filesystem
    with pytest.raises(fastindex.FastindexError, match="cannot see"):
        with dask_executor(client=client, root=LocalRoot(tmp_path / "only-here")):
            pass
    with dask_executor(client=client, root=LocalRoot(tmp_path)) as executor:
        assert executor.submit(sum, [1, 2]).result() == 3


class _KillFirstWorker(distributed.WorkerPlugin):
    """Kills the worker that starts the cluster's first task, once: it dies mid-build.
    The file ``marker`` says the kill was made, and of which worker process."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing":
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # killed already
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_dask_worker_is_replaced_and_the_build_completes(tree, tmp_path) -> None:
    reference, out = tmp_path / "ref", tmp_path / "out"
    reference.mkdir()
    out.mkdir()
    fastindex.build(tree, reference, workers=2)
    marker = tmp_path / "killed"
    with local_cluster(2) as cluster, distributed.Client(cluster) as c:
        pids = list(c.run(os.getpid).values())
        register = getattr(c, "register_plugin", None) or c.register_worker_plugin  # < 2023.9
        register(_KillFirstWorker(str(marker)))
        result = fastindex.build(tree, out, client=c)
        killed = int(marker.read_text())
        assert killed in pids  # one of the workers, killed in its first task
        assert killed not in c.run(os.getpid).values()  # and replaced
    assert TableStore(out).read().build_ids == (result.build_id,) * 2
    assert _both(out) == _both(reference)


def test_update_and_verify_on_dask(client, tmp_path) -> None:
    from fastindex.update import update
    from fastindex.verify import verify

    root = tmp_path / "t"
    make_tree(root, files=1500, shape="ephys", seed=7)
    age_files(root)
    fastindex.build(root, workers=2, hash="xxh3")
    files = sorted(p for p in root.rglob("*.npy"))
    st = files[0].stat()
    files[0].write_bytes(bytes(reversed(files[0].read_bytes())))
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    files[1].unlink()
    (files[2].parent / "_new_obj.attr.npy").write_bytes(b"new")
    assert not verify(root, client=client).ok  # one missing, one not indexed

    result = update(root, client=client)
    assert (result.incremental, result.rehashed) == (True, 2)
    assert verify(root, client=client, hash=True).ok
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fastindex.build(root, fresh, workers=1, hash="xxh3")
    assert _both(root) == _both(fresh)

    files[3].write_bytes(bytes(len(files[3].read_bytes())))  # same size, other bytes
    assert main(["update", str(root), "--quiet", "--scheduler", "local:1"]) == 0
    assert verify(root, client=client, hash=True).ok

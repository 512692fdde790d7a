"""The distributed edge: run the index stage on a Dask cluster.

Dask is an optional extra (``fastindex[dask]``); only this module imports it.  The
pipeline needs nothing but a ``concurrent.futures.Executor``, and a Dask client gives
one (``client.get_executor()``): batches go to the cluster's workers as tasks, their
Arrow results come back, and the merge and write happen here, as in the local path.
Dask re-runs the batches of a worker that dies on another worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from fastindex.errors import FastindexError, InputError

if TYPE_CHECKING:
    from fastindex.root import Root


@contextlib.contextmanager
def dask_executor(scheduler: str | None = None, client=None, root: Root | None = None
                  ) -> Iterator[Executor]:
    """An executor on ``client``, or on a cluster named by ``scheduler``.

    ``scheduler`` is a scheduler address (``tcp://host:8786``) or ``local:N`` to start a
    ``LocalCluster`` of N single-threaded worker processes on this machine (loopback
    only, no dashboard).  With ``root``, every worker is first asked whether it can read
    the tree (``Root.readable_here``): a folder through the same path, on a shared
    filesystem; a bucket with a client and credentials of its own.
    """
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError("Dask is not installed: pip install 'fastindex[dask]'") from None
    with contextlib.ExitStack() as stack:
        if client is None:
            if scheduler is None:
                raise InputError("give a Dask client or a scheduler address")
            if scheduler.startswith("local:"):
                cluster = stack.enter_context(local_cluster(_local_workers(scheduler)))
                client = stack.enter_context(Client(cluster))
            else:
                try:
                    client = stack.enter_context(Client(scheduler, timeout="10s"))
                except (OSError, ValueError, TypeError) as err:  # unreachable, or no address
                    raise InputError(f"cannot reach the Dask scheduler {scheduler!r}: "
                                     f"{err}") from None
        if root is not None:
            _check_workers_read(client, root)
        yield client.get_executor(pure=False)


def local_cluster(workers: int):
    """A ``LocalCluster`` of single-threaded worker processes, on loopback, no dashboard.

    The scheduler's HTTP server (health checks) takes a free loopback port rather than
    8787, so two clusters can run side by side.
    """
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def _local_workers(scheduler: str) -> int:
    try:
        n = int(scheduler.split(":", 1)[1])
    except ValueError:
        n = 0
    from fastindex.spec import MAX_WORKERS

    if not 1 <= n <= MAX_WORKERS:
        raise InputError(f"local:N needs a number of workers from 1 to {MAX_WORKERS}, "
                         f"not {scheduler!r}")
    return n


def _check_workers_read(client, root: Root) -> None:
    """Fail clearly, before any task, when a worker cannot read the tree."""
    seen = client.run(root.readable_here)
    if not seen:
        raise FastindexError("the Dask cluster has no workers")
    blind = {worker: why for worker, why in sorted(seen.items()) if why is not True}
    if blind:
        raise FastindexError(f"Dask workers {', '.join(blind)} {next(iter(blind.values()))}")

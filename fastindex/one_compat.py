"""The edge towards one-api: its ``make_parquet_db`` and ``One.setup``, backed by fastindex.

one-api is an optional dependency (``fastindex[one]``); only ``setup`` and
``use_fastindex`` import it, and only when called: without it they raise
``ModuleNotFoundError`` naming the extra to install.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from fastindex.build import build
from fastindex.oneload import use_fast_load
from fastindex.tablefiles import SESSIONS_FILE


def make_parquet_db(root_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    hash_ids: bool = True, hash_files: bool = False, lab: str | None = None
                    ) -> tuple[Path, Path]:
    """one-api's ``one.alf.cache.make_parquet_db``, same signature and return value.

    Returns the paths of the sessions and datasets tables.  ``hash_files`` puts each
    file's md5 in the ``hash`` column, as one-api does.  Like one-api it warns when no
    sessions or no datasets were found, and replaces the tables whatever they held
    (``allow_shrink``: its callers have no way to say so).
    """
    result = build(root_dir, out_dir, hash_ids=hash_ids, lab=lab,
                   hash="md5" if hash_files else None, allow_shrink=True)
    if result.n_sessions == 0 or result.n_datasets == 0:
        what = "sessions" if result.n_sessions == 0 else "datasets"
        warnings.warn(f"No {what} found", RuntimeWarning, stacklevel=2)
    assert result.sessions_path and result.datasets_path  # build writes both, or raises
    return result.sessions_path, result.datasets_path


def setup(cache_dir: str | os.PathLike, overwrite: bool = False, **kwargs):
    """``One.setup`` without its prompts: build the tables if needed, return a local ``One``.

    Existing tables are kept unless ``overwrite``; ``kwargs`` go to :func:`make_parquet_db`.
    When the tables say the tree's files carry their dataset's UUID (fastindex found
    it), the ``One`` has ``uuid_filenames`` on: without it, ONE would look for every
    file under a name without its UUID.
    """
    from fastindex import provenance

    One = _one_api().One

    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise FileNotFoundError(f"{cache_dir} does not exist")
    if overwrite or not (cache_dir / SESSIONS_FILE).exists():
        make_parquet_db(cache_dir, **kwargs)
    one = One(cache_dir=cache_dir, mode="local")
    if provenance.uuid_names(provenance.recorded(cache_dir / SESSIONS_FILE)):
        one.uuid_filenames = True
    return one


def use_fastindex() -> None:
    """Make one-api's own ``One.setup`` build its tables with fastindex, and ``One`` load
    them with :func:`fastindex.oneload.use_fast_load`'s fast path.

    ``One.setup`` calls the ``make_parquet_db`` that ``one.api`` imported; this replaces
    that name, for this process, with fastindex's.  The loader is replaced only for the
    one-api versions it was checked against; it gives ONE the frames ONE's own gives.
    """
    _one_api().make_parquet_db = make_parquet_db
    use_fast_load()


def _one_api():
    """``one.api``, or what to install to get it."""
    try:
        import one.api
    except ModuleNotFoundError as err:
        if err.name not in ("one", "one.api"):
            raise  # one-api is there, but something it needs is not: its own message
        raise ModuleNotFoundError("one-api is not installed: pip install 'fastindex[one]'",
                                  name=err.name) from None
    return one.api

"""fastindex: a parallel indexer that writes ONE's cache tables for large ALF trees."""

from fastindex.build import build, check
from fastindex.errors import FastindexError, InputError, LabError
from fastindex.one_compat import make_parquet_db, setup, use_fastindex
from fastindex.oneload import load_one_tables, restore_load, use_fast_load
from fastindex.release import ReleaseResult, release
from fastindex.results import BuildResult
from fastindex.spec import BuildSpec, RunSettings
from fastindex.version import __version__

__all__ = ["build", "check", "BuildResult", "BuildSpec", "RunSettings", "release",
           "ReleaseResult", "make_parquet_db", "setup", "use_fastindex", "use_fast_load",
           "restore_load", "load_one_tables", "FastindexError",
           "InputError", "LabError", "__version__"]

"""fastindex: a parallel indexer that writes ONE's cache tables for large ALF trees."""

__version__ = "0.1.0"

from fastindex.build import build, check  # noqa: E402
from fastindex.errors import FastindexError, InputError, LabError  # noqa: E402
from fastindex.one_compat import make_parquet_db, setup, use_fastindex  # noqa: E402
from fastindex.publish import ReleaseResult, release  # noqa: E402
from fastindex.spec import BuildSpec, RunSettings  # noqa: E402
from fastindex.store import BuildResult  # noqa: E402

__all__ = ["build", "check", "BuildResult", "BuildSpec", "RunSettings", "release",
           "ReleaseResult", "make_parquet_db", "setup", "use_fastindex", "FastindexError",
           "InputError", "LabError", "__version__"]

"""The errors fastindex raises on purpose, each with the exit code the CLI gives it."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastindex.engine import TreeIndex

#: What a write can meet that is about the disk, not about fastindex or its input.
WRITE_FAILURES = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "over quota",
                  errno.EFBIG: "file too large for the file system",
                  errno.EROFS: "read-only file system"}


class FastindexError(Exception):
    """A build could not be completed; nothing was written in place of the old tables."""

    exit_code = 3


class InputError(FastindexError):
    """The user asked for something impossible: a missing root, an unwritable output."""

    exit_code = 2


class ListingFailed(FastindexError):
    """A folder at or above the sessions could not be listed (an I/O error, a bucket's
    error after boto3's retries): the tree was not listed whole, so its tables are not
    written; the previous ones are left as they were."""


class ShrinkRefused(InputError):
    """New tables would hold far fewer sessions than the tables they replace (none, or
    fewer than half): written only when the user says so (``allow_shrink``)."""


class LabError(InputError, AssertionError):
    """``lab`` disagrees with the tree.  Also an ``AssertionError``: one-api's
    ``make_parquet_db`` asserts on a lab conflict, and its callers catch that."""


class ProblemsFound(FastindexError):
    """``strict``: files would be skipped or warnings given, so nothing was written.

    Carries the problems (``skipped``: a polars frame of path, reason, detail;
    ``warnings``: a list of ``Problem``) so the caller can list them.
    """

    exit_code = 1

    def __init__(self, message: str, skipped, warnings: list, remedy: str = "") -> None:
        super().__init__(message)
        self.skipped = skipped
        self.warnings = warnings
        self.remedy = remedy  # what the user can do, when the caller knows better


#: Looks at an index before anything is written: the reason to write nothing, or None.
Refusal = Callable[["TreeIndex"], "ProblemsFound | None"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a command that knows what it had written: ``landed``
    says so (a ``KeyboardInterrupt`` still, for the callers that catch those)."""

    def __init__(self, landed: str) -> None:
        super().__init__(landed)
        self.landed = landed


def write_failure(err: BaseException, folder: str | os.PathLike, what: str,
                  kept: str) -> FastindexError | None:
    """A one-line failure for ``err`` when it is a disk's refusal to take a write
    (``WRITE_FAILURES``), else None: ``cannot write WHAT in FOLDER: WHY; KEPT``."""
    if isinstance(err, OSError) and err.errno in WRITE_FAILURES:
        return FastindexError(f"cannot write {what} in {folder}: "
                              f"{WRITE_FAILURES[err.errno]}; {kept}")
    return None

"""The errors fastindex raises on purpose, each with the exit code the CLI gives it."""


class FastindexError(Exception):
    """A build could not be completed; nothing was written in place of the old tables."""

    exit_code = 3


class InputError(FastindexError):
    """The user asked for something impossible: a missing root, an unwritable output."""

    exit_code = 2


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

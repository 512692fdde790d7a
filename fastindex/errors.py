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

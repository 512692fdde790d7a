"""Where a command's tables live: ONE's two file names, and the folder they are in."""

from __future__ import annotations

import os
from pathlib import Path

from fastindex.bucket import BucketRoot
from fastindex.errors import InputError

#: ONE's two cache tables, in the order they are written and renamed into place.
TABLE_FILES = ("sessions.pqt", "datasets.pqt")
SESSIONS_FILE, DATASETS_FILE = TABLE_FILES


def tables_folder(given: str | os.PathLike | None, root: Path | BucketRoot, option: str
                  ) -> str | os.PathLike:
    """Where the tables are: ``given``, else the root; a bucket's go to a local folder."""
    if given is not None:
        return given
    if isinstance(root, BucketRoot):
        raise InputError(f"the tables of a bucket are written to a local folder: {option} DIR")
    return root

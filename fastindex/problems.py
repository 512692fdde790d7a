"""Problems found while indexing: delivered as values beside the entries, never swallowed.

Every file under the root is either a row of ``datasets.pqt`` or a :class:`Problem`
with one of the reasons below, so a user can always tell what was left out and why.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

# Why a file was not indexed.
NOT_ALF_NAME = "not_alf_name"  # file name is not namespace_object.attribute.ext
BAD_COLLECTION = "bad_collection"  # a folder between session and file is not a collection
OUTSIDE_SESSION = "outside_session"  # file is not below any session folder
IMPOSSIBLE_DATE = "impossible_date"  # session-shaped folder whose date does not exist
UNLOADABLE_SESSION = "unloadable_session"  # a session folder where ONE will not look for it
UNREADABLE = "unreadable"  # a folder could not be listed or a file could not be read
VANISHED = "vanished"  # a file was listed, then gone before it could be read
CHANGED = "changed_while_reading"  # its size changed between listing and hashing
BROKEN_SYMLINK = "broken_symlink"  # a link whose target does not exist
SYMLINK_DIR = "symlinked_directory"  # a link to a folder, not followed by default
SYMLINK_LOOP = "symlink_loop"  # a followed link leads back to a folder already walked
NOT_REGULAR = "not_a_regular_file"  # fifo, socket, device
INVALID_ENCODING = "invalid_encoding"  # a name that is not valid UTF-8
BAD_LISTING = "bad_listing"  # a bucket listed a size, time or ETag no table may hold
# A tree whose files carry their dataset's UUID in their names (merge.uuid_file_names):
UUID_NAMES_MIXED = "mixed_uuid_names"  # named otherwise than most of the tree's files
INVALID_UUID = "invalid_uuid"  # a UUID-like part ONE would not read back as written
DUPLICATE_UUID = "duplicate_uuid"  # two files carry one dataset id
DUPLICATE_NAME = "duplicate_name"  # one session's name carried with two UUIDs

# Warnings: reported, but nothing is skipped.
LAB_ABOVE_ROOT = "lab_above_root"  # the root is inside a lab folder: rows have no lab
LINK_OUTSIDE_ROOT = "link_outside_root"  # indexed, but its file is not under the root

WARNINGS = (LAB_ABOVE_ROOT, LINK_OUTSIDE_ROOT)


class Problem(NamedTuple):
    """One path that was skipped (or warned about), relative to the indexed root."""

    path: str
    reason: str
    detail: str = ""


class EntryRefused(OSError):
    """An entry its lister will not give a stat for, with the reason it is reported
    under (a bucket's object listed with values no table may hold)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(errno.EINVAL, detail)
        self.reason = reason


def stat_problem(err: OSError) -> tuple[str, str]:
    """(reason, detail) of an entry whose stat failed (other than vanished)."""
    if isinstance(err, EntryRefused):
        return err.reason, err.strerror or ""
    return UNREADABLE, str(err)


def problem(path: str, reason: str, detail: str = "") -> Problem:
    """A problem of the root-relative ``path``, which may hold undecodable bytes: the one
    place a problem's path is made printable (``display_path``), since Arrow, JSON and
    CSV hold only UTF-8 and every problem passes through them on its way to the user."""
    return Problem(display_path(path), reason, detail)


def display_path(path: str) -> str:
    """A printable, UTF-8-encodable form of a path that may hold undecodable bytes.

    ``os.scandir`` returns undecodable bytes as lone surrogates; they cannot be written
    to Arrow or JSON, so they are shown as ``\\xNN`` escapes instead.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def has_invalid_encoding(name: str) -> bool:
    """True when a name read from disk held bytes that are not UTF-8."""
    return display_path(name) != name

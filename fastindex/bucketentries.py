"""A bucket's keys as the walk's entries: objects as ``os.DirEntry``s of files, common
prefixes as folders, and a range's keys put in their folders.

An object is an ``ObjectEntry`` (its stat an ``ObjectStat``: size, last-modified time,
ETag), a common prefix a ``PrefixEntry``; ``bucketlister`` makes them.
"""

from __future__ import annotations

import errno

from fastindex import problems as p
from fastindex import s3check


class ObjectStat:
    """What the walk and the workers read of an object, as of a file's ``os.stat``."""

    __slots__ = ("st_size", "st_mtime_ns", "etag")
    st_mode = 0o100444  # a regular file anyone may read: the bucket's reader can
    st_ctime_ns = 0

    def __init__(self, size: int, mtime_ns: int, etag: str) -> None:
        self.st_size, self.st_mtime_ns, self.etag = size, mtime_ns, etag


class ObjectEntry:
    """An object, as an ``os.DirEntry`` of a file."""

    __slots__ = ("name", "path", "_stat")

    def __init__(self, name: str, path: str, stat: ObjectStat) -> None:
        self.name, self.path, self._stat = name, path, stat

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return False

    def is_file(self, follow_symlinks: bool = True) -> bool:
        return True

    def is_symlink(self) -> bool:
        return False

    def stat(self, follow_symlinks: bool = True) -> ObjectStat:
        return self._stat


class RefusedEntry(ObjectEntry):
    """An object listed with a size, time or ETag no table may hold: its stat is refused
    (``problems.EntryRefused``), so it is reported ``bad_listing`` with the fault."""

    __slots__ = ()

    def stat(self, follow_symlinks: bool = True) -> ObjectStat:
        raise p.EntryRefused(p.BAD_LISTING, str(self._stat))


class PrefixEntry:
    """A common prefix (``a/b/``), as an ``os.DirEntry`` of a folder."""

    __slots__ = ("name", "path")

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path = name, path

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return True

    def is_file(self, follow_symlinks: bool = True) -> bool:
        return False

    def is_symlink(self) -> bool:
        return False

    def stat(self, follow_symlinks: bool = True):
        raise NotADirectoryError(errno.ENOTSUP, "a prefix has no stat", self.path)


def entry_of(obj: dict, name: str, path: str) -> ObjectEntry:
    """A listed object's entry: refused (``RefusedEntry``) when ``s3check.entry_fault``
    finds its values out of what the tables hold."""
    fault = s3check.entry_fault(obj)
    if fault is not None:
        return RefusedEntry(name, path, fault)  # type: ignore[arg-type]
    return ObjectEntry(name, path, ObjectStat(
        obj["Size"], int(obj["LastModified"].timestamp()) * 1_000_000_000, obj["ETag"]))


class Gone(list):
    """The entries of a folder handed to a range that found no key below it."""

    __slots__ = ()


def gone(folders: dict[str, list], top: str, names: list[str], seen: set[str]
          ) -> dict[str, list]:
    """``folders`` with each of ``names`` that had no key in its range ``Gone`` (the
    lister raises ``FileNotFoundError`` for it, as for a local folder gone)."""
    for name in names:
        if name not in seen:
            folders[f"{top}/{name}"] = Gone()
    return folders


def place(folders: dict[str, list], top: str, rest: str, obj: dict) -> str:
    """Put one key (``rest``, below ``top``) in its folder, making the folders above;
    returns that folder's path.

    At most ``s3check.MAX_DEPTH`` folders are made (no S3 key is deeper): the rest of a
    deeper key is one name, reported as no ALF name, not thousands of folders.
    """
    *dirs, name = rest.split("/", s3check.MAX_DEPTH)
    folder = top
    for part in dirs:
        child = f"{folder}/{part}"
        if child not in folders:
            folders[child] = []
            folders[folder].append(PrefixEntry(part, child))
        folder = child
    if name:  # a key ending in '/' is a folder marker
        folders[folder].append(entry_of(obj, name, f"{folder}/{name}"))
    return folder

"""Files a stranger may have planted: read without following links, written exclusively.

The tree, its ``.fastindexignore``, old tables, journals and zips are untrusted (see
docs/THREAT-MODEL.md).  A file fastindex reads to decide what to do is opened with
``O_NOFOLLOW`` (a link to a secret would put its lines in the tables) and
``O_NONBLOCK`` (a FIFO would hang the run), must be a regular file, and is read up to a
cap (a link to ``/dev/zero`` cannot exhaust memory).  A file fastindex writes is first
created beside its target under a random name with ``O_CREAT | O_EXCL | O_NOFOLLOW``,
so a link planted in a shared folder is never written through, then renamed over the
target.  It is created with mode ``0666`` less the umask, as any file a user creates
(``0644`` under the usual ``022``): a release or a report is meant to be read by others,
which ``tempfile.mkstemp``'s ``0600`` would forbid whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fastindex.errors import InputError, write_failure

#: Every temporary file fastindex makes is named ``.<target>.<random>.tmp``.
TEMP_SUFFIX = ".tmp"
#: A new file's mode before the umask: what ``open(..., "w")`` gives.
NEW_FILE_MODE = 0o666
_CREATE = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_CLOEXEC", 0))
_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
          | getattr(os, "O_CLOEXEC", 0))


def open_untrusted(path: Path, what: str) -> BinaryIO:
    """The regular file at ``path``, opened for reading without following a link or
    blocking; ``FileNotFoundError`` when there is none, else a one-line refusal
    (``InputError``) when it is a link, not a regular file, or unreadable."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(f"{what} {path} is a link; fastindex does not follow it "
                             f"(replace it with the file itself)") from None
        raise InputError(f"cannot read the {what} {path}: {err.strerror}") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise InputError(f"{what} {path} is not a regular file")
    return f


def read_regular(path: Path, limit: int, what: str) -> bytes | None:
    """The bytes of the regular file at ``path`` (None when there is none), or a one-line
    refusal (``InputError``) as ``open_untrusted``, or when it is larger than ``limit``."""
    try:
        f = open_untrusted(path, what)
    except FileNotFoundError:
        return None
    with f:
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise InputError(f"cannot read the {what} {path}: {err.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {limit} bytes; refused")
    return data


def temp_beside(target: Path) -> tuple[int, Path]:
    """A new, empty file beside ``target``, created exclusively (never through a link)
    under a random name (``.NAME.XXXXXXXX.tmp``), mode ``0666`` less the umask: its
    descriptor and path."""
    for _ in range(100):
        temp = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(temp, _CREATE, NEW_FILE_MODE), temp
        except FileExistsError:
            continue  # another's name (or a planted link): draw again
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


@contextlib.contextmanager
def replacing(target: Path, mode: str = "wb", **kwargs) -> Iterator:
    """A file object on a temporary file beside ``target``, renamed over it when the
    block ends without error (after an ``fsync``); removed otherwise.

    The temporary is ``flock``ed while it is written, so that a later run tells a killed
    writer's leftover (removed first, by ``remove_leftovers``) from a live one's.
    """
    remove_leftovers(target)
    fd, temp = temp_beside(target)
    with contextlib.suppress(OSError):  # a file system without flock: leftovers stay
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        failure = write_failure(err, target.parent, target.name,
                                f"nothing was put in place of {target}")
        if failure is not None:
            raise failure from None
        raise


def remove_leftovers(target: Path) -> int:
    """Remove the temporaries of ``target`` that no live writer holds (a killed run's:
    a full-size zip, a report); how many were removed."""
    removed = 0
    try:
        names = os.listdir(target.parent)
    except OSError:
        return 0
    for name in names:
        if is_temporary(name, (target.name,)):
            removed += _remove_unlocked(target.parent / name)
    return removed


def _remove_unlocked(path: Path) -> int:
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # a live writer holds it
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return 0  # replaced meanwhile: not the file examined
        os.unlink(path)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


def is_temporary(name: str, targets: tuple[str, ...]) -> bool:
    """True for a temporary file fastindex made for one of ``targets`` (file names)."""
    return (name.startswith(".") and name.endswith(TEMP_SUFFIX)
            and any(name.startswith(f".{t}.") for t in targets))

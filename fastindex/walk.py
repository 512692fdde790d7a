"""The one walk of a folder tree, under one policy.

Discovery (the folders above the sessions), the workers' session indexing and the
reporting of rejected sessions all list folders through ``walk``: the same skip
predicate (``IgnoreRules.ignores``), the same treatment of links, loops and entries
that are neither files nor folders, and listing errors returned as values beside the
entries, never raised.  A walk yields one ``Listing`` per folder (a generator step
per folder, not per file: per file, Python's generator overhead would show on a
million-file tree).

Folders come from a lister (``folderlister.FolderLister``): anything with ``entries(path, rel)``
giving ``os.DirEntry``-like objects (``name``, ``path``, ``is_dir``, ``is_file``,
``is_symlink``, ``stat``).  That is the seam where a second source of entries, such
as an object store's listing, plugs in.

Links to folders, when followed, are walked unless they lead back to a folder the walk
is inside (a loop, reported ``symlink_loop``, as ripgrep does): the test is against
the folder's ancestors, so it does not depend on the order of the walk, and a folder
linked from two places is walked from both, as ONE would find it from both.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastindex import problems as p
from fastindex.ignore import IgnoreRules

NO_RULES = IgnoreRules(litter=False)

EMPTY: list = []  # never appended to: a listing's default, shared

#: (folder entry, root-relative path) -> True to stop there: the folder is handed to the
#: caller (``Listing.stopped``) instead of walked.
Stop = Callable[[os.DirEntry, str], bool]


@dataclass(frozen=True)
class Policy:
    """What a walk skips and follows: the same for the parent's walk and the workers'."""

    follow_symlinks: bool = False
    rules: IgnoreRules = NO_RULES
    quiet_paths: frozenset[str] = frozenset()  # absolute paths neither rows nor problems
    #: files whose temporaries (``safefile.is_temporary``) at the root are passed over:
    #: a killed build's leftovers, which its next run settles
    quiet_temporaries: tuple[str, ...] = ()


class Listing:
    """One folder of a walk: its files, and what it did not walk, with reasons.

    A plain class with slots, not a dataclass: one is made per folder, and a dataclass's
    ``__init__`` with list factories is a visible part of a worker's time.
    """

    __slots__ = ("path", "rel", "sub", "files", "skipped", "stopped", "ignored", "error")

    def __init__(self, path: str, rel: str, sub: str, files: list = EMPTY,
                 skipped: list = EMPTY, stopped: list = EMPTY, ignored: int = 0,
                 error: OSError | None = None) -> None:
        self.path = path  # absolute
        self.rel = rel  # root-relative posix path ('' at the root)
        self.sub = sub  # relative to the walk's top, '' there, else ending in '/'
        self.files = files  # entries that are files (links followed)
        #: (name, reason) of entries neither files nor walked: links to folders not
        #: followed, loops, broken links, FIFOs, sockets, devices
        self.skipped = skipped
        self.stopped = stopped  # subfolders handed to the caller
        self.ignored = ignored  # entries the ignore rules passed over (a folder once)
        self.error = error  # the folder could not be listed: nothing else is set


def walk(top: str, rel: str, policy: Policy, lister, *, stop: Stop | None = None,
         ordered: bool = False) -> Iterator[Listing]:
    """Every folder below ``top`` (root-relative ``rel``), ``top`` included.

    ``ordered`` lists each folder in name order and walks depth first in that order;
    without it the order is the lister's (cheaper, for callers that sort later).
    """
    follow = policy.follow_symlinks
    ignores = policy.rules.ignores
    stack = [(top, rel, "", _ancestors(top, ()) if follow else ())]
    while stack:
        path, folder_rel, sub, ancestors = stack.pop()
        try:
            entries = lister.entries(path, folder_rel)
        except OSError as err:
            yield Listing(path, folder_rel, sub, error=err)
            continue
        if ordered:
            entries = sorted(entries, key=_name)
        files, skipped, stopped, below = [], [], [], []
        ignored = 0
        for entry in entries:
            name = entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if ignores(folder_rel, name, is_dir):
                ignored += 1
                continue
            if not is_dir:
                if entry.is_file():
                    files.append(entry)
                    continue
                reason = _not_a_file(entry, follow, ancestors)
                if reason is not None:
                    skipped.append((name, reason))
                    continue
            child_rel = f"{folder_rel}/{name}" if folder_rel else name
            if stop is not None and stop(entry, child_rel):
                stopped.append(entry)
            else:
                below.append((entry.path, child_rel, f"{sub}{name}/",
                              _ancestors(entry, ancestors) if follow else ()))
        yield Listing(path, folder_rel, sub, files, skipped, stopped, ignored)
        if below:
            stack.extend(reversed(below))


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _ancestors(folder: os.DirEntry | str, ancestors: tuple) -> tuple:
    """The real folders a walk is inside, this one added (for loops, when following)."""
    try:
        st = os.stat(folder) if isinstance(folder, str) else folder.stat()
    except OSError:
        return ancestors  # its listing will fail and be reported
    return (*ancestors, (st.st_dev, st.st_ino))


def _not_a_file(entry: os.DirEntry, follow: bool, ancestors: tuple) -> str | None:
    """Why an entry that is neither a folder nor a file is skipped; None to walk into it
    (a link to a folder, followed, that does not lead back to an ancestor)."""
    try:
        if entry.is_dir():  # a link to a folder
            if not follow:
                return p.SYMLINK_DIR
            st = entry.stat()
            return p.SYMLINK_LOOP if (st.st_dev, st.st_ino) in ancestors else None
        if entry.is_symlink():
            os.stat(entry.path)  # raises for a broken link
        return p.NOT_REGULAR
    except FileNotFoundError:
        return p.BROKEN_SYMLINK
    except OSError as err:
        return p.SYMLINK_LOOP if err.errno == errno.ELOOP else p.UNREADABLE

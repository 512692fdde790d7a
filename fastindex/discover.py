"""Stage 1 and 2: find the session folders under a root and group them into batches.

The parent walks only the folders above the sessions (labs, subjects, dates), which are
few; the files inside sessions are left to the workers.  A folder is a session when its
whole absolute path ends with ``(lab/Subjects/)?subject/date/number``, the test ONE
uses, so pointing the root at a lab or a subject folder still finds the lab.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastindex import alf
from fastindex import problems as p
from fastindex.problems import Problem


@dataclass(frozen=True)
class Session:
    """A session folder found on disk."""

    path: str  # absolute path, as the workers will open it
    rel: str  # posix path relative to the root ('' when the root is the session)
    parts: alf.SessionParts


@dataclass(frozen=True)
class Folder:
    """A unit of work for a worker: a session, or a date folder to find sessions in."""

    path: str
    rel: str
    parts: alf.SessionParts | None  # None for a date folder


@dataclass
class Discovery:
    """The problems a walk found beside its sessions."""

    problems: list[Problem] = field(default_factory=list)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _dir_key(entry: os.DirEntry | str) -> tuple[int, int]:
    st = os.stat(entry) if isinstance(entry, str) else entry.stat()
    return st.st_dev, st.st_ino


def iter_files(path: str, rel: str) -> Iterator[tuple[str, OSError | None]]:
    """Every file below ``path`` (root-relative names), for folders that are rejected whole.

    Listing errors come back as values beside the names, so the caller reports them.
    """
    stack = [(path, rel)]
    while stack:
        folder, folder_rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            yield folder_rel, err
            continue
        for entry in entries:
            entry_rel = _join(folder_rel, entry.name)
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, entry_rel))
            else:
                yield entry_rel, None


def discover(root: str | Path, found: Discovery, follow_symlinks: bool = False,
             ignore: frozenset[str] = frozenset(), max_batch: int = 64,
             hand_off_dates: bool = True, rel: str = "") -> Iterator[list[Folder]]:
    """Walk down from ``root`` to the session folders, in sorted order.

    Sessions are yielded as ``Folder`` units; problems are appended to ``found``.  With
    ``hand_off_dates`` the walk stops at folders named like dates: listing them is most
    of the walk's work, so they are yielded, unlisted, for the workers to finish.  Units
    are yielded in batches, one subject's at most ``max_batch`` at a time, as soon as each
    batch is complete, so workers start while the walk goes on.  Per subject keeps a
    worker's reads in one part of the tree; the split keeps one large subject from
    holding up the others.  ``ignore`` holds absolute paths of files to pass over
    silently (the tables themselves); ``rel`` is ``root`` relative to the indexed root.
    """
    root = os.fspath(root)  # a str: Path objects cost more than the listing, per session
    visited = {_dir_key(root)} if follow_symlinks else set()
    batch: list[Folder] = []
    subject = None

    def add(unit: Folder, key: str) -> Iterator[list[Folder]]:
        nonlocal batch, subject
        if batch and (key != subject or len(batch) == max_batch):
            yield batch
            batch = []
        subject = key
        batch.append(unit)

    stack = [(root, rel)]
    while stack:
        folder, rel = stack.pop()
        parts = alf.session_parts(folder if os.sep == "/" else Path(folder).as_posix())
        if parts is not None:
            if _is_possible(found, Session(folder, rel, parts)):
                subject_folder = os.path.dirname(os.path.dirname(folder))
                yield from add(Folder(folder, rel, parts), subject_folder)
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as err:
            found.problems.append(Problem(p.display_path(rel or "."), p.UNREADABLE, str(err)))
            continue
        for entry in entries:
            entry_rel = _join(rel, entry.name)
            if entry.is_dir(follow_symlinks=False):
                if hand_off_dates and alf.DATE_RE.fullmatch(entry.name):
                    yield from add(Folder(entry.path, entry_rel, None), folder)
                else:
                    stack.append((entry.path, entry_rel))
            elif entry.is_dir():  # a link to a folder
                problem = _follow(entry, follow_symlinks, visited)
                if problem:
                    found.problems.append(Problem(p.display_path(entry_rel), problem))
                else:
                    stack.append((entry.path, entry_rel))
            elif entry.path not in ignore:
                found.problems.append(Problem(p.display_path(entry_rel), p.OUTSIDE_SESSION))
    if batch:
        yield batch


def _follow(entry: os.DirEntry, follow_symlinks: bool, visited: set) -> str | None:
    """Why a linked folder is not walked, or None when it is."""
    if not follow_symlinks:
        return p.SYMLINK_DIR
    key = _dir_key(entry)
    if key in visited:
        return p.SYMLINK_LOOP
    visited.add(key)
    return None


def _is_possible(found: Discovery, session: Session) -> bool:
    """True unless the session's date does not exist; then its files are reported."""
    if alf.parse_date(session.parts.date) is not None:
        return True
    reject(found, session, p.IMPOSSIBLE_DATE, f"{session.parts.date} is not a calendar date")
    return False


def reject(found: Discovery, session: Session, reason: str, detail: str) -> None:
    """Report every file of a session folder that is not indexed, with ``reason``."""
    for file_rel, err in iter_files(session.path, session.rel):
        if err is not None:
            found.problems.append(Problem(p.display_path(file_rel), p.UNREADABLE, str(err)))
        else:
            found.problems.append(Problem(p.display_path(file_rel), reason, detail))


def same_number_warnings(sessions: list[Session]) -> list[Problem]:
    """Warn about folders like ``2`` and ``002`` that are the same session to a person."""
    groups = _groups(sessions, lambda s: (s.parts.lab, s.parts.subject, s.parts.date,
                                          int(s.parts.number)))
    warnings = []
    for group in groups:
        names = ", ".join(sessions[i].rel or "." for i in group)
        for i in group:
            warnings.append(Problem(p.display_path(sessions[i].rel or "."),
                                    p.SAME_SESSION_NUMBER,
                                    f"folders {names} are the same session number"))
    return warnings


def duplicate_ids(sessions: list[Session]) -> dict[int, str]:
    """Sessions whose ONE id another folder already has: position -> the folder kept.

    ``lab/subject/date/number`` is ONE's key; two folders that give the same one (a
    subject folder under two parents, without labs) cannot both be indexed.  The first
    in path order is kept.
    """
    return {i: sessions[group[0]].rel
            for group in _groups(sessions, lambda s: s.parts) for i in group[1:]}


def _groups(sessions: list[Session], key) -> list[list[int]]:
    """Positions of the sessions that share a key with another, each group in path
    order, groups in the order of their first path.

    One pass over all sessions; only the rare groups are sorted (sorting every session
    by path was a fifth of the parent's merge work at a million files).
    """
    by_key: dict = {}
    for i, session in enumerate(sessions):
        by_key.setdefault(key(session), []).append(i)
    groups = [sorted(g, key=lambda i: sessions[i].rel) for g in by_key.values() if len(g) > 1]
    return sorted(groups, key=lambda g: sessions[g[0]].rel)

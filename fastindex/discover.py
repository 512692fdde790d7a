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


@dataclass
class Discovery:
    """What the walk above the sessions found: sessions, and every problem beside them."""

    sessions: list[Session] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


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


def discover(root: Path, found: Discovery, follow_symlinks: bool = False,
             ignore: frozenset[str] = frozenset(), max_batch: int = 64) -> Iterator[list[int]]:
    """Walk down from ``root`` to the session folders, in sorted order.

    Sessions and problems are appended to ``found``; batches of session positions (one
    subject's sessions, at most ``max_batch``) are yielded as soon as each is complete,
    so workers start while the walk goes on.  A batch is one task for a worker: per
    subject keeps a worker's reads in one part of the tree, and the split keeps one large
    subject from holding up the others.  ``ignore`` holds absolute paths of files to
    pass over silently (the tables themselves).
    """
    seen_ids: dict[str, str] = {}
    visited = {_dir_key(str(root))} if follow_symlinks else set()
    batch: list[int] = []
    subject = None
    stack = [(str(root), "")]
    while stack:
        folder, rel = stack.pop()
        parts = alf.session_parts(folder if os.sep == "/" else Path(folder).as_posix())
        if parts is not None:
            if not _add_session(found, seen_ids, Session(folder, rel, parts)):
                continue
            here = os.path.dirname(os.path.dirname(folder))
            if batch and (here != subject or len(batch) == max_batch):
                yield batch
                batch = []
            subject = here
            batch.append(len(found.sessions) - 1)
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
    _warn_same_number(found)


def _follow(entry: os.DirEntry, follow_symlinks: bool, visited: set) -> str | None:
    """Why a linked folder is not walked, or None when it is."""
    if not follow_symlinks:
        return p.SYMLINK_DIR
    key = _dir_key(entry)
    if key in visited:
        return p.SYMLINK_LOOP
    visited.add(key)
    return None


def _add_session(found: Discovery, seen_ids: dict[str, str], session: Session) -> bool:
    """Keep a session unless its date is impossible or its id is already taken."""
    reason, detail = None, ""
    if alf.parse_date(session.parts.date) is None:
        reason, detail = p.IMPOSSIBLE_DATE, f"{session.parts.date} is not a calendar date"
    elif session.parts.string_id in seen_ids:
        reason = p.DUPLICATE_SESSION
        detail = f"same session id as {seen_ids[session.parts.string_id] or '.'}"
    if reason is None:
        seen_ids[session.parts.string_id] = session.rel
        found.sessions.append(session)
        return True
    for file_rel, err in iter_files(session.path, session.rel):
        if err is not None:
            found.problems.append(Problem(p.display_path(file_rel), p.UNREADABLE, str(err)))
        else:
            found.problems.append(Problem(p.display_path(file_rel), reason, detail))
    return False


def _warn_same_number(found: Discovery) -> None:
    """Warn about folders like ``2`` and ``002`` that are the same session to a person."""
    by_number: dict[tuple, list[Session]] = {}
    for s in found.sessions:
        key = (s.parts.lab, s.parts.subject, s.parts.date, int(s.parts.number))
        by_number.setdefault(key, []).append(s)
    for group in by_number.values():
        if len(group) > 1:
            names = ", ".join(s.rel or "." for s in group)
            for s in group:
                found.warnings.append(Problem(
                    p.display_path(s.rel or "."), p.SAME_SESSION_NUMBER,
                    f"folders {names} are the same session number"))

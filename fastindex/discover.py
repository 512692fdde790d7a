"""Stage 1 and 2: find the session folders under a root and group them into batches.

The parent walks only the folders above the sessions (labs, subjects, dates), which are
few; the files inside sessions are left to the workers.  A folder is a session when its
whole absolute path ends with ``(lab/Subjects/)?subject/date/number``, the test ONE
uses.  It is indexed only where ONE will look for it: at ``[lab/Subjects/]subject/
date/NNN`` under the root (``SessionParts.folder``); elsewhere its files are reported
``unloadable_session``, with the folder ONE would look in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastindex import alf
from fastindex import problems as p
from fastindex.ignore import IgnoreRules
from fastindex.problems import Problem
from fastindex.safefile import is_temporary
from fastindex.scan import IoThreads, Scanner

NO_RULES = IgnoreRules(litter=False)
AUTOMATIC = IoThreads()


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
    """The problems a walk found beside its sessions, and the sessions ONE cannot load
    (their files are among the problems; ``fastindex fix`` moves the folders)."""

    problems: list[Problem] = field(default_factory=list)
    unloadable: list[Session] = field(default_factory=list)
    ignored: int = 0  # entries the ignore rules passed over (a folder counts once)


def _dir_key(entry: os.DirEntry | str) -> tuple[int, int]:
    st = os.stat(entry) if isinstance(entry, str) else entry.stat()
    return st.st_dev, st.st_ino


def iter_files(path: str, rel: str, found: Discovery, rules: IgnoreRules = NO_RULES
               ) -> Iterator[tuple[str, OSError | None]]:
    """Every file below ``path`` (root-relative names), for folders that are rejected whole.

    Listing errors come back as values beside the names, so the caller reports them;
    ignored entries are counted in ``found``.
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
        for entry, entry_rel, is_dir in kept(entries, folder_rel, rules, found):
            if is_dir:
                stack.append((entry.path, entry_rel))
            else:
                yield entry_rel, None


def kept(entries: list[os.DirEntry], rel: str, rules: IgnoreRules, found: Discovery
         ) -> Iterator[tuple[os.DirEntry, str, bool]]:
    """The entries of the folder at root-relative ``rel`` that ``rules`` keep, each with
    its root-relative path and whether it is a folder (not following links); the others
    are counted in ``found``.  The one skip predicate of the walks is
    ``IgnoreRules.ignores``: the workers' session loop calls it too."""
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        if rules.ignores(rel, entry.name, is_dir):
            found.ignored += 1
        else:
            yield entry, alf.join(rel, entry.name), is_dir


@dataclass(frozen=True)
class Policy:
    """What a walk skips and follows: the same for the parent's walk and the workers'."""

    follow_symlinks: bool = False
    rules: IgnoreRules = NO_RULES
    quiet_paths: frozenset[str] = frozenset()  # absolute paths neither rows nor problems
    #: files whose temporaries (``safefile.is_temporary``) at the root are passed over:
    #: a killed build's leftovers, which its next run settles
    quiet_temporaries: tuple[str, ...] = ()


def discover(root: str | Path, found: Discovery, policy: Policy = Policy(), *,
             max_batch: int = 64, hand_off_dates: bool = True, rel: str = "",
             io: IoThreads = AUTOMATIC, scanner: Scanner | None = None
             ) -> Iterator[list[Folder]]:
    """Walk down from ``root`` to the session folders, in sorted order.

    Sessions are yielded as ``Folder`` units; problems are appended to ``found``.  With
    ``hand_off_dates`` the walk stops at folders named like dates: listing them is most
    of the walk's work, so they are yielded, unlisted, for the workers to finish.  Units
    are yielded in batches, one subject's at most ``max_batch`` at a time, as soon as each
    batch is complete, so workers start while the walk goes on.  Per subject keeps a
    worker's reads in one part of the tree; the split keeps one large subject from
    holding up the others.  ``policy.quiet_paths`` holds absolute paths of files to pass
    over silently (the tables themselves); ``rel`` is ``root`` relative to the indexed
    root; entries that ``policy.rules`` ignore are counted in ``found`` and not walked.
    The folders are listed by ``scanner`` (one of this walk's own, with ``io`` threads,
    if None), which lists ahead of the walk down to the date folders it hands off.
    """
    root = os.fspath(root)  # a str: Path objects cost more than the listing, per session
    rules, follow_symlinks = policy.rules, policy.follow_symlinks
    if scanner is None:
        def descend(child: str, name: str) -> bool:
            return not (hand_off_dates and alf.DATE_RE.fullmatch(name)) and not (
                rules.patterns and rules.matches(child, True))

        with Scanner(io, descend, root) as own:
            own.start(root, rel)
            yield from discover(root, found, policy, max_batch=max_batch,
                                hand_off_dates=hand_off_dates, rel=rel, scanner=own)
        return
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
            session = Session(folder, rel, alf.rooted_parts(parts, rel))
            if _is_possible(found, session, rules) and _is_loadable(found, session, rules):
                subject_folder = os.path.dirname(os.path.dirname(folder))
                yield from add(Folder(folder, rel, session.parts), subject_folder)
            continue
        try:
            entries = sorted(scanner.entries(folder, rel), key=lambda e: e.name, reverse=True)
        except OSError as err:
            found.problems.append(Problem(p.display_path(rel or "."), p.UNREADABLE, str(err)))
            continue
        for entry, entry_rel, is_dir in kept(entries, rel, rules, found):
            if is_dir:
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
            elif entry.path not in policy.quiet_paths and not (
                    folder == root and is_temporary(entry.name, policy.quiet_temporaries)):
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


def _is_possible(found: Discovery, session: Session, rules: IgnoreRules) -> bool:
    """True unless the session's date does not exist; then its files are reported."""
    if alf.parse_date(session.parts.date) is not None:
        return True
    reject(found, session, rules, p.IMPOSSIBLE_DATE,
           f"{session.parts.date} is not a calendar date")
    return False


def _is_loadable(found: Discovery, session: Session, rules: IgnoreRules) -> bool:
    """True when ONE looks for the session in its own folder; else its files are reported.

    Each session is checked on its own path, so ``2`` beside ``002`` needs no
    cross-session pass: ``002`` is where ONE looks, and ``2`` is reported.
    """
    expected = session.parts.folder
    if expected == session.rel:
        return True
    if p.has_invalid_encoding(session.rel):  # ONE's pattern read parts out of its name
        reject(found, session, rules, p.INVALID_ENCODING,
               "a folder of this session is not UTF-8: rename it")
        return False
    found.unloadable.append(session)
    root = session.path[: len(session.path) - len(session.rel)]
    taken = ", another folder: its files would load instead" if os.path.isdir(
        os.path.join(root, expected)) else ""
    reject(found, session, rules, p.UNLOADABLE_SESSION,
           f"ONE looks for this session in {expected}{taken}")
    return False


def reject(found: Discovery, session: Session, rules: IgnoreRules, reason: str,
           detail: str) -> None:
    """Report every file of a session folder that is not indexed, with ``reason``
    (the folder itself when it holds no file, so an empty session is not lost)."""
    before = len(found.problems)
    for file_rel, err in iter_files(session.path, session.rel, found, rules):
        if err is not None:
            found.problems.append(Problem(p.display_path(file_rel), p.UNREADABLE, str(err)))
        else:
            found.problems.append(Problem(p.display_path(file_rel), reason, detail))
    if len(found.problems) == before:
        found.problems.append(Problem(p.display_path(session.rel or "."), reason, detail))

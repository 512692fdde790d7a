"""Stage 1 and 2: find the session folders under a root and group them into batches.

The parent walks only the folders above the sessions (labs, subjects, dates), which are
few; the files inside sessions are left to the workers.  A folder is a session when its
whole absolute path ends with ``(lab/Subjects/)?subject/date/number``, the test ONE
uses.  It is indexed only where ONE will look for it: at ``[lab/Subjects/]subject/
date/NNN`` under the root (``SessionParts.folder``); elsewhere its files are reported
``unloadable_session``, with the folder ONE would look in.  A folder of this walk that
cannot be listed is a problem, and also ``Discovery.unlisted`` unless its permissions
or a path too long are why (``TREE_FACTS``): the commands that write tables stop on it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastindex import alf, walk
from fastindex import problems as p
from fastindex.folderlister import IoThreads
from fastindex.problems import Problem
from fastindex.safefile import is_temporary
from fastindex.walk import Policy

if TYPE_CHECKING:
    from fastindex.index import IndexPlan
    from fastindex.root import Descend, Lister

__all__ = ["Discovery", "Folder", "Session", "discover", "reject"]

DEFAULT_POLICY = Policy()


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
    #: folders above the sessions whose listing failed (also among ``problems``), other
    #: than for the tree's own reasons (``TREE_FACTS``): their sessions are not known, so
    #: the commands that write tables refuse to (``Engine.index``'s ``whole``)
    unlisted: list[Problem] = field(default_factory=list)


def discover(root: str | Path, found: Discovery, policy: Policy = DEFAULT_POLICY, *,
             max_batch: int = 64, hand_off_dates: bool = True, rel: str = "",
             hand_off_subjects: bool = False,
             lister: Lister | None = None) -> Iterator[list[Folder]]:
    """Walk down from ``root`` to the session folders, in sorted order.

    Sessions are yielded as ``Folder`` units; problems are appended to ``found``.  With
    ``hand_off_dates`` the walk stops at folders named like dates: listing them is most
    of the walk's work, so they are yielded, unlisted, for the workers to finish.  Units
    are yielded in batches of at most ``max_batch``, in the walk's order (across
    subjects: a task per small subject costs more in the round trip between processes
    than in its folders), as soon as each batch is complete, so workers start while the
    walk goes on.  With ``hand_off_subjects`` (a bucket: see ``Root.hands_off_subjects``)
    the walk stops one level higher, at the folders in a ``Subjects`` folder, batched
    ``SUBJECTS_PER_BATCH`` at a time.  ``policy.quiet_paths`` holds
    absolute paths of files to pass over silently (the tables themselves); ``rel`` is
    ``root`` relative to the indexed root; entries that ``policy.rules`` ignore are
    counted in ``found`` and not walked.  The folders are listed by ``lister``; without
    one, ``root`` is a local folder, listed ahead of the walk when its storage is slow.
    """
    root = os.fspath(root)  # a str: Path objects cost more than the listing, per session
    if lister is None:
        from fastindex.root import LocalRoot

        with LocalRoot(Path(root)).lister(IoThreads(), _descend(
                policy, hand_off_dates, hand_off_subjects)) as own:
            own.start(root, rel)
            yield from discover(root, found, policy, max_batch=max_batch,
                                hand_off_dates=hand_off_dates, rel=rel,
                                hand_off_subjects=hand_off_subjects, lister=own)
        return
    batch: list[Folder] = []

    def add(unit: Folder, most: int = max_batch) -> Iterator[list[Folder]]:
        nonlocal batch
        if len(batch) >= most:
            yield batch
            batch = []
        batch.append(unit)

    def session(path: str, rel: str, parts: alf.SessionParts) -> Iterator[list[Folder]]:
        session = Session(path, rel, alf.rooted_parts(parts, rel))
        if _is_possible(found, session, policy, lister) and _is_loadable(found, session, policy,
                                                                          lister):
            yield from add(Folder(path, rel, session.parts))

    if (parts := _session_parts(root)) is not None:
        yield from session(root, rel, parts)
        return

    sessions: dict[str, alf.SessionParts] = {}  # stopped at, by path: parsed once

    def stop(entry: os.DirEntry, entry_rel: str) -> bool:
        if hand_off_dates and alf.DATE_RE.fullmatch(entry.name):
            return True
        if hand_off_subjects and _in_subjects(entry_rel):
            return True
        parts = _session_parts(entry.path)
        if parts is not None:
            sessions[entry.path] = parts
        return parts is not None

    for listing in walk.walk(root, rel, policy, lister, stop=stop, ordered=True):
        found.ignored += listing.ignored
        if listing.error is not None:
            unreadable = p.problem(listing.rel or ".", p.UNREADABLE, str(listing.error))
            found.problems.append(unreadable)
            if listing.rel == "" or listing.error.errno not in TREE_FACTS:
                found.unlisted.append(unreadable)
            continue
        for entry in listing.stopped:
            entry_rel = alf.join(listing.rel, entry.name)
            if (parts := sessions.pop(entry.path, None)) is not None:
                yield from session(entry.path, entry_rel, parts)
            elif hand_off_subjects and _in_subjects(entry_rel):  # a subject, unlisted
                yield from add(Folder(entry.path, entry_rel, None), SUBJECTS_PER_BATCH)
            else:  # a date folder, handed off unlisted
                yield from add(Folder(entry.path, entry_rel, None))
        _outside_sessions(found, listing, policy, listing.rel == "")
    if batch:
        yield batch


#: Why a folder below the root may fail to list that is a fact of the tree, the same on
#: every run (reported ``unreadable``, the rest indexed): its permissions, a path too
#: long for the system.  Any other failure (EIO on a network file system, a bucket's
#: error after boto3's retries, a folder gone during the walk) says the listing, not
#: the tree, is incomplete.
TREE_FACTS = frozenset({errno.EACCES, errno.EPERM, errno.ENAMETOOLONG})


def discover_root(plan: IndexPlan, found: Discovery) -> Iterator[list[Folder]]:
    """``discover`` of a build's root, listed ahead (down to the date folders) by the
    root's own lister."""
    top = plan.root.top
    subjects = plan.root.hands_off_subjects
    with plan.root.lister(plan.io, _descend(plan.policy, True, subjects), top) as lister:
        lister.start(top, "")
        yield from discover(top, found, plan.policy, lister=lister,
                            hand_off_subjects=subjects)


#: Subject folders in a worker's batch when subjects are handed off: enough for
#: ranges in flight in each worker from the start (``BucketLister.start_all``), few
#: enough that a tree of a hundred subjects gives every worker two tasks (measured
#: against 8 and 32 on 74k keys of 124 and of 736 subjects: see the README).
SUBJECTS_PER_BATCH = 16


def _in_subjects(rel: str) -> bool:
    """Whether the root-relative ``rel`` is a folder in a ``Subjects`` folder (a
    subject, as ONE's session pattern reads ``lab/Subjects/subject``)."""
    parent = rel.rpartition("/")[0]
    return parent.rpartition("/")[2] == "Subjects"


def _descend(policy: Policy, hand_off_dates: bool, hand_off_subjects: bool = False
             ) -> Descend:
    """Which subfolders a walk to the sessions lists ahead: not the ignored ones, nor
    the date folders or subjects it hands off."""
    rules = policy.rules

    def descend(child: str, name: str) -> bool:
        return not (hand_off_dates and alf.DATE_RE.fullmatch(name)) and not (
            hand_off_subjects and _in_subjects(child)) and not (
            rules.patterns and rules.matches(child, True))

    return descend


def _session_parts(path: str) -> alf.SessionParts | None:
    return alf.session_parts(path if os.sep == "/" else Path(path).as_posix())


def _outside_sessions(found: Discovery, listing: walk.Listing, policy: walk.Policy,
                      at_root: bool) -> None:
    """Report the entries of a folder above the sessions: files and FIFOs there are
    ``outside_session``, links to folders not walked keep their reason; the tables
    themselves and, at the root, a killed build's temporaries are passed over."""
    for name, reason in [(e.name, p.OUTSIDE_SESSION) for e in listing.files] + [
            (name, reason if reason in FOLDER_REASONS else p.OUTSIDE_SESSION)
            for name, reason in listing.skipped]:
        path = os.path.join(listing.path, name)
        if path in policy.quiet_paths or (
                at_root and is_temporary(name, policy.quiet_temporaries)):
            continue
        found.problems.append(p.problem(alf.join(listing.rel, name), reason))


#: Reasons of skipped entries that are about folders, kept outside sessions too.
FOLDER_REASONS = frozenset({p.SYMLINK_DIR, p.SYMLINK_LOOP, p.UNREADABLE})


def _is_possible(found: Discovery, session: Session, policy: walk.Policy, lister: Lister
                 ) -> bool:
    """True unless the session's date does not exist; then its files are reported."""
    if alf.parse_date(session.parts.date) is not None:
        return True
    reject(found, session, policy, p.IMPOSSIBLE_DATE,
           f"{session.parts.date} is not a calendar date", lister)
    return False


def _is_loadable(found: Discovery, session: Session, policy: walk.Policy, lister: Lister
                 ) -> bool:
    """True when ONE looks for the session in its own folder; else its files are reported.

    Each session is checked on its own path, so ``2`` beside ``002`` needs no
    cross-session pass: ``002`` is where ONE looks, and ``2`` is reported.
    """
    expected = session.parts.folder
    if expected == session.rel:
        return True
    if p.has_invalid_encoding(session.rel):  # ONE's pattern read parts out of its name
        reject(found, session, policy, p.INVALID_ENCODING,
               "a folder of this session is not UTF-8: rename it", lister)
        return False
    found.unloadable.append(session)
    root = session.path[: len(session.path) - len(session.rel)]
    taken = ", another folder: its files would load instead" if lister.is_folder(
        os.path.join(root, expected)) else ""
    reject(found, session, policy, p.UNLOADABLE_SESSION,
           f"ONE looks for this session in {expected}{taken}", lister)
    return False


def reject(found: Discovery, session: Session, policy: walk.Policy, reason: str,
           detail: str, lister: Lister) -> None:
    """Report every file of a session folder that is not indexed, with ``reason``
    (the folder itself when it holds no file, so an empty session is not lost)."""
    before = len(found.problems)
    for listing in walk.walk(session.path, session.rel, policy, lister):
        found.ignored += listing.ignored
        if listing.error is not None:
            found.problems.append(p.problem(listing.rel or ".", p.UNREADABLE,
                                            str(listing.error)))
            continue
        for name in [e.name for e in listing.files] + [name for name, _ in listing.skipped]:
            found.problems.append(p.problem(alf.join(listing.rel, name), reason, detail))
    if len(found.problems) == before:
        found.problems.append(p.problem(session.rel or ".", reason, detail))

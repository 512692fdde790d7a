"""Stage 3: index a batch of sessions inside a worker process.

A worker first finds the sessions in the date folders it was handed (the discover
stage's walk, finished here, in parallel), then walks each session (any collection
depth, ``#revision#`` folders), keeps the files whose session-relative path is ALF,
records their size, id and digests, and returns two record batches, the datasets and
the problems, as Arrow buffers (``buffers.py``).  Nothing per-file crosses the process
boundary but Arrow columns, and only the columns the merge reads.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastindex import alf, buffers, hashing
from fastindex import problems as p
from fastindex.buffers import RawBatch
from fastindex.discover import Discovery, Folder, Session, discover
from fastindex.folderlister import IoThreads
from fastindex.walk import Policy, walk

if TYPE_CHECKING:
    from fastindex.root import Lister, Root

NO_READ_PERMISSION = "no read permission for anyone (mode {:03o})"


@dataclass(frozen=True)
class IndexPlan:
    """Everything a worker needs, derived once per build from its spec and settings: the
    same picklable object goes with every batch."""

    root: Root
    namespace: uuid.UUID | None  # None: ids are ONE's strings (rel_path)
    policy: Policy  # what every walk skips and follows
    algorithms: tuple[str, ...] = ()  # digests to take, from hashing.ALGORITHMS
    defer_size: int = 64 << 20  # files this large are hashed as tasks of their own
    io: IoThreads = IoThreads()  # listings in flight per process


def session_eid(string_id: str, namespace: uuid.UUID | None) -> str:
    """A session's id: uuid3 of its ONE string id (``str(uuid.uuid3(namespace,
    string_id))``, written without a ``UUID`` object), or the string id itself."""
    if not namespace:
        return string_id
    d = bytearray(hashlib.md5(namespace.bytes + string_id.encode()).digest())
    d[6] = (d[6] & 0x0F) | 0x30  # version 3
    d[8] = (d[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class SessionColumns:
    """A batch's sessions as one list per field, in the batch's order: what crosses the
    process boundary (lists of strings pickle in C; an object per session does not)."""

    path: list[str] = field(default_factory=list)  # absolute, as the workers open it
    rel: list[str] = field(default_factory=list)  # relative to the root
    lab: list[str] = field(default_factory=list)  # '' without a lab/Subjects part
    subject: list[str] = field(default_factory=list)
    date: list[str] = field(default_factory=list)
    number: list[str] = field(default_factory=list)
    eid: list[str] = field(default_factory=list)  # the session's id

    def __len__(self) -> int:
        return len(self.eid)

    @classmethod
    def joined(cls, parts: list[SessionColumns]) -> SessionColumns:
        """The sessions of several batches, in turn."""
        return cls(*([v for part in parts for v in getattr(part, name)]
                     for name in _SESSION_FIELDS))

    def session(self, i: int) -> Session:
        """The ``i``-th session, as an object."""
        return Session(self.path[i], self.rel[i], alf.SessionParts(
            self.lab[i], self.subject[i], self.date[i], self.number[i]))


_SESSION_FIELDS = ("path", "rel", "lab", "subject", "date", "number", "eid")


@dataclass
class BatchResult:
    """What a worker returns for one batch: Arrow columns, and the few large files left."""

    datasets: RawBatch  # rows in session order: ``rows`` of each session in turn
    problems: RawBatch
    sessions: SessionColumns
    rows: list[int]  # datasets rows of each session
    #: (session, rel_path, absolute path, what the listing said of it)
    deferred: list[tuple[int, str, str, hashing.Listed]]
    nbytes: int  # bytes hashed, for a progress bar in bytes (deferred files not included)
    ignored: int  # entries the ignore rules passed over
    #: folders above the sessions that could not be listed (``Discovery.unlisted``)
    unlisted: list[p.Problem] = field(default_factory=list)


def index_sessions(units: list[Folder], plan: IndexPlan) -> BatchResult:
    """Index a batch of sessions and date folders: datasets and problems in Arrow.

    With hashing, files of ``defer_size`` bytes or more are not hashed here but listed
    in ``deferred``, so that one huge file becomes a task of its own.
    """
    found = Discovery()
    sessions: list[Folder] = []  # each with its parts
    rules = plan.policy.rules

    def descend(child: str, name: str) -> bool:
        return not (rules.patterns and rules.matches(child, True))

    with plan.root.lister(plan.io, descend, units[0].path, stat_files=True) as lister:
        lister.start_all([(unit.path, unit.rel) for unit in units])  # listed ahead
        for unit in units:
            if unit.parts is not None:
                sessions.append(unit)
                continue
            sessions.extend(s for batch in discover(
                unit.path, found, plan.policy, hand_off_dates=False, rel=unit.rel,
                lister=lister) for s in batch if s.parts is not None)  # all: no date handed
        result = BatchIndexer(plan, lister, found).index(sessions)
    result.unlisted = found.unlisted
    return result


class BatchIndexer:
    """Indexes one batch's sessions: owns the batch's growing columns (turned into Arrow
    once, at the end), its read buffer and its lister."""

    def __init__(self, plan: IndexPlan, lister: Lister, found: Discovery) -> None:
        self.plan = plan
        self.lister = lister
        self.rel_path: list[bytes] = []
        self.file_size: list[int] = []
        self.mtime_ns: list[int] = []
        self.id_md5: list[bytes] = []
        self.etag: list[bytes] = []  # a bucket's objects' ETags
        self.digests: dict[str, list[str]] = {a: [] for a in plan.algorithms}
        self.rows: list[int] = []  # rows of each session so far
        self.problems: list[tuple] = list(found.problems)
        self.deferred: list[tuple[int, str, str, hashing.Listed]] = []
        self.nbytes = 0  # bytes hashed here (deferred files count where they are hashed)
        self.ignored = found.ignored
        #: (row, digest future, session position, session rel, rel_path, size)
        self.hashing: list[tuple] = []
        self.buffer = bytearray(hashing.CHUNK if plan.algorithms else 0)

    def index(self, sessions: list[Folder]) -> BatchResult:
        """Every session's rows and problems, as a worker returns them (``sessions``: units
        with their parts)."""
        plan = self.plan
        parts = [s.parts for s in sessions if s.parts is not None]
        if len(parts) < len(sessions):
            raise ValueError("a date folder among the sessions to index")
        eids = [session_eid(found.string_id, plan.namespace) for found in parts]
        for position, session in enumerate(sessions):
            before = len(self.rel_path)
            self._index_session(position, session, eids[position])
            self.rows.append(len(self.rel_path) - before)
        if self.hashing:
            self._collect_digests()
        datasets = buffers.dataset_batch(
            self.rel_path, self.file_size, self.mtime_ns,
            self.id_md5 if plan.namespace else None, self.digests,
            self.etag if plan.root.keeps_etags else None)
        lab, subject, date, number = map(list, zip(*parts)) if parts else ([], [], [], [])
        columns = SessionColumns([s.path for s in sessions], [s.rel for s in sessions], lab,
                                 subject, date, number, eids)
        return BatchResult(datasets, buffers.problem_batch(self.problems), columns,
                           self.rows, self.deferred, self.nbytes, self.ignored)

    def _index_session(self, position: int, session: Folder, eid: str) -> None:
        # A dataset's id is uuid3(namespace, 'eid/rel_path'); the worker computes the md5
        # (per-row Python), the merge formats all of them at once.
        plan = self.plan
        id_prefix = (plan.namespace.bytes + f"{eid}/".encode()) if plan.namespace else None
        link_prefix = plan.root.link_prefix()
        etags = plan.root.keeps_etags
        problems = self.problems
        top = session.rel
        for listing in walk(session.path, top, plan.policy, self.lister):
            self.ignored += listing.ignored
            if listing.error is not None:
                problems.append(_problem(top, listing.sub[:-1] or ".", p.UNREADABLE,
                                         str(listing.error)))
                continue
            prefix = listing.sub
            for name, reason in listing.skipped:
                problems.append(_problem(top, prefix + name, reason))
            collection_ok = alf.is_collection_prefix(prefix)
            for entry in listing.files:
                name = entry.name
                rel_path = prefix + name
                if not alf.is_dataset_name(name):
                    problems.append(_problem(top, rel_path, _name_reason(name)))
                    continue
                if link_prefix and entry.is_symlink():  # indexed, and reported: a warning
                    target = os.path.realpath(entry.path)
                    if not target.startswith(link_prefix):
                        problems.append(_problem(top, rel_path, p.LINK_OUTSIDE_ROOT,
                                                 f"a link to {target}"))
                if not collection_ok:
                    problems.append(_problem(
                        top, rel_path, _name_reason(prefix, p.BAD_COLLECTION),
                        f"'{p.display_path(prefix[:-1])}' is not a collection"))
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError as err:
                    problems.append(_problem(top, rel_path, p.VANISHED, str(err)))
                    continue
                except OSError as err:
                    problems.append(_problem(top, rel_path, *p.stat_problem(err)))
                    continue
                if not st.st_mode & 0o444:  # root reads it, ONE's users cannot
                    problems.append(_problem(top, rel_path, p.UNREADABLE,
                                             NO_READ_PERMISSION.format(st.st_mode & 0o777)))
                    continue
                if plan.algorithms and not self._add_digests(entry.path, st, rel_path,
                                                             position, top):
                    continue
                encoded = rel_path.encode()
                self.rel_path.append(encoded)
                self.file_size.append(st.st_size)
                self.mtime_ns.append(st.st_mtime_ns)
                if etags:
                    self.etag.append(st.etag.encode())
                if id_prefix:
                    self.id_md5.append(hashlib.md5(id_prefix + encoded).digest())

    def _add_digests(self, path: str, st: os.stat_result, rel_path: str, position: int,
                     top: str) -> bool:
        """Hash one file into the columns, or defer it when large; False if it could not
        be read.

        On slow storage (the lister's pool has threads) the file is hashed on them, so
        that many opens are in flight; its row is kept, and dropped by
        ``_collect_digests`` if the read fails.  The read must find the file as listed
        (its mtime), else the row would pair the listing's size and mtime with the
        digest of another version.
        """
        plan = self.plan
        size = st.st_size
        if size >= plan.defer_size:
            self.deferred.append((position, rel_path, path, hashing.Listed.of(st)))
            digests = dict.fromkeys(plan.algorithms, "")
        elif (future := self.lister.pool.submit(_digest_in_thread, plan.root, path,
                                                plan.algorithms, st)) is not None:
            self.hashing.append((len(self.rel_path), future, position, top, rel_path, size))
            digests = dict.fromkeys(plan.algorithms, "")
        else:
            outcome: tuple[int, dict[str, str]] | OSError
            try:
                outcome = plan.root.digest(path, plan.algorithms, self.buffer, st)
            except OSError as err:
                outcome = err
            problem = read_problem(outcome, size)
            if problem:
                self.problems.append(_problem(top, rel_path, *problem))
                return False
            assert not isinstance(outcome, OSError)  # read_problem names every error
            digests = outcome[1]
            self.nbytes += size
        for algorithm, digest in digests.items():
            self.digests[algorithm].append(digest)
        return True

    def _collect_digests(self) -> None:
        """Put the digests hashed on threads in their rows; drop the rows whose file could
        not be read (reported, as when hashed in line)."""
        algorithms = self.plan.algorithms
        dropped = set()
        for row, future, position, top, rel_path, size in self.hashing:
            outcome = future.result()
            problem = read_problem(outcome, size)
            if problem:
                self.problems.append(_problem(top, rel_path, *problem))
                dropped.add(row)
                self.rows[position] -= 1
                continue
            self.nbytes += size
            for algorithm in algorithms:
                self.digests[algorithm][row] = outcome[1][algorithm]
        self.hashing = []
        if dropped:
            keep = [i not in dropped for i in range(len(self.rel_path))]
            for name in ("rel_path", "file_size", "mtime_ns", "id_md5", "etag"):
                column = getattr(self, name)
                if column:
                    setattr(self, name, [v for v, k in zip(column, keep) if k])
            for algorithm in algorithms:
                self.digests[algorithm] = [v for v, k in zip(self.digests[algorithm], keep)
                                           if k]


def hash_files(root: Root, paths: list[str], algorithms: tuple[str, ...],
               listed: list[hashing.Listed | None] | None = None
               ) -> list[tuple[int, dict[str, str]] | OSError]:
    """Hash files (or a bucket's objects) as a task of their own: (bytes read, digests),
    or the error, for each.

    Used for the large files a batch left, and for the files ``update`` found changed.
    ``listed``: what the listing said of each (``hashing.Listed``): a file is read no
    further than its listed size plus one byte and must still be as listed
    (``ChangedWhileReading`` otherwise), so a file swapped for a huge one since the walk
    costs one byte more than its row, not its new size.
    """
    buffer = bytearray(hashing.CHUNK)
    results: list = []
    for path, known in zip(paths, listed or [None] * len(paths)):
        try:
            results.append(root.digest(path, algorithms, buffer, known))
        except OSError as err:
            results.append(err)
    return results


def read_problem(outcome: tuple[int, dict] | OSError, size: int) -> tuple[str, str] | None:
    """Why a file's read does not give its row's digests, or None."""
    if isinstance(outcome, FileNotFoundError):
        return p.VANISHED, str(outcome)
    if isinstance(outcome, hashing.ChangedWhileReading):
        return p.CHANGED, outcome.strerror or ""
    if isinstance(outcome, hashing.NotRegularFile):
        return p.NOT_REGULAR, "no longer a regular file when read"
    if isinstance(outcome, OSError):
        return p.UNREADABLE, str(outcome)
    if outcome[0] != size:
        return p.CHANGED, f"{size} bytes when listed, {outcome[0]} when read"
    return None


_thread_buffers = threading.local()


def _digest_in_thread(root: Root, path: str, algorithms: tuple[str, ...], st
                      ) -> tuple[int, dict] | OSError:
    buffer = getattr(_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = _thread_buffers.buffer = bytearray(hashing.CHUNK)
    try:
        return root.digest(path, algorithms, buffer, st)
    except OSError as err:
        return err


def _name_reason(name: str, default: str = p.NOT_ALF_NAME) -> str:
    return p.INVALID_ENCODING if p.has_invalid_encoding(name) else default


def _problem(top: str, rel_path: str, reason: str, detail: str = "") -> p.Problem:
    """A problem of the file ``rel_path`` of the session at root-relative ``top``."""
    return p.problem(alf.join(top, rel_path), reason, detail)

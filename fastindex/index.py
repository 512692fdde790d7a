"""Stage 3: index a batch of sessions inside a worker process.

A worker first finds the sessions in the date folders it was handed (the discover
stage's walk, finished here, in parallel), then walks each session with ``os.scandir``
(any collection depth, ``#revision#`` folders), keeps the files whose session-relative
path is ALF, records their size, id and digests, and returns two record batches, the
datasets and the problems, as Arrow buffers (``buffers.py``).  Nothing per-file crosses
the process boundary but Arrow columns.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from dataclasses import dataclass, field

from fastindex import alf, buffers, hashing
from fastindex import problems as p
from fastindex.bucket import BucketRoot
from fastindex.buffers import RawBatch
from fastindex.discover import Discovery, Folder, Session, discover
from fastindex.ignore import IgnoreRules
from fastindex.scan import IoPool, IoThreads, Lister, Source
from fastindex.walk import NO_RULES, Policy, walk

NO_READ_PERMISSION = "no read permission for anyone (mode {:03o})"


@dataclass(frozen=True)
class IndexOptions:
    """What a worker needs to know; the same object goes to every batch."""

    namespace: uuid.UUID | None  # None: ids are ONE's strings (rel_path)
    follow_symlinks: bool = False
    hashes: tuple[str, ...] = ()  # from hashing.ALGORITHMS
    defer_size: int = 64 << 20  # files this large are hashed as tasks of their own
    rules: IgnoreRules = NO_RULES  # what is not data
    io: IoThreads = IoThreads()  # listings in flight per worker
    #: the root's real path and a separator: file links that resolve elsewhere are reported
    root: str = ""
    bucket: BucketRoot | None = None  # the tree is a bucket's keys (bucket.py)


@dataclass(frozen=True)
class SessionTask:
    """One session for a worker: where it is and the id its datasets hang from."""

    position: int  # in the batch's session list
    path: str
    rel: str  # root-relative posix path, for problem reports
    eid: str


def session_eid(string_id: str, namespace: uuid.UUID | None) -> str:
    """A session's id: uuid3 of its ONE string id, or the string id itself."""
    return str(uuid.uuid3(namespace, string_id)) if namespace else string_id


@dataclass
class _Columns:
    """Growing columns for one batch; turned into Arrow once at the end."""

    session: list
    rel_path: list  # UTF-8 bytes
    file_size: list
    mtime_ns: list
    id_md5: list
    problems: list
    digests: dict  # algorithm -> list of hex digests ('' where deferred)
    deferred: list  # (session position, rel_path, absolute path, size) of large files
    nbytes: int = 0  # bytes hashed here (deferred files are counted where they are hashed)
    ignored: int = 0
    hashing: list = field(default_factory=list)  # (row, digest future, task, rel_path, size)
    etag: list = field(default_factory=list)  # a bucket's objects' ETags (UTF-8 bytes)
    policy: Policy = Policy()  # the walk's, the same for every session of the batch


@dataclass
class BatchResult:
    """What a worker returns for one batch: Arrow columns, and the few large files left."""

    datasets: RawBatch  # its session column indexes ``sessions``
    problems: RawBatch
    sessions: list[Session]
    eids: list[str]
    deferred: list[tuple[int, str, str, int]]  # (session, rel_path, absolute path, size)
    nbytes: int  # bytes hashed, for a progress bar in bytes (deferred files not included)
    ignored: int  # entries the ignore rules passed over


def index_sessions(units: list[Folder], options: IndexOptions) -> BatchResult:
    """Index a batch of sessions and date folders: datasets and problems in Arrow.

    With hashing, files of ``defer_size`` bytes or more are not hashed here but listed
    in ``deferred``, so that one huge file becomes a task of its own.
    """
    found = Discovery()
    sessions = []
    rules = options.rules
    policy = Policy(options.follow_symlinks, rules)

    def descend(child: str, name: str) -> bool:
        return not (rules.patterns and rules.matches(child, True))

    with Source(options.io, options.bucket).lister(descend, units[0].path,
                                                   stat_files=True) as lister:
        lister.start_all([(unit.path, unit.rel) for unit in units])  # listed ahead
        for unit in units:
            found_here = [[unit]] if unit.parts is not None else discover(
                unit.path, found, policy, hand_off_dates=False, rel=unit.rel,
                lister=lister)
            sessions.extend(Session(s.path, s.rel, s.parts) for batch in found_here
                            for s in batch)
        return _index_found(sessions, found, options, lister)


def _index_found(sessions: list[Session], found: Discovery, options: IndexOptions,
                 lister: Lister) -> BatchResult:
    eids = [session_eid(s.parts.string_id, options.namespace) for s in sessions]
    cols = _Columns([], [], [], [], [], list(found.problems), {a: [] for a in options.hashes},
                    [], policy=Policy(options.follow_symlinks, options.rules))
    buffer = bytearray(hashing.CHUNK) if options.hashes else None
    for i, session in enumerate(sessions):
        _index_session(SessionTask(i, session.path, session.rel, eids[i]), options, cols,
                       buffer, lister)
    if cols.hashing:
        _collect_digests(cols, options.hashes)
    datasets = buffers.dataset_batch(cols.session, [e.encode() for e in eids], cols.rel_path,
                                     cols.file_size, cols.mtime_ns,
                                     cols.id_md5 if options.namespace else None, cols.digests,
                                     cols.etag if options.bucket is not None else None)
    return BatchResult(datasets, buffers.problem_batch(cols.problems), sessions, eids,
                       cols.deferred, cols.nbytes, found.ignored + cols.ignored)


def _index_session(task: SessionTask, options: IndexOptions, cols: _Columns,
                   buffer: bytearray | None, lister: Lister) -> None:
    # A dataset's id is uuid3(namespace, 'eid/rel_path'); the worker computes the md5
    # (per-row Python), the merge formats all of them at once.
    id_prefix = (options.namespace.bytes + f"{task.eid}/".encode()) if options.namespace else None
    problems = cols.problems
    for listing in walk(task.path, task.rel, cols.policy, lister):
        cols.ignored += listing.ignored
        if listing.error is not None:
            problems.append(_problem(task, listing.sub[:-1] or ".", p.UNREADABLE,
                                     str(listing.error)))
            continue
        prefix = listing.sub
        for name, reason in listing.skipped:
            problems.append(_problem(task, prefix + name, reason))
        collection_ok = alf.is_collection_prefix(prefix)
        for entry in listing.files:
            name = entry.name
            rel_path = prefix + name
            if not alf.is_dataset_name(name):
                problems.append(_problem(task, rel_path, _name_reason(name)))
                continue
            if options.root and entry.is_symlink():  # indexed, and reported: a warning
                target = os.path.realpath(entry.path)
                if not target.startswith(options.root):
                    problems.append(_problem(task, rel_path, p.LINK_OUTSIDE_ROOT,
                                             f"a link to {target}"))
            if not collection_ok:
                problems.append(_problem(task, rel_path, _name_reason(prefix, p.BAD_COLLECTION),
                                         f"'{p.display_path(prefix[:-1])}' is not a collection"))
                continue
            try:
                st = entry.stat()
                size = st.st_size
            except FileNotFoundError as err:
                problems.append(_problem(task, rel_path, p.VANISHED, str(err)))
                continue
            except OSError as err:
                problems.append(_problem(task, rel_path, p.UNREADABLE, str(err)))
                continue
            if not st.st_mode & 0o444:  # root reads it, ONE's users cannot
                problems.append(_problem(task, rel_path, p.UNREADABLE,
                                         NO_READ_PERMISSION.format(st.st_mode & 0o777)))
                continue
            if options.hashes and not _add_digests(entry.path, st, rel_path, task, options,
                                                   cols, buffer, lister.pool):
                continue
            encoded = rel_path.encode()
            cols.session.append(task.position)
            cols.rel_path.append(encoded)
            cols.file_size.append(size)
            cols.mtime_ns.append(st.st_mtime_ns)
            if options.bucket is not None:
                cols.etag.append(st.etag.encode())
            if id_prefix:
                cols.id_md5.append(hashlib.md5(id_prefix + encoded).digest())


def hash_files(paths: list[str], algorithms: tuple[str, ...], bucket: BucketRoot | None = None
               ) -> list[tuple[int, dict[str, str]] | OSError]:
    """Hash files (or a bucket's objects) as a task of their own: (bytes read, digests),
    or the error, for each.

    Used for the large files a batch left, and for the files ``update`` found changed.
    """
    buffer = bytearray(hashing.CHUNK)
    results: list = []
    for path in paths:
        try:
            results.append(_read(path, algorithms, buffer, None, bucket))
        except OSError as err:
            results.append(err)
    return results


def _read(path: str, algorithms: tuple[str, ...], buffer: bytearray, st,
          bucket: BucketRoot | None) -> tuple[int, dict[str, str]]:
    """One read of a file, or of an object: (bytes, digests); ``st``: its listing, which
    the read must still find (the file's mtime, the object's ETag)."""
    if bucket is not None:
        from fastindex.bucket import digest_object

        return digest_object(bucket, path, algorithms, buffer, getattr(st, "etag", None))
    return hashing.digest_file(path, algorithms, buffer, listed=st)


def _add_digests(path: str, st: os.stat_result, rel_path: str, task: SessionTask,
                 options: IndexOptions, cols: _Columns, buffer: bytearray | None,
                 pool: IoPool) -> bool:
    """Hash one file into ``cols``, or defer it when large; False if it could not be read.

    On slow storage (the I/O pool has threads) the file is hashed on them, so that many
    opens are in flight; its row is kept, and dropped by ``_collect_digests`` if the
    read fails.  The read must find the file as listed (its mtime), else the row would
    pair the listing's size and mtime with the digest of another version.
    """
    size = st.st_size
    if size >= options.defer_size:
        cols.deferred.append((task.position, rel_path, path, size))
        digests = dict.fromkeys(options.hashes, "")
    elif (future := pool.submit(_digest_in_thread, path, options.hashes, st,
                                options.bucket)) is not None:
        cols.hashing.append((len(cols.session), future, task, rel_path, size))
        digests = dict.fromkeys(options.hashes, "")
    else:
        try:
            outcome = _read(path, options.hashes, buffer, st, options.bucket)
        except OSError as err:
            outcome = err
        problem = read_problem(outcome, size)
        if problem:
            cols.problems.append(_problem(task, rel_path, *problem))
            return False
        digests = outcome[1]
        cols.nbytes += size
    for algorithm, digest in digests.items():
        cols.digests[algorithm].append(digest)
    return True


def read_problem(outcome: tuple[int, dict] | OSError, size: int) -> tuple[str, str] | None:
    """Why a file's read does not give its row's digests, or None."""
    if isinstance(outcome, FileNotFoundError):
        return p.VANISHED, str(outcome)
    if isinstance(outcome, hashing.ChangedWhileReading):
        return p.CHANGED, outcome.strerror
    if isinstance(outcome, hashing.NotRegularFile):
        return p.NOT_REGULAR, "no longer a regular file when read"
    if isinstance(outcome, OSError):
        return p.UNREADABLE, str(outcome)
    if outcome[0] != size:
        return p.CHANGED, f"{size} bytes when listed, {outcome[0]} when read"
    return None


_thread_buffers = threading.local()


def _digest_in_thread(path: str, algorithms: tuple[str, ...], st, bucket: BucketRoot | None
                      ) -> tuple[int, dict] | OSError:
    buffer = getattr(_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = _thread_buffers.buffer = bytearray(hashing.CHUNK)
    try:
        return _read(path, algorithms, buffer, st, bucket)
    except OSError as err:
        return err


def _collect_digests(cols: _Columns, algorithms: tuple[str, ...]) -> None:
    """Put the digests hashed on threads in their rows; drop the rows whose file could
    not be read (reported, as when hashed in line)."""
    dropped = set()
    for row, future, task, rel_path, size in cols.hashing:
        outcome = future.result()
        problem = read_problem(outcome, size)
        if problem:
            cols.problems.append(_problem(task, rel_path, *problem))
            dropped.add(row)
            continue
        cols.nbytes += size
        for algorithm in algorithms:
            cols.digests[algorithm][row] = outcome[1][algorithm]
    cols.hashing = []
    if dropped:
        keep = [i not in dropped for i in range(len(cols.session))]
        for name in ("session", "rel_path", "file_size", "mtime_ns", "id_md5", "etag"):
            column = getattr(cols, name)
            if column:
                setattr(cols, name, [v for v, k in zip(column, keep) if k])
        for algorithm in algorithms:
            cols.digests[algorithm] = [v for v, k in zip(cols.digests[algorithm], keep) if k]


def _name_reason(name: str, default: str = p.NOT_ALF_NAME) -> str:
    return p.INVALID_ENCODING if p.has_invalid_encoding(name) else default


def _problem(task: SessionTask, rel_path: str, reason: str, detail: str = "") -> tuple:
    return p.display_path(alf.join(task.rel, rel_path)), reason, detail

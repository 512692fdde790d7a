"""Stage 3: index a batch of sessions inside a worker process.

A worker walks each of its sessions with ``os.scandir`` (any collection depth,
``#revision#`` folders), keeps the files whose session-relative path is ALF, records
their size and id, and returns two Arrow record batches: the datasets, and the problems.
Nothing per-row crosses the process boundary but Arrow columns.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from dataclasses import dataclass

import pyarrow as pa

from fastindex import alf, columns
from fastindex import problems as p


@dataclass(frozen=True)
class IndexOptions:
    """What a worker needs to know; the same object goes to every batch."""

    namespace: uuid.UUID | None  # None: ids are ONE's strings (rel_path)
    follow_symlinks: bool = False


@dataclass(frozen=True)
class SessionTask:
    """One session for a worker: where it is and the id its datasets hang from."""

    position: int
    path: str
    rel: str  # root-relative posix path, for problem reports
    eid: str


@dataclass
class _Columns:
    """Growing columns for one batch; turned into Arrow once at the end."""

    session: list
    rel_path: list  # UTF-8 bytes
    file_size: list
    id_md5: list
    problems: list


def index_sessions(tasks: list[SessionTask], options: IndexOptions
                   ) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Index a batch of sessions: (datasets, problems) as Arrow record batches."""
    cols = _Columns([], [], [], [], [])
    for task in tasks:
        _index_session(task, options, cols)
    return (columns.dataset_batch(cols.session, cols.rel_path, cols.file_size,
                                  cols.id_md5 if options.namespace else None),
            columns.problem_batch(cols.problems))


def _index_session(task: SessionTask, options: IndexOptions, cols: _Columns) -> None:
    # A dataset's id is uuid3(namespace, 'eid/rel_path'); the worker computes the md5
    # (per-row Python), the merge formats all of them at once.
    id_prefix = (options.namespace.bytes + f"{task.eid}/".encode()) if options.namespace else None
    problems = cols.problems
    visited: set[tuple[int, int]] = set()  # real folders walked, when following links
    stack = [(task.path, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            if options.follow_symlinks and _seen_before(folder, visited):
                problems.append(_problem(task, prefix.rstrip("/"), p.SYMLINK_LOOP))
                continue
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            problems.append(_problem(task, prefix.rstrip("/") or ".", p.UNREADABLE, str(err)))
            continue
        collection_ok = alf.is_collection_prefix(prefix)
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, f"{prefix}{name}/"))
                continue
            rel_path = prefix + name
            if not entry.is_file():
                reason = _not_a_file(entry, options.follow_symlinks)
                if reason is None:
                    stack.append((entry.path, f"{rel_path}/"))
                else:
                    problems.append(_problem(task, rel_path, reason))
                continue
            if not alf.is_dataset_name(name):
                problems.append(_problem(task, rel_path, _name_reason(name)))
                continue
            if not collection_ok:
                problems.append(_problem(task, rel_path, _name_reason(prefix, p.BAD_COLLECTION),
                                         f"'{p.display_path(prefix[:-1])}' is not a collection"))
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError as err:
                problems.append(_problem(task, rel_path, p.VANISHED, str(err)))
                continue
            except OSError as err:
                problems.append(_problem(task, rel_path, p.UNREADABLE, str(err)))
                continue
            encoded = rel_path.encode()
            cols.session.append(task.position)
            cols.rel_path.append(encoded)
            cols.file_size.append(size)
            if id_prefix:
                cols.id_md5.append(hashlib.md5(id_prefix + encoded).digest())


def _name_reason(name: str, default: str = p.NOT_ALF_NAME) -> str:
    return p.INVALID_ENCODING if p.has_invalid_encoding(name) else default


def _seen_before(folder: str, visited: set[tuple[int, int]]) -> bool:
    """Record a real folder; True when a followed link already led to it (a loop)."""
    st = os.stat(folder)
    key = (st.st_dev, st.st_ino)
    if key in visited:
        return True
    visited.add(key)
    return False


def _not_a_file(entry: os.DirEntry, follow_symlinks: bool) -> str | None:
    """Why an entry that is neither a folder nor a file is skipped; None to walk into it."""
    try:
        if entry.is_dir():  # a link to a folder
            return None if follow_symlinks else p.SYMLINK_DIR
        if entry.is_symlink():
            os.stat(entry.path)  # raises for a broken link
        return p.NOT_REGULAR
    except FileNotFoundError:
        return p.BROKEN_SYMLINK
    except OSError as err:
        return p.SYMLINK_LOOP if err.errno == errno.ELOOP else p.UNREADABLE


def _problem(task: SessionTask, rel_path: str, reason: str, detail: str = "") -> tuple:
    path = f"{task.rel}/{rel_path}" if task.rel else rel_path
    return p.display_path(path), reason, detail

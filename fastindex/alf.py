"""The ALF naming rules, written once and compiled into patterns.

Every other module asks this one whether a folder is a session, a folder is a
collection, or a file name is a dataset.  The part patterns and the three specs are the
ones of the ONE standard (one-api's ``one.alf.spec``); the property tests hold them to
one-api's own regexes.  One deliberate difference: fastindex matches whole strings with
``fullmatch`` where one-api uses ``match(...$)``, whose ``$`` also accepts a trailing
newline, so ``trials.table.npy\\n`` is not a dataset here.  Two more, because the names
are untrusted: digits are ASCII (Python's ``\\d`` also takes ``٢٠٢٠``, which no date
parser downstream accepts), and a subject or a collection's folder is never ``.`` or
``..``, nor a collection's folder empty (one-api's ``[\\w./-]+`` takes ``../../x``, a
rel_path that climbs out of the session: old tables and zips are untrusted).
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import polars as pl

#: Each ALF part and the pattern it must match.
PARTS: dict[str, str] = {
    "lab": r"\w+",
    "subject": r"(?!\.\.?(?:/|$))[\w.-]+",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "number": r"[0-9]{1,3}",
    "collection": r"(?!\.\.?(?:/|$))[\w.-]+(?:/(?!\.\.?(?:/|$))[\w.-]+)*",
    "revision": r"[\w.-]+",
    "namespace": r"(?<=_)[a-zA-Z0-9]+",
    "object": r"\w+",
    "attribute": r"(?:_[a-z]+_)?[a-zA-Z0-9]+(?:_times(?=[_.])|_intervals(?=[_.]))?",
    "timescale": r"\w+",
    "extra": r"[.\w-]+",
    "extension": r"\w+",
}

SESSION_SPEC = "({lab}/Subjects/)?{subject}/{date}/{number}"
COLLECTION_SPEC = "({collection}/)?(#{revision}#/)?"
FILE_SPEC = r"_?{namespace}?_?{object}\.{attribute}(?:_{timescale})?(?:\.{extra})*\.{extension}"


def compile_spec(spec: str) -> re.Pattern[str]:
    """Substitute each ``{part}`` of ``spec`` with its named group."""
    return re.compile(re.sub(r"{(\w+)}", lambda m: f"(?P<{m[1]}>{PARTS[m[1]]})", spec))


SESSION_RE = compile_spec(SESSION_SPEC + "$")
DATE_RE = compile_spec("{date}")
COLLECTION_RE = compile_spec(COLLECTION_SPEC)
FILE_RE = compile_spec(FILE_SPEC)
#: A revision folder in a rel_path, removed to group a dataset's revisions as ONE does
#: (``revision_group``).
REVISION_FOLDER_RE = re.compile(r"#.*#/")
#: The revision folder just above a file: group 1 is its revision (``default_revision``).
FILE_REVISION = r"(?:^|/)#([^/]*)#/[^/]*$"
LAB_RE = compile_spec("{lab}")
SUBJECT_RE = compile_spec("{subject}")
LAB_FOLDER_RE = compile_spec("(?:^|/){lab}/Subjects/?$")


class SessionParts(NamedTuple):
    """The ALF parts of a session folder, as they are spelled on disk."""

    lab: str  # '' when there is no lab/Subjects part
    subject: str
    date: str
    number: str

    @property
    def string_id(self) -> str:
        """ONE's string id: ``lab/subject/date/number``, without ``Subjects`` or empty lab."""
        head = f"{self.lab}/" if self.lab else ""
        return f"{head}{self.subject}/{self.date}/{self.number}"

    @property
    def folder(self) -> str:
        """Where ONE looks for this session, relative to its cache folder.

        ONE stores no session folder: every load rebuilds it from the sessions row, with
        ``one.converters.session_record2path``, as ``[lab/Subjects/]subject/date/NNN``
        (the number zero-padded to three digits).  A session whose folder is spelled any
        other way cannot be loaded.
        """
        head = f"{self.lab}/Subjects/" if self.lab else ""
        return f"{head}{self.subject}/{self.date}/{int(self.number):03d}"


def one_paths(sessions: pl.DataFrame, datasets: pl.DataFrame) -> pl.DataFrame:
    """Datasets keyed by the path ONE loads them from, not by ids (ids depend on options):
    their session's ``SessionParts.folder``, ``/``, and their ``rel_path``.

    The sessions are few, so each one's folder is ``SessionParts.folder`` itself.
    """
    import polars as pl

    folders = [f"{folder}/" for folder in session_folders(sessions)]
    ses = pl.DataFrame({"eid": sessions["id"], "folder": pl.Series(folders, dtype=pl.String)})
    return (datasets.join(ses, on="eid", how="left")
            .with_columns(path=pl.col("folder") + pl.col("rel_path")))


def session_folders(sessions: pl.DataFrame) -> list[str]:
    """Where ONE looks for each session of a sessions table, in its order."""
    import polars as pl

    parts = sessions.select(pl.col("lab").fill_null("").cast(pl.String), "subject",
                            pl.col("date").cast(pl.String), pl.col("number").cast(pl.String))
    return [SessionParts(*row).folder for row in parts.iter_rows()]


def session_parts(posix_path: str) -> SessionParts | None:
    """Parse a session folder from the end of a posix path, as ONE does.

    ONE matches the whole absolute path, so a folder is a session whatever lies above
    the indexed root; ``rooted_parts`` then says what its row can hold.  Returns None
    for folders that are not sessions.
    """
    tail = posix_path.rstrip("/").rsplit("/", 5)
    if not (len(tail[-1]) <= 3 and tail[-1].isascii() and tail[-1].isdigit()):  # fast no
        return None
    # The pattern spans at most five folders, so searching the last five is the same.
    m = SESSION_RE.search("/".join(tail[-5:]))
    if m is None:
        return None
    return SessionParts(m["lab"] or "", m["subject"], m["date"], m["number"])


def rooted_parts(parts: SessionParts, rel: str) -> SessionParts:
    """A session's parts as its row must hold them: the lab only from a ``lab/Subjects/``
    below the root (``rel``: the session folder relative to the root).

    ONE looks for a session under its cache folder, so a lab read from above the root
    would send it to ``root/lab/Subjects/...``, where the session is not.  ``rel`` is
    the end of the path ``parts`` were read from, so the lab is inside the root exactly
    when ``rel`` holds all five folders of ``lab/Subjects/subject/date/number``.
    """
    if not parts.lab or rel.count("/") >= 4:
        return parts
    return parts._replace(lab="")


def lab_around(posix_root: str) -> str | None:
    """The lab whose ``lab/Subjects`` folder is the root itself, if it is one.

    Such a root gives rows without a lab (ONE finds them under that root); indexing the
    lab's parent would keep the lab.
    """
    m = LAB_FOLDER_RE.search(posix_root)
    return m["lab"] if m else None


def parse_date(text: str) -> datetime.date | None:
    """The calendar date of a session's date folder, or None when it does not exist."""
    try:
        return datetime.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def is_dataset_name(name: str) -> bool:
    """True when ``name`` is a valid ALF file name (namespace, object, attribute, ...).

    Cached: a release repeats the same few names in every session.
    """
    return FILE_RE.fullmatch(name) is not None


@functools.lru_cache(maxsize=1 << 12)
def is_collection_prefix(prefix: str) -> bool:
    """True when ``prefix`` ('' or 'collection/', '#rev#/', 'collection/#rev#/') is valid."""
    return COLLECTION_RE.fullmatch(prefix) is not None


def is_rel_path(rel_path: str) -> bool:
    """True when a session-relative posix path is ``collection/#revision#/filename``."""
    prefix, slash, name = rel_path.rpartition("/")
    return is_dataset_name(name) and is_collection_prefix(prefix + slash)


def revision_group(rel_path: str) -> str:
    """The dataset a revision belongs to: rel_path without its ``#revision#/`` folder.

    This is the same key ONE groups by when it picks a default revision.
    """
    return REVISION_FOLDER_RE.sub("", rel_path)


def join(rel: str, name: str) -> str:
    """A root-relative path below ``rel`` ('' is the root itself)."""
    return f"{rel}/{name}" if rel else name

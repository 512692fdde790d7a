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

# A dataset's UUID in its file name, where one-api's ``add_uuid_string`` writes it: the
# last part of the name before its extension (``_ibl_trials.table.<uuid>.pqt``).  ONE
# with ``uuid_filenames`` finds a row's file by inserting the row's id there, spelled as
# ``str(uuid.UUID)`` spells it, and removes only a UUID that ``one.alf.spec.is_uuid_string``
# takes: lowercase, hyphenated, version 3, 4 or 5 (RFC 4122 variant).  Each pattern is
# of one name part (between dots), Rust-regex compatible: polars applies them to whole
# columns.
#: A UUID as ONE writes it into a name and takes it back out.
UUID_PART = r"[0-9a-f]{8}-[0-9a-f]{4}-[345][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
#: What is meant as a UUID: its 8-4-4-4-12 hyphenated hex digits, any case, any version.
UUID_LIKE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: A name part that ONE's ``with_uuid`` would take for a UUID and replace with the row's
#: id (``uuid.UUID`` reads 32 hex digits and ignores hyphens): a name whose part before
#: its UUID is one cannot be found by inserting the UUID again.
UUID_READ = r"-*(?:[0-9a-fA-F]-*){32}"


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


def one_paths(sessions: pl.DataFrame, datasets: pl.DataFrame, uuid_names: bool
              ) -> pl.DataFrame:
    """Datasets keyed by the path ONE loads them from, not by ids (ids depend on options):
    their session's ``SessionParts.folder``, ``/``, and their ``file_name`` (with
    ``uuid_names``, the tables' own flag, the row's id in it).

    Every command that goes from a row to its file goes through here or ``file_name``.
    The sessions are few, so each one's folder is ``SessionParts.folder`` itself.
    """
    import polars as pl

    folders = [f"{folder}/" for folder in session_folders(sessions)]
    ses = pl.DataFrame({"eid": sessions["id"], "folder": pl.Series(folders, dtype=pl.String)})
    return (datasets.join(ses, on="eid", how="left")
            .with_columns(path=pl.col("folder") + file_name(uuid_names)))


def file_name(uuid_names: bool) -> pl.Expr:
    """A datasets row's file, relative to its session folder: its ``rel_path``, or, in a
    tree whose files carry their dataset's UUID, its ``id`` inserted before the
    extension, as ONE's ``ALFPath.with_uuid`` does with ``uuid_filenames`` on."""
    import polars as pl

    if not uuid_names:
        return pl.col("rel_path")
    rel_path = pl.col("rel_path")
    ext = rel_path.str.split(".").list.last()  # a dataset's name has two dots at least
    head = rel_path.str.head(rel_path.str.len_chars() - ext.str.len_chars() - 1)
    return pl.concat_str(head, pl.lit("."), pl.col("id"), pl.lit("."), ext)


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

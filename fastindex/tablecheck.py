"""Tables from elsewhere are checked before any of their values is used.

Old tables (``update``, ``verify``) and a zip's tables (``verify RELEASE.zip``) are
untrusted (docs/THREAT-MODEL.md): anyone who can write the output folder, or who
publishes a zip, wrote them.  Their values become paths (``rel_path`` and the session
parts, joined by ONE into ``cache_dir/[lab/Subjects/]subject/date/NNN/rel_path``),
digests carried into new tables, and rows kept by ``update --keep-missing``.  So every
column fastindex uses must have a type it expects and every value the form ALF gives
it: a ``rel_path`` that is ``collection/#revision#/name`` (never ``../``), a subject
that is one folder, a number ONE pads to three digits, an md5 that is 32 hex digits.
And no two rows may share a key: a session id, a dataset id (``eid``, ``id``) or a path
(``eid``, ``rel_path``), checked before any join on them (a row repeated N times would
make a join on its key N x N rows).  Anything else is refused, one line naming the
column and the first bad value.

Paths are checked on their distinct values, in Python with the ALF patterns (they use
look-aheads that polars' regex engine lacks); a release repeats a few names many
times, so this stays a small fraction of reading the tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastindex import alf, hashing
from fastindex.errors import InputError

if TYPE_CHECKING:
    import polars as pl

#: Digest columns and the form of their values: md5 and xxh3-128 are both 128 bits,
#: written as 32 lower-case hex digits (``hexdigest``).
DIGEST_FORMS = {column: "^[0-9a-f]{32}$" for column in hashing.COLUMNS.values()}
#: An object's ETag as S3 and compatible stores send it: printable ASCII, at most 200
#: characters (only ever compared with a listing's, never used as a digest or a path).
ETAG_FORM = "^[\\x21-\\x7e]{1,200}$"


def check_tables(sessions: pl.DataFrame, datasets: pl.DataFrame, named: str) -> None:
    """Refuse (``InputError``) tables whose columns or values fastindex cannot trust."""
    import polars as pl

    text = ("string", lambda t: t in (pl.String, pl.Null))
    integer = ("an integer", lambda t: t.is_integer())
    date = ("a date", lambda t: t in (pl.Date, pl.String))
    _types(sessions, "sessions", named, {"id": text, "lab": text, "subject": text,
                                         "date": date, "number": integer})
    _types(datasets, "datasets", named, {
        "eid": text, "id": text, "rel_path": text, "file_size": integer, "hash": text,
        "exists": ("boolean", lambda t: t == pl.Boolean),
        **({"xxh3": text} if "xxh3" in datasets.columns else {}),
        **({"mtime_ns": integer} if "mtime_ns" in datasets.columns else {}),
        **({"etag": text} if "etag" in datasets.columns else {})})
    _sessions(sessions, named)
    _datasets(sessions, datasets, named)


def _types(frame: pl.DataFrame, table: str, named: str, wanted: dict[str, tuple]) -> None:
    for column, (kind, ok) in wanted.items():
        if column not in frame.columns:
            raise InputError(f"{named}: {table} has no {column} column")
        if not ok(frame.schema[column]):
            raise InputError(f"{named}: {table}.{column} is {frame.schema[column]}, "
                             f"not {kind}")


def _sessions(sessions: pl.DataFrame, named: str) -> None:
    import polars as pl

    _no_nulls(sessions, "sessions", ("id", "subject", "date", "number"), named)
    _unique(sessions, "sessions", ("id",), named)
    _each(sessions["subject"], lambda s: alf.SUBJECT_RE.fullmatch(s) is not None,
          "sessions.subject", "is not an ALF subject", named)
    _each(sessions["lab"].drop_nulls(), lambda s: s == "" or alf.LAB_RE.fullmatch(s) is not None,
          "sessions.lab", "is not an ALF lab", named)
    if sessions.schema["date"] == pl.String:
        _each(sessions["date"], lambda s: alf.DATE_RE.fullmatch(s) is not None
              and alf.parse_date(s) is not None, "sessions.date", "is not a date", named)
    bad = sessions.filter((pl.col("number") < 0) | (pl.col("number") > 999))
    if bad.height:
        raise InputError(f"{named}: sessions.number {bad['number'][0]} is not a session "
                         f"number (0 to 999)")


def _datasets(sessions: pl.DataFrame, datasets: pl.DataFrame, named: str) -> None:
    import polars as pl

    _no_nulls(datasets, "datasets", ("eid", "id", "rel_path", "file_size", "exists"), named)
    _unique(datasets, "datasets", ("eid", "id"), named)
    _unique(datasets, "datasets", ("eid", "rel_path"), named)
    _each(datasets["rel_path"], alf.is_rel_path, "datasets.rel_path",
          "is not an ALF path below a session (collection/#revision#/name)", named)
    orphans = datasets.join(sessions.select(eid="id"), on="eid", how="anti")
    if orphans.height:
        raise InputError(f"{named}: datasets.eid {orphans['eid'][0]!r} is not a session id")
    if datasets.filter(pl.col("file_size") < 0).height:
        raise InputError(f"{named}: datasets.file_size holds negative sizes")
    if "mtime_ns" in datasets.columns and datasets.filter(pl.col("mtime_ns") < 0).height:
        raise InputError(f"{named}: datasets.mtime_ns holds negative times")
    if "etag" in datasets.columns and datasets.schema["etag"] == pl.String:
        bad = datasets.filter(pl.col("etag").is_not_null()
                              & ~pl.col("etag").str.contains(ETAG_FORM))
        if bad.height:
            raise InputError(f"{named}: datasets.etag {_shown(bad['etag'][0])} is not an "
                             f"ETag")
    for column, form in DIGEST_FORMS.items():
        if column not in datasets.columns or datasets.schema[column] == pl.Null:
            continue
        value = pl.col(column)
        bad = datasets.filter(value.is_not_null() & (value != "")
                              & ~value.str.contains(form))
        if bad.height:
            raise InputError(f"{named}: datasets.{column} {_shown(bad[column][0])} is not "
                             f"a digest of its kind")


def _no_nulls(frame: pl.DataFrame, table: str, columns: tuple[str, ...], named: str) -> None:
    for column in columns:
        if frame[column].null_count():
            raise InputError(f"{named}: {table}.{column} has empty values")


def _unique(frame: pl.DataFrame, table: str, key: tuple[str, ...], named: str) -> None:
    """Refuse a table where two rows share ``key``: every join on it (old digests carried
    forward, a zip's rows with its members) would multiply rows by rows."""
    import polars as pl

    repeated = frame.select(*key).filter(pl.struct(*key).is_duplicated())
    if repeated.height:
        first = repeated.row(0)
        shown = ", ".join(f"{column} {_shown(value)}" for column, value in zip(key, first))
        raise InputError(f"{named}: {table} has more than one row with {shown}")


def _each(values: pl.Series, ok, column: str, why: str, named: str) -> None:
    """Check each distinct value once."""
    for value in values.unique().to_list():
        if not ok(value):
            raise InputError(f"{named}: {column} {_shown(value)} {why}")


def _shown(value) -> str:
    """A value as one short line of a message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."

"""``fastindex verify``: does a tree, or a release zip, still match its tables?

Two sources feed one comparison.  A tree is indexed again on an engine, as it was built
(hashing with the algorithms whose digests the tables hold, when asked); a zip's members
are read in place, each one once (its CRC-32 checked as it is read).  Either gives, per
file, the path ONE loads it from, its size and digests, and ``compare`` joins that with
the tables' rows on the same path (``root/[lab/Subjects/]subject/date/NNN/rel_path``): a
row whose file is not there is ``missing`` (ONE cannot load it), and rows that resolve
to one file are ``same_path``.  This is what a user runs after unpacking a release.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from fastindex import hashing
from fastindex.alf import one_paths, session_folders
from fastindex.engine import Engine
from fastindex.errors import InputError
from fastindex.hashing import Digests
from fastindex.progress import counted, progress_bar
from fastindex.provenance import uuid_names
from fastindex.root import Root, open_root
from fastindex.spec import BuildSpec, options
from fastindex.store import TableStore
from fastindex.tablecheck import check_tables
from fastindex.tablefiles import TABLE_FILES

if TYPE_CHECKING:
    import polars as pl

# What can be wrong, in report order.
MISSING = "missing"  # in the tables, no file where ONE looks for it
UNINDEXED = "not_indexed"  # an ALF dataset on disk, not in the tables
SIZE = "size_mismatch"
CONTENT = "content_mismatch"
TABLES = "tables_mismatch"  # sessions and datasets come from different builds
SAME_PATH = "same_path"  # several rows that ONE loads from one file
UNEXPECTED = "unexpected_member"  # in a zip, a member that no row describes
NOT_COMPARED = "not_compared"  # --hash: a row without a digest, its file of the same size

#: What zipfile raises on a damaged or crafted zip (its central directory, a member's
#: header or data): a bad name's bytes, a version or method it does not know, an
#: encrypted member, a stream that ends early.
UNREADABLE_ZIP = (OSError, zipfile.BadZipFile, ValueError, NotImplementedError,
                  RuntimeError, EOFError, OverflowError, zlib.error)

#: The compressions ``release`` writes.  A member compressed any other way (bzip2, lzma)
#: is refused before any data is read: zipfile inflates those a whole chunk at a time,
#: without a bound.
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
#: Deflate's largest ratio (a 258-byte match coded in two bits): a member declaring more
#: than this many times its compressed size is not deflate's.
DEFLATE_RATIO = 1032

#: A zip's table member is read up to this many times its compressed size (a release
#: stores parquet, already compressed, so it barely deflates): a bound on memory
#: whatever the member declares.
TABLE_RATIO = 16


@dataclass
class VerifyResult:
    """Every difference found; empty when the tree matches its tables."""

    differences: pl.DataFrame  # kind, path, expected, found
    checked: int  # dataset rows compared
    algorithms: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.differences.height == 0

    def summary(self) -> str:
        counts = self.differences["kind"].value_counts(sort=True).rows()
        found = ", ".join(f"{n} {kind}" for kind, n in counts) or "no differences"
        content = (f", content checked with {'+'.join(self.algorithms)}" if self.algorithms
                   else "")
        return f"{counted(self.checked, 'dataset')} checked{content}: {found}"


def verify(root: str | os.PathLike | Root, tables_dir: str | os.PathLike | None = None, *,
           hash: bool = False, follow_symlinks: bool = False,
           exclude: Sequence[str] = (), **run) -> VerifyResult:
    """Compare the tree under ``root`` with the tables in ``tables_dir`` (default: root).

    ``hash``: compare contents too, with every digest the tables hold.  ``run``: how to
    run, as in ``build``.  Read-only trees (a mounted release) are fine.  Tables built
    following links, or with ``--exclude`` patterns, are verified only when the user
    gives ``follow_symlinks`` or the same ``exclude`` again (as ``update``).
    """
    _, settings = options("verify", **run)
    root_path = open_root(root, settings)
    store = TableStore(Path(root_path.tables_folder(tables_dir, "--tables")).expanduser()
                       .resolve())
    with Engine(root_path, settings) as engine:  # before the tables load polars
        tables = store.read("no table at {path}")
        algorithms = _digests_to_compare(tables.datasets, hash, store.folder)
        built = BuildSpec.from_provenance((tables.provenance or {}).get("options", {})
                                          ).confirmed(follow_symlinks, "verify", exclude)
        # as it was built (links, ignore rules), with string ids: rows are keyed by path
        spec = replace(BuildSpec(), follow_symlinks=built.follow_symlinks,
                       exclude=built.exclude, default_ignores=built.default_ignores,
                       uuid_ids=False, digests=Digests(algorithms))
        fresh = engine.index(spec, store.own_files())
    found = one_paths(fresh.sessions, fresh.datasets, fresh.uuid_names)
    differences = compare(tables.sessions, tables.datasets, found, algorithms, tables.uuid_names)
    empty = tables.sessions.join(tables.datasets, left_on="id", right_on="eid", how="anti")
    differences = _with_lost_sessions(differences, empty, fresh.sessions)
    ids = tables.build_ids
    if ids[0] != ids[1]:
        import polars as pl

        mismatch = pl.DataFrame({"kind": [TABLES], "path": [str(store.folder)],
                                 "expected": [str(ids[1])], "found": [str(ids[0])]})
        differences = pl.concat([differences, mismatch]).sort("kind", "path")
    return VerifyResult(differences, tables.datasets.height, algorithms)


def _with_lost_sessions(differences: pl.DataFrame, empty: pl.DataFrame, found: pl.DataFrame
                        ) -> pl.DataFrame:
    """``differences`` and a ``missing`` row for each session of the tables that holds no
    dataset (``empty``: no row of it can be missed) whose folder is not in the tree (a
    zip made by hand, unpacked, loses an empty folder)."""
    import polars as pl

    lost = sorted(set(session_folders(empty)) - set(session_folders(found)))
    rows = pl.DataFrame([(MISSING, path, "a session folder", "no folder") for path in lost],
                        schema=differences.schema, orient="row")
    return pl.concat([differences, rows]).sort("kind", "path") if lost else differences


def verify_zip(path: str | os.PathLike, hash: bool = False, progress: bool = False
               ) -> VerifyResult:
    """Check a release zip against the tables inside it, without unpacking it.

    The zip is untrusted: a member name that is absolute, climbs out (``..``) or repeats,
    a link entry, a compression other than stored or deflate, an encrypted member, and
    sizes no release can declare (more than deflate's ratio to the compressed size, more
    compressed data than the zip holds) refuse it (``InputError``) before any data is
    read; its tables are read within a bound set by the zip's own size and checked
    (``check_tables``).  Every row's member must be there with its size; every such
    member's data is read once and checked against its CRC-32 (zipfile does it as it
    reads) and, with ``hash``, against the row's digests (a row without one is
    ``not_compared``).  A member that cannot be read whole is one ``content_mismatch``.
    A member no row describes (nor the release's ``--include``) is an
    ``unexpected_member``.
    """
    import polars as pl

    archive_path = Path(path).expanduser()
    try:
        archive = zipfile.ZipFile(archive_path)
    except UNREADABLE_ZIP as err:
        raise InputError(f"cannot open {archive_path} as a zip: {err}") from None
    with archive:
        names = _member_names(archive, archive_path)
        _check_sizes(archive, archive_path)
        (sessions, _), (datasets, meta) = (_table_member(archive, name, archive_path)
                                           for name in TABLE_FILES)
        check_tables(sessions, datasets, f"the tables in {archive_path}")
        algorithms = _digests_to_compare(datasets, hash, archive_path)
        rows = one_paths(sessions, datasets, named := uuid_names(
            meta, f"the tables in {archive_path}")).select("path", "file_size")
        with progress_bar(progress, "verifying", "B", int(rows["file_size"].sum() or 0)) as bar:
            members, corrupt = _read_members(archive, rows, algorithms, bar)
        expected = set(rows["path"]) | set(TABLE_FILES) | set(_included(meta))
        corrupt += [(UNEXPECTED, name, None, str(archive.getinfo(name).file_size))
                    for name in names if name not in expected and not name.endswith("/")]
    differences = compare(sessions, datasets, members, algorithms, named)
    if corrupt:
        differences = pl.concat([differences, pl.DataFrame(
            corrupt, schema=differences.schema, orient="row")]).sort("kind", "path")
    return VerifyResult(differences, datasets.height, algorithms)


def _member_names(archive: zipfile.ZipFile, zip_path: Path) -> list[str]:
    """Every member's name, once each; a zip that could write outside the folder it is
    unpacked in (absolute or ``..`` names, links) or that holds a name twice (which
    copy is checked, which unpacked?) is refused."""
    names, seen = [], set()
    for info in archive.infolist():
        name = info.filename
        parts = name.rstrip("/").split("/")
        if (name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]
                or any(part in ("", ".", "..") for part in parts)):
            raise InputError(f"{zip_path}: member {name!r} is not a safe relative path; "
                             f"not a release")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"{zip_path}: member {name!r} is a link; not a release")
        if name in seen:
            raise InputError(f"{zip_path}: member {name!r} appears twice; not a release")
        seen.add(name)
        names.append(name)
    return names


def _check_sizes(archive: zipfile.ZipFile, zip_path: Path) -> None:
    """Refuse, from the central directory alone, a member ``release`` cannot have
    written: compressed with another method, encrypted, or declaring sizes that bound
    nothing (more data than its method can inflate to, more compressed bytes than the
    zip holds, counted once each: members cannot share bytes).  What a member declares
    is what zipfile reads, so verify's work is then bounded by the zip's size."""
    try:
        zip_size = os.fstat(cast(io.BufferedReader, archive.fp).fileno()).st_size
    except (AttributeError, OSError, ValueError):
        zip_size = 0
    compressed = 0
    for info in archive.infolist():
        name = info.filename
        method = METHODS.get(info.compress_type)
        if method is None:
            raise InputError(f"{zip_path}: member {name!r} is compressed with method "
                             f"{info.compress_type}, not stored or deflate (as a release "
                             f"is); refused")
        if info.flag_bits & 0x1:
            raise InputError(f"{zip_path}: member {name!r} is encrypted; not a release")
        most = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                                     else DEFLATE_RATIO)
        if info.file_size > most:
            raise InputError(f"{zip_path}: member {name!r} declares {info.file_size} bytes "
                             f"in {info.compress_size} compressed ({method}: at most "
                             f"{most}); refused")
        compressed += info.compress_size
        if compressed > zip_size or info.header_offset + info.compress_size > zip_size:
            raise InputError(f"{zip_path}: member {name!r} declares more compressed data "
                             f"than the zip's {zip_size} bytes hold; refused")


def _table_member(archive: zipfile.ZipFile, name: str, zip_path: Path
                  ) -> tuple[pl.DataFrame, dict]:
    """A table member and its ``fastindex`` metadata, read within bounds: its bytes at
    most ``TABLE_RATIO`` times what it takes in the zip (a member declaring a small size
    cannot inflate past it), and its decoded size, as its footer declares, likewise."""
    import polars as pl
    import pyarrow.parquet as pq

    try:
        info = archive.getinfo(name)
    except KeyError:
        raise InputError(f"{zip_path} holds no {name}: not a release") from None
    cap = TABLE_RATIO * info.compress_size + (1 << 20)
    try:
        with archive.open(info) as member:
            data = member.read(cap + 1)
        if len(data) > cap:
            raise InputError(f"{zip_path}: {name} inflates to more than {cap} bytes; refused")
        footer = pq.read_metadata(io.BytesIO(data))
        decoded = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))
        if decoded > TABLE_RATIO * cap:
            raise InputError(f"{zip_path}: {name} declares {decoded} bytes of data; refused")
        meta = footer.metadata or {}
        table = pl.read_parquet(io.BytesIO(data))
    except InputError:
        raise
    except Exception as err:  # zipfile, Arrow and polars raise several types
        raise InputError(f"{zip_path}: cannot read {name}: {err}") from None
    try:
        fastindex_meta = json.loads(meta.get(b"fastindex", b"{}"))
    except ValueError:
        fastindex_meta = {}
    return table, fastindex_meta if isinstance(fastindex_meta, dict) else {}


def _included(meta: dict) -> list[str]:
    """The member names a release added with ``--include`` (none when malformed)."""
    included = meta.get("included", [])
    return [n for n in included if isinstance(n, str)] if isinstance(included, list) else []


def _read_members(archive: zipfile.ZipFile, rows: pl.DataFrame, algorithms: tuple[str, ...],
                  bar) -> tuple[pl.DataFrame, list[tuple]]:
    """The members that rows name, as a tree's files: path, size and digests (read only
    where the size is the row's); and the members whose CRC-32 does not match."""
    import polars as pl

    found: dict[str, list] = {"path": [], "file_size": [],
                              **{c: [] for c in Digests(algorithms).columns}}
    corrupt = []
    buffer = bytearray(hashing.CHUNK)
    seen = set()  # rows of sessions with the same folder name one member (same_path)
    for name, size in rows.iter_rows():
        if name in seen:
            continue
        seen.add(name)
        try:
            info = archive.getinfo(name)
        except KeyError:
            continue
        digests = {}
        if info.file_size == size:
            try:
                with archive.open(info) as member:
                    digests = hashing.digest_stream(cast(hashing.Readable, member), algorithms,
                                                    buffer)[1]
            except UNREADABLE_ZIP as err:  # a CRC-32 that does not match, a bad header
                # once, as a content difference: the member is there, with its size
                corrupt.append((CONTENT, name, f"crc32:{info.CRC:08x}", _damage(err)))
                digests = {}
        found["path"].append(name)
        found["file_size"].append(info.file_size)
        for algorithm in algorithms:
            found[hashing.COLUMNS[algorithm]].append(digests.get(algorithm))
        bar.update(size)
    return pl.DataFrame(found, schema={"path": pl.String, "file_size": pl.UInt64,
                                       **{c: pl.String for c in found if c not in
                                          ("path", "file_size")}}), corrupt


def _damage(err: BaseException) -> str:
    """What a member's unreadable data is, in words (not an exception's text)."""
    if isinstance(err, zipfile.BadZipFile) and "CRC" in str(err):
        return "data whose CRC-32 differs"
    if isinstance(err, EOFError):
        return "data that ends early"
    return "data that cannot be read"


def _digests_to_compare(datasets: pl.DataFrame, hash: bool, named) -> tuple[str, ...]:
    """With ``hash``, every digest the tables hold; refused when they hold none."""
    if not hash:
        return ()
    held = digests_held(datasets)
    if not held:
        raise InputError(f"--hash: the tables in {named} hold no digests (built "
                         f"without --hash), so no content could be compared; verify "
                         f"without --hash compares sizes, or build with --hash md5")
    return held


def digests_held(datasets: pl.DataFrame) -> tuple[str, ...]:
    import polars as pl

    held = []
    if "xxh3" in datasets.columns and datasets["xxh3"].is_not_null().any():
        held.append("xxh3")
    if datasets.schema["hash"] != pl.Null and (datasets["hash"].fill_null("") != "").any():
        held.append("md5")
    return tuple(held)


def compare(sessions: pl.DataFrame, datasets: pl.DataFrame, found: pl.DataFrame,
            algorithms: tuple[str, ...], uuid_names: bool) -> pl.DataFrame:
    """Every difference between the tables' rows (``uuid_names``: the tables') and the
    files ``found`` (path, size, digests: from a tree or a zip), by kind and path."""
    import polars as pl

    ours = one_paths(sessions, datasets, uuid_names)
    path = pl.col("path")
    both = ours.join(found, on="path", how="full", coalesce=True, suffix="_disk")
    # A row with exists False says its file is gone (update --keep-missing): not missing.
    expected_on_disk = (pl.col("exists").fill_null(True) if "exists" in ours.columns
                        else pl.lit(True))
    checks = [
        (MISSING, pl.col("file_size_disk").is_null() & expected_on_disk, pl.col("file_size"),
         pl.lit(None)),
        (UNINDEXED, pl.col("file_size").is_null(), pl.lit(None), pl.col("file_size_disk")),
        (SIZE, pl.col("file_size") != pl.col("file_size_disk"), pl.col("file_size"),
         pl.col("file_size_disk")),
    ]
    held = [pl.col(hashing.COLUMNS[algo]).fill_null("") != "" for algo in algorithms]
    for algo, has_digest in zip(algorithms, held):
        column = hashing.COLUMNS[algo]
        checks.append((CONTENT, (pl.col("file_size") == pl.col("file_size_disk"))
                       & has_digest & (pl.col(column) != pl.col(f"{column}_disk")),
                       pl.lit(f"{algo}:") + pl.col(column),
                       pl.lit(f"{algo}:") + pl.col(f"{column}_disk")))
    if algorithms:
        # Content was asked for and this row holds no digest to compare it with: said,
        # never passed as if compared.
        checks.append((NOT_COMPARED, (pl.col("file_size") == pl.col("file_size_disk"))
                       & ~pl.any_horizontal(held), pl.lit("no digest"),
                       pl.lit(f"{algorithms[0]}:")
                       + pl.col(f"{hashing.COLUMNS[algorithms[0]]}_disk")))
    if not algorithms and "etag" in ours.columns and "etag" in found.columns:
        # a bucket's objects: a rewrite of the same size has a new ETag
        checks.append((CONTENT, (pl.col("file_size") == pl.col("file_size_disk"))
                       & (pl.col("etag") != pl.col("etag_disk")),
                       pl.lit("etag:") + pl.col("etag"), pl.lit("etag:") + pl.col("etag_disk")))
    differences = pl.concat([
        both.filter(mask.fill_null(False)).select(
            kind=pl.lit(kind), path=path, expected=expected.cast(pl.String),
            found=found.cast(pl.String))
        for kind, mask, expected, found in checks
    ]).unique(maintain_order=True)
    same_path = (ours.group_by("path").agg(pl.len().alias("n"))
                 .filter(pl.col("n") > 1)
                 .select(kind=pl.lit(SAME_PATH), path="path",
                         expected=pl.lit("1 row"), found=pl.format("{} rows", "n")))
    return pl.concat([differences, same_path]).sort("kind", "path")


"""``fastindex release``: a folder to a verified, reproducible zip that ONE opens as is.

ONE's release workflow is: check the files, build the two tables, zip the folder with
them, publish; users unzip it and open it with ``One(cache_dir=...)``.  ``release`` does
the three steps as one, under the tables' lock, so the zip cannot hold tables older
than its files, miss the tables, ship files that are not indexed, or hold a file that
differs from its row:

1. check: walk the tree without reading a file (nothing may be skipped, unless
   allowed), so a stray file refuses the release before any data is read;
2. zip the indexed files, each read once for its digests, its CRC-32 and the zip's copy,
   then the included files, then the tables built from those digests (re-published
   with metadata that depends only on the release) (``archive.py``);
3. write the tables to their folder (the root when it is writable, ``tables=``, or
   nowhere but the zip), then rename the zip, written under a temporary name, into place.

An interrupted release raises ``Interrupted`` saying which of the two landed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from fastindex import archive, folderlister, log
from fastindex import problems as p
from fastindex.alf import SessionParts, one_paths
from fastindex.engine import Engine, TreeIndex
from fastindex.errors import InputError, Interrupted, ProblemsFound, Refusal
from fastindex.hashing import Digests
from fastindex.progress import counted, human_bytes
from fastindex.provenance import render
from fastindex.results import BuildResult, Rendered
from fastindex.root import LocalRoot, open_folder
from fastindex.safefile import replacing
from fastindex.spec import DEFAULT_NAMESPACE, BuildSpec, RunSettings, options
from fastindex.store import TableStore, read_only
from fastindex.tablefiles import TABLE_FILES


@dataclass
class ReleaseResult:
    """What a release wrote."""

    path: Path
    build: BuildResult
    files: int  # members: tables, datasets, included files
    bytes: int  # bytes of the files zipped
    zip_size: int
    sha256: str
    seconds: float

    def summary(self) -> str:
        return (f"{self.path}: {counted(self.files, 'file')}, {human_bytes(self.bytes)} in a "
                f"{human_bytes(self.zip_size)} zip, {self.seconds:.2f} s; "
                f"sha256 {self.sha256}")


def release(root: str | os.PathLike, out: str | os.PathLike, *,
            allow_skipped: bool = False, allow_outside_links: bool = False,
            include: Iterable[str | os.PathLike] = (), compression: str = "store",
            tables: str | os.PathLike | None = None, **given) -> ReleaseResult:
    """Build the tables of ``root`` and write it, verified, to the zip ``out``.

    ``hash`` (in ``given``) is the digest written in the tables and checked while
    zipping (``md5``, the default, the one ONE checks; ``xxh3``; or both).  Without
    ``allow_skipped`` a tree with any file that would be skipped raises ``ProblemsFound``
    before anything is written; with it, skipped files stay out of the zip
    (``result.build.skipped`` lists them).  A file that is a link to outside the root
    refuses the release (``ProblemsFound``, nothing written) unless
    ``allow_outside_links``: a link planted in a shared folder could otherwise ship any
    file this user can read.  ``include``: files to add (a README, a
    LICENSE) at their path in the root, or at the top of the zip when they are outside
    it.  ``tables``: the folder the tables are written to besides the zip (default: the
    root when it is writable; a read-only tree's tables are in the zip only).  The other
    options are ``build``'s.
    """
    started = time.perf_counter()
    spec, settings = options(**{"hash": "md5", **given})
    root_path = open_folder(root).path
    out_path = _check_out(Path(out))
    if not spec.digests:
        raise InputError("a release checks every file against a digest: --hash md5, xxh3 "
                         "or xxh3+md5")
    if compression not in archive.COMPRESSION:
        raise InputError(f"compression must be one of {', '.join(archive.COMPRESSION)}: "
                         f"{compression}")
    extra = _included(root_path, include)
    store = _tables_store(root_path, tables)
    landed = Landed(out_path, store)
    try:
        with store.lock() if store else contextlib.nullcontext():
            index = _checked_index(root_path, (spec, settings), store,
                                   _refusal(allow_skipped, allow_outside_links),
                                   [out_path, *(path for _, path in extra)])
            members = _members(index)
            taken = {name for name, *_ in members} | set(TABLE_FILES)
            for name, _ in extra:
                if name in taken:
                    raise InputError(f"--include {name}: the release already has a file there")
            rendered: list[Rendered] = []

            def published(digests: list[dict[str, str]]) -> dict[str, bytes]:
                rendered.append(render(_with_digests(index, members, digests, spec), spec))
                return _published_tables(rendered[0], out_path.stem, members, digests, extra)

            contents = archive.Contents(root_path, members, extra, published,
                                        spec.digests.algorithms,
                                        archive.COMPRESSION[compression],
                                        _read_threads(root_path, settings),
                                        _empty_sessions(index))
            # Under a temporary name (created exclusively: never through a planted link),
            # flushed to disk, renamed into place after the tables are written.
            with replacing(out_path, buffering=1 << 20) as file:
                nbytes, sha256 = archive.write_zip(file, contents, settings.progress)
                landed.build_id, landed.written = rendered[0].build_id, os.fstat(file.fileno())
                built = (store.write_rendered(rendered[0], started) if store else
                         rendered[0].result((None, None), started))
    except KeyboardInterrupt:
        raise Interrupted(landed.say()) from None
    log.outcome("release", root, built)
    return ReleaseResult(out_path, built, len(members) + len(extra) + len(TABLE_FILES), nbytes,
                         out_path.stat().st_size, sha256, time.perf_counter() - started)


@dataclass
class Landed:
    """What of a release is on disk, for an interruption to say truly: looked up on
    disk when it is said, since a signal may land between a rename and any note of it."""

    zip_path: Path
    store: TableStore | None
    build_id: str | None = None  # of the release's tables, once rendered
    written: os.stat_result | None = None  # the zip's temporary file, once complete

    @property
    def zip(self) -> bool:
        """The zip at ``zip_path`` is the one this release wrote."""
        try:
            return self.written is not None and os.path.samestat(
                os.stat(self.zip_path), self.written)
        except OSError:
            return False

    @property
    def tables(self) -> bool:
        """Both tables in the store's folder are this release's."""
        return (self.store is not None and self.build_id is not None
                and self.store.build_ids() == (self.build_id, self.build_id))

    def say(self) -> str:
        folder = self.store.folder if self.store else None
        if self.zip:
            return f"the release is complete: {self.zip_path}"
        if self.tables:
            return f"the tables in {folder} are the release's; no zip was written"
        tables = f"the tables in {folder} are unchanged" if folder else "no tables written"
        return f"no zip was written and {tables}"


def _read_threads(root: Path, settings: RunSettings) -> int:
    """Threads reading ahead of the zip's writer: ``io_threads`` when given, else as many
    as the check's walk found the storage needs (a network file system's reads are round
    trips), and none on a local disk, where they cost more in hand-offs of the GIL than
    they save."""
    given = folderlister.io_threads(settings.io_threads).threads
    if given is not None:
        return given
    found = folderlister.finding(str(root))
    return found.threads or 0 if found is not None else 0


def _tables_store(root: Path, given: str | os.PathLike | None) -> TableStore | None:
    """Where the tables go besides the zip: ``given``, else the root when it is writable,
    else nowhere (a snapshot or a read-only mount is released all the same)."""
    if given is not None:
        return TableStore.output(given, create=True)
    if read_only(root):
        return None
    return TableStore.output(root)


def _checked_index(root: Path, how: tuple[BuildSpec, RunSettings], store: TableStore | None,
                   refuse: Refusal, quiet_paths: list[Path]) -> TreeIndex:
    """The tree indexed without reading a file (the check), or the refusal; a folder
    above the sessions that cannot be listed is ``ListingFailed`` (``--allow-skipped``
    does not pass it: the release would silently lack its sessions)."""
    spec, settings = how
    quiet = (store.own_files() if store else frozenset()) | {str(p) for p in quiet_paths}
    with Engine(LocalRoot(root), settings) as engine:
        index = engine.index(replace(spec, digests=Digests()), quiet, whole=True)
    refusal = refuse(index)
    if refusal is not None:
        raise refusal
    return index


def _refusal(allow_skipped: bool, allow_outside_links: bool) -> Refusal:
    """What stops a release before anything is written: anything skipped or warned about
    (unless allowed), and links to outside the root (unless allowed)."""

    def refuse(index: TreeIndex) -> ProblemsFound | None:
        links = [w for w in index.warnings if w.reason == p.LINK_OUTSIDE_ROOT]
        if links and not allow_outside_links:
            empty = index.skipped.clear()
            return ProblemsFound(f"{counted(len(links), 'file')} linked to outside the root; "
                                 f"nothing was written", empty, links,
                                 remedy="no zip written (--allow-outside-links publishes "
                                        "the files they point to)")
        if allow_skipped:
            return None
        warnings = [w for w in index.warnings if w.reason != p.LINK_OUTSIDE_ROOT]
        if not (index.skipped.height or warnings):
            return None
        return ProblemsFound(f"release checked the tree: {counted(index.skipped.height, 'file')} "
                             f"would be skipped and {counted(len(warnings), 'warning')} "
                             f"given; no file was read, nothing was written",
                             index.skipped, warnings)

    return refuse


def _check_out(out: Path) -> Path:
    out = out.expanduser()
    if out.suffix.lower() != ".zip":
        raise InputError(f"the release must be a .zip file: {out}")
    folder = out.parent.resolve()
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {folder} (missing or not writable)")
    if out.is_dir():
        raise InputError(f"{out} is a folder")
    return folder / out.name


def _included(root: Path, include: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(member name, file) of each included file: its root-relative path, or its name."""
    extra = []
    for item in include:
        path = Path(item).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"--include {item}: not a file")
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = path.name
        extra.append((name, path))
    names = [name for name, _ in extra]
    if len(set(names)) != len(names):
        raise InputError(f"--include: two files would have one name in the zip: {names}")
    return extra


def _members(index: TreeIndex) -> list[tuple[str, int, int]]:
    """(path ONE loads it from, size, mtime_ns as listed) of every row, by path."""
    rows = (one_paths(index.sessions, index.datasets, index.uuid_names).sort("path")
            .select("path", "file_size", "mtime_ns"))
    return list(rows.iter_rows())


def _empty_sessions(index: TreeIndex) -> tuple[str, ...]:
    """The folders of the sessions that hold no dataset, where ONE looks for them: a zip
    holds no folder unless it is named, and the tables name these."""
    empty = index.sessions.join(index.datasets.select("eid").unique(), left_on="id",
                                right_on="eid", how="anti")
    return tuple(sorted(SessionParts(lab or "", subject, str(date), str(number)).folder
                        for lab, subject, date, number in empty.select(
                            "lab", "subject", "date", "number").iter_rows()))


def _with_digests(index: TreeIndex, members: list[tuple[str, int, int]],
                  digests: list[dict[str, str]], spec: BuildSpec) -> TreeIndex:
    """The index with the digests the zip's read gave, in the columns the spec names."""
    import polars as pl

    from fastindex.merge import DATASET_COLUMNS

    algorithms, columns = spec.digests.algorithms, spec.digests.columns
    found = pl.DataFrame({"path": [m[0] for m in members],
                          **{c: [d[a] for d in digests] for a, c in zip(algorithms, columns)}},
                         schema={"path": pl.String, **{c: pl.String for c in columns}})
    frame = (one_paths(index.sessions, index.datasets, index.uuid_names)
             .join(found, on="path", how="left"))
    frame = frame.select([c for c in DATASET_COLUMNS if c in frame.columns]).sort("eid", "id")
    return replace(index, datasets=frame)


def _published_tables(rendered: Rendered, name: str, members: list[tuple[str, int, int]],
                      digests: list[dict[str, str]], extra: list[tuple[str, Path]]
                      ) -> dict[str, bytes]:
    """The tables as the zip holds them: the same rows, and metadata that depends only
    on the release: created at ``SOURCE_DATE_EPOCH`` or when its newest file was written,
    its origin the release's name, a build id derived from its contents; without the
    producer's modification times and walk time (an ``update`` of an unpacked release
    is a full build).  The ``--include`` files are named, so that ``verify`` tells them
    from members no one described."""
    from fastindex.tables import one_metadata, republished

    content = hashlib.sha256()
    for (path, size, _), found in zip(members, digests):
        content.update(f"{path}\0{size}\0{sorted(found.items())}\n".encode())
    newest_ns = max((mtime_ns for *_, mtime_ns in members), default=0)
    created = datetime.datetime(*archive.timestamp()) if os.environ.get(
        "SOURCE_DATE_EPOCH") else (datetime.datetime.fromtimestamp(
            newest_ns / 1e9, datetime.timezone.utc).replace(tzinfo=None))
    updates = {"one_metadata": one_metadata(Path(name), created),
               "fastindex": {"build_id": str(uuid.uuid5(DEFAULT_NAMESPACE, content.hexdigest())),
                             "listed_at_ns": 0,
                             **({"included": sorted(n for n, _ in extra)} if extra else {})}}
    return {table: republished(rendered.tables[table], updates, drop=("mtime_ns",))
            for table in TABLE_FILES}

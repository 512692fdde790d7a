"""``fastindex release``: a folder to a verified, reproducible zip that ONE opens as is.

ONE's release workflow is: check the files, build the two tables, zip the folder with
them, publish; users unzip it and open it with ``One(cache_dir=...)``.  ``release`` does
the three steps as one, under the root's table lock, so the zip cannot hold tables older
than its files, miss the tables, ship files that are not indexed, or hold a file that
differs from its row:

1. build the tables in the root (strict: nothing may be skipped, unless allowed);
2. zip the tables it holds in memory (re-published with metadata that depends only on
   the release), then the indexed files, then the included files (``archive.py``);
3. write under a temporary name and rename into place when complete.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from fastindex import archive
from fastindex import problems as p
from fastindex.build import Refusal, build_in, strict_refusal
from fastindex.engine import TreeIndex, check_root
from fastindex.errors import InputError, ProblemsFound
from fastindex.progress import counted, human_bytes
from fastindex.safefile import replacing
from fastindex.spec import DEFAULT_NAMESPACE, options
from fastindex.store import TABLE_FILES, BuildResult, TableStore


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
            **given) -> ReleaseResult:
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
    it.  The other options are ``build``'s.
    """
    started = time.perf_counter()
    spec, settings = options(**{"hash": "md5", **given})
    root_path = check_root(root)
    out_path = _check_out(Path(out))
    if not spec.digests:
        raise InputError("a release checks every file against a digest: --hash md5, xxh3 "
                         "or xxh3+md5")
    if compression not in archive.COMPRESSION:
        raise InputError(f"compression must be one of {', '.join(archive.COMPRESSION)}: "
                         f"{compression}")
    extra = _included(root_path, include)
    store = TableStore.output(root_path)
    with store.lock():  # no build may land between the tables and the zip
        index, built = build_in(store, root_path, (spec, settings),
                                _refusal(allow_skipped, allow_outside_links),
                                quiet_paths=[out_path, *(path for _, path in extra)])
        members = _members(index, spec.digests.algorithms)
        taken = {name for name, *_ in members} | set(TABLE_FILES)
        for name, _ in extra:
            if name in taken:
                raise InputError(f"--include {name}: the release already has a file there")
        contents = archive.Contents(root_path, _published_tables(built, out_path.stem, index,
                                                                 members, extra),
                                    members, extra, spec.digests.algorithms,
                                    archive.COMPRESSION[compression])
        nbytes, sha256 = _write(out_path, contents, settings.progress)
    return ReleaseResult(out_path, built, len(members) + len(extra) + len(TABLE_FILES), nbytes,
                         out_path.stat().st_size, sha256, time.perf_counter() - started)


def _refusal(allow_skipped: bool, allow_outside_links: bool) -> Refusal:
    """What stops a release before anything is written: anything skipped or warned about
    (unless allowed), and links to outside the root (unless allowed)."""

    def refuse(index: TreeIndex) -> ProblemsFound | None:
        links = [w for w in index.warnings if w.reason == p.LINK_OUTSIDE_ROOT]
        if links and not allow_outside_links:
            empty = index.skipped.clear()
            return ProblemsFound(f"{len(links)} files are links to outside the root; "
                                 f"nothing was written", empty, links,
                                 remedy="no zip written (--allow-outside-links publishes "
                                        "the files they point to)")
        if allow_skipped:
            return None
        warnings = [w for w in index.warnings if w.reason != p.LINK_OUTSIDE_ROOT]
        return strict_refusal(replace(index, warnings=warnings))

    return refuse


def _write(out_path: Path, contents: archive.Contents, progress: bool) -> tuple[int, str]:
    """The zip under a temporary name (created exclusively: never through a planted
    link), flushed to disk, then renamed into place."""
    with replacing(out_path, buffering=1 << 20) as file:
        return archive.write_zip(file, contents, progress)


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


def _members(index: TreeIndex, algorithms: tuple[str, ...]
             ) -> list[tuple[str, int, dict[str, str]]]:
    """(path ONE loads it from, size, digests) of every row of the index, by path."""
    from fastindex.hashing import COLUMNS
    from fastindex.verify import one_paths

    columns = [COLUMNS[a] for a in algorithms]
    rows = (one_paths(index.sessions, index.datasets).sort("path")
            .select("path", "file_size", *columns))
    return [(path, size, dict(zip(algorithms, digests)))
            for path, size, *digests in rows.iter_rows()]


def _published_tables(built: BuildResult, name: str, index: TreeIndex, members: list,
                      extra: list[tuple[str, Path]]) -> dict[str, bytes]:
    """The tables as the zip holds them: the same rows, and metadata that depends only
    on the release: created at ``SOURCE_DATE_EPOCH`` or when its newest file was written,
    its origin the release's name, a build id derived from its contents; without the
    producer's modification times and walk time (an ``update`` of an unpacked release
    is a full build).  The ``--include`` files are named, so that ``verify`` tells them
    from members no one described."""
    from fastindex.tables import one_metadata, republished

    content = hashlib.sha256()
    for path, size, digests in members:
        content.update(f"{path}\0{size}\0{sorted(digests.items())}\n".encode())
    newest_ns = int(index.datasets["mtime_ns"].max() or 0)
    created = datetime.datetime(*archive.timestamp()) if os.environ.get(
        "SOURCE_DATE_EPOCH") else (datetime.datetime.fromtimestamp(
            newest_ns / 1e9, datetime.timezone.utc).replace(tzinfo=None))
    updates = {"one_metadata": one_metadata(Path(name), created),
               "fastindex": {"build_id": str(uuid.uuid5(DEFAULT_NAMESPACE, content.hexdigest())),
                             "listed_at_ns": 0,
                             **({"included": sorted(n for n, _ in extra)} if extra else {})}}
    return {table: republished(built.tables[table], updates, drop=("mtime_ns",))
            for table in TABLE_FILES}

"""`fastindex update` gives the tables a fresh build gives, re-hashing only what changed."""

from __future__ import annotations

import json
import os
import zlib

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import age_files, table_bytes, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastindex
from fastindex.cli import main
from fastindex.errors import InputError
from fastindex.update import update

SES = ["lab/Subjects/s1/2020-01-01/001", "lab/Subjects/s1/2020-01-02/001",
       "lab/Subjects/s2/2020-01-01/002"]
NAMES = ["alf/trials.table.npy", "alf/#v1#/trials.table.npy", "alf/probe00/spikes.times.npy",
         "raw/_ns_obj.attr.npy", "alf/#v2#/trials.table.npy"]

edits = st.lists(st.tuples(
    st.sampled_from(["add", "delete", "same_size_new_mtime", "same_mtime_new_size",
                     "rename"]),
    st.sampled_from(SES), st.sampled_from(NAMES), st.binary(min_size=1, max_size=40)),
    min_size=1, max_size=8)


def _tables(out) -> tuple:
    return table_bytes(out / "sessions.pqt"), table_bytes(out / "datasets.pqt")


def _apply(root, edit) -> None:
    kind, session, name, data = edit
    path = root / session / name
    files = sorted(p for p in root.rglob("*.npy") if p.is_file())
    if kind == "add" or not files:
        write_tree(root, {f"{session}/{name}": data})
        return
    # a stable choice: hash() of strings is salted per process, and Hypothesis could
    # not replay a failure
    target = files[zlib.crc32(f"{session}/{name}".encode()) % len(files)]
    stat = target.stat()
    if kind == "delete":
        target.unlink()
    elif kind == "same_size_new_mtime":
        target.write_bytes(bytes(reversed(target.read_bytes())) or b"x")
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    elif kind == "same_mtime_new_size":
        target.write_bytes(target.read_bytes() + data)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif kind == "rename" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        target.rename(path)


# Build options besides the defaults: update walks with the defaults before it has read
# the old options, and must walk again with these.
OPTIONS = st.sampled_from([{}, {"hash_ids": False}, {"follow_symlinks": True},
                           {"namespace": "00000000-0000-0000-0000-000000000001"}])


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits, st.sampled_from(["xxh3", "md5", "xxh3+md5"]), OPTIONS)
def test_update_equals_a_fresh_build(tmp_path_factory, sequence, algorithms, options) -> None:
    tmp = tmp_path_factory.mktemp("update")
    root = write_tree(tmp / "t", {f"{s}/{n}": f"{s}{n}".encode() for s in SES for n in NAMES[:3]})
    age_files(root)  # else every file is racy (just written), and update hashes them all
    fastindex.build(root, workers=1, hash=algorithms, **options)
    for edit in sequence:
        _apply(root, edit)
    result = update(root, workers=1, follow_symlinks=options.get("follow_symlinks", False))
    assert result.incremental
    fresh = tmp / "fresh"
    fresh.mkdir()
    fastindex.build(root, fresh, workers=1, hash=algorithms, **options)
    assert _tables(root) == _tables(fresh)


def test_only_changed_and_new_files_are_hashed(tmp_path) -> None:
    root = write_tree(tmp_path / "t", {f"{s}/{n}": b"abc" for s in SES for n in NAMES})
    age_files(root)
    fastindex.build(root, workers=2, hash="xxh3")
    changed = root / SES[0] / NAMES[0]
    stat = changed.stat()
    changed.write_bytes(b"xyz")
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    write_tree(root, {f"{SES[1]}/alf/new.object.npy": b"new"})
    result = update(root, workers=2)
    assert (result.rehashed, result.reused) == (2, len(SES) * len(NAMES) - 1)
    ds = pl.read_parquet(root / "datasets.pqt")
    assert ds.height == len(SES) * len(NAMES) + 1


def test_a_file_rewritten_in_the_same_tick_is_hashed_again(tmp_path) -> None:
    # Written just before the build, then rewritten with the same size and mtime (as
    # within one tick of a coarse file-system clock): update must not trust its mtime.
    root = write_tree(tmp_path / "t", {f"{SES[0]}/{n}": b"abc" for n in NAMES})
    age_files(root)
    racy = root / SES[0] / NAMES[0]
    racy.write_bytes(b"abc")
    fastindex.build(root, workers=1, hash="xxh3")
    stat = racy.stat()
    racy.write_bytes(b"xyz")
    os.utime(racy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = update(root, workers=1)
    assert (result.rehashed, result.reused) == (1, len(NAMES) - 1)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fastindex.build(root, fresh, workers=1, hash="xxh3")
    assert _tables(root) == _tables(fresh)


def test_keep_missing_marks_gone_files(tmp_path) -> None:
    root = write_tree(tmp_path / "t", {f"{s}/{n}": b"abc" for s in SES for n in NAMES})
    fastindex.build(root, workers=1, hash="md5")
    (root / SES[2] / NAMES[0]).unlink()
    for name in NAMES:
        (root / SES[0] / name).unlink()
    update(root, workers=1, keep_missing=True)
    ds = pl.read_parquet(root / "datasets.pqt")
    assert ds.height == len(SES) * len(NAMES)
    assert ds["exists"].sum() == ds.height - len(NAMES) - 1
    assert pl.read_parquet(root / "sessions.pqt").height == len(SES)
    from one.api import One

    one = One(cache_dir=root, mode="local")
    assert len(one.search()) == len(SES)


def test_other_tools_and_options_are_refused_or_rebuilt(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {f"{s}/{n}": b"abc" for s in SES for n in NAMES})
    assert main(["update", str(root)]) == 2  # nothing to update
    from one.alf.cache import make_parquet_db

    make_parquet_db(root, hash_ids=True)
    capsys.readouterr()
    assert main(["update", str(root), "--quiet"]) == 2
    assert "not made by fastindex" in capsys.readouterr().err
    assert main(["update", str(root), "--quiet", "--force"]) == 0

    fastindex.build(root, workers=1, hash="xxh3")
    assert main(["update", str(root), "--namespace", "00000000-0000-0000-0000-000000000000",
                 "--quiet"]) == 2
    assert "namespace" in capsys.readouterr().err
    result = update(root, workers=1, hash="md5")
    assert not result.incremental and "asked for md5" in result.reason
    assert pl.read_parquet(root / "datasets.pqt")["hash"].str.len_chars().min() == 32
    assert main(["build", str(root), "--hash", "md5", "--workers", "1"]) == 0
    assert "fastindex update" in capsys.readouterr().err

    fastindex.build(root, workers=1, hash="xxh3")
    table = pq.read_table(root / "datasets.pqt")
    meta = dict(table.schema.metadata)
    provenance = json.loads(meta[b"fastindex"])
    del provenance["listed_at_ns"]  # as written before update recorded it
    pq.write_table(table.replace_schema_metadata({**meta, b"fastindex": json.dumps(provenance)}),
                   root / "datasets.pqt")
    result = update(root, workers=1)
    assert not result.incremental and "older fastindex" in result.reason

    (root / "datasets.pqt").write_bytes(b"not a parquet file")
    assert main(["update", str(root), "--quiet"]) == 2
    assert "cannot read" in capsys.readouterr().err


def _forge_options(table_path, **changes) -> None:
    """Rewrite a table's recorded options (as anyone who can write the folder can)."""
    table = pq.read_table(table_path)
    meta = dict(table.schema.metadata)
    provenance = json.loads(meta[b"fastindex"])
    provenance["options"].update(changes)
    pq.write_table(table.replace_schema_metadata({**meta, b"fastindex": json.dumps(provenance)}),
                   table_path)


def test_a_forged_exclude_is_not_obeyed_without_the_users_word(tmp_path) -> None:
    root = write_tree(tmp_path / "t", {f"{s}/{n}": b"abc" for s in SES for n in NAMES})
    age_files(root)
    fastindex.build(root, workers=1, hash="xxh3")
    _forge_options(root / "datasets.pqt", exclude=["*"])
    before = _tables(root)
    with pytest.raises(InputError, match=r"built with --exclude '\*'; update uses recorded"):
        update(root, workers=1)
    assert _tables(root) == before  # not emptied
    with pytest.raises(InputError, match="given again"):
        update(root, workers=1, exclude=["raw/"])


def test_recorded_excludes_are_used_when_given_again(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {f"{s}/{n}": b"abc" for s in SES for n in NAMES})
    age_files(root)
    fastindex.build(root, workers=1, hash="xxh3", exclude=["raw/", "*.table.npy"])
    rows = pl.read_parquet(root / "datasets.pqt")["rel_path"].to_list()
    assert rows and not any(r.startswith("raw/") or ".table." in r for r in rows)
    with pytest.raises(InputError, match="the same"):
        update(root, workers=1, exclude=["*.table.npy", "raw/"])  # order matters in gitignore
    result = update(root, workers=1, exclude=("raw/", "*.table.npy"))
    assert result.incremental
    assert pl.read_parquet(root / "datasets.pqt")["rel_path"].to_list() == rows
    assert main(["update", str(root), "--quiet"]) == 2  # the recorded ones alone: refused
    assert "update --exclude raw/ --exclude '*.table.npy'" in capsys.readouterr().err
    fastindex.build(root, workers=1, hash="xxh3")
    with pytest.raises(InputError, match="built without --exclude"):
        update(root, workers=1, exclude=["raw/"])

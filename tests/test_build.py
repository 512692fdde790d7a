"""The build: identical output from serial and parallel runs, ids, revisions, problems."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, table_bytes, write_tree

import fastindex
from fastindex import problems as p
from fastindex.cli import main
from fastindex.spec import DEFAULT_NAMESPACE
from fastindex.treegen import make_tree


@pytest.fixture(scope="module")
def ephys_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ephys")
    make_tree(root, files=1500, shape="ephys", seed=3)
    write_tree(root, {"cortexlab/Subjects/CORT_0000/notes.txt": b"x"})
    return root


def _tables(out: Path) -> tuple:
    return table_bytes(out / "sessions.pqt"), table_bytes(out / "datasets.pqt")


def test_serial_parallel_and_spawn_give_the_same_tables(ephys_tree, tmp_path) -> None:
    outs = {}
    runs = {"serial": dict(workers=1), "pool": dict(workers=2),
            "fork": dict(workers=3, start_method="fork"),
            "spawn": dict(workers=2, start_method="spawn"),
            "forkserver": dict(workers=4, start_method="forkserver"),
            "threads": dict(executor=ThreadPoolExecutor(3))}
    for name, kwargs in runs.items():
        outs[name] = tmp_path / name
        outs[name].mkdir()
        result = fastindex.build(ephys_tree, outs[name], **kwargs)
        assert result.n_datasets > 1000
    expected = _tables(outs["serial"])
    for name in runs:
        assert _tables(outs[name]) == expected, name


def test_ids_are_reproducible_unique_and_uuid3(ephys_tree, tmp_path) -> None:
    """Every id is uuid3 of ONE's string id, whatever the batching: a second build, with
    other workers and a copy of the tree elsewhere, gives the same ids."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    fastindex.build(ephys_tree, first, workers=2)
    copy = shutil.copytree(ephys_tree, tmp_path / "copy")
    fastindex.build(copy, second, workers=1)
    ses = pl.read_parquet(first / "sessions.pqt")
    ds = pl.read_parquet(first / "datasets.pqt")
    assert ds.height > 1000 and ds["id"].n_unique() == ds.height
    strings = ["/".join(filter(None, (lab, sub, str(date), f"{n:03d}"))) for lab, sub, date, n
               in zip(ses["lab"], ses["subject"], ses["date"], ses["number"])]
    assert ses["id"].to_list() == [str(uuid.uuid3(DEFAULT_NAMESPACE, s)) for s in strings]
    assert ds["id"].to_list() == [str(uuid.uuid3(DEFAULT_NAMESPACE, f"{e}/{r}"))
                                  for e, r in zip(ds["eid"], ds["rel_path"])]
    assert set(ds["eid"]) <= set(ses["id"])
    assert ds.select("eid", "id").equals(ds.select("eid", "id").sort("eid", "id"))
    assert ses["id"].is_sorted()
    assert pl.read_parquet(second / "sessions.pqt").equals(ses)
    assert pl.read_parquet(second / "datasets.pqt").equals(ds)


def test_namespace_and_string_ids(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    ns = uuid.uuid4()
    fastindex.build(root, workers=1, namespace=ns)
    ses = pl.read_parquet(root / "sessions.pqt")
    assert str(uuid.uuid3(ns, "cortexlab/KS001/2020-01-01/001")) in ses["id"].to_list()
    fastindex.build(root, workers=1, hash_ids=False)
    ds = pl.read_parquet(root / "datasets.pqt")
    assert "cortexlab/KS001/2020-01-01/001" in ds["eid"].to_list()
    assert (ds["id"] == ds["rel_path"]).all()


def test_default_revision_marks_the_last_revision(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1, hash_ids=False)
    ds = pl.read_parquet(root / "datasets.pqt").filter(
        pl.col("eid") == "cortexlab/KS001/2020-01-01/001")
    default = dict(zip(ds["rel_path"], ds["default_revision"]))
    assert default["alf/#2021-01-01#/_ibl_trials.choice.npy"]
    assert not default["alf/_ibl_trials.choice.npy"]  # the no-revision copy is older
    assert default["alf/_ibl_trials.intervals.npy"]  # the only one
    assert default["alf/probe00/pykilosort/#v2#/spikes.times.npy"]
    assert not default["alf/probe00/pykilosort/spikes.times.npy"]


def test_hash_is_null_and_metadata_has_provenance(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    import pyarrow.parquet as pq

    table = pq.read_table(root / "datasets.pqt")
    assert table["hash"].null_count == table.num_rows
    assert table.schema.field("hash").type == "null"  # so pandas reads None, not NaN
    meta = json.loads(table.schema.metadata[b"fastindex"])
    assert meta["counts"]["datasets"] == table.num_rows == len(BEHAVIOUR)
    assert meta["options"]["namespace"] == str(DEFAULT_NAMESPACE)
    one_meta = json.loads(table.schema.metadata[b"one_metadata"])
    assert one_meta["origin"] == str(root.resolve()) and one_meta["date_created"]


def test_problems_are_reported_not_indexed(tmp_path) -> None:
    ses = "lab/Subjects/sub/2021-02-28"
    root = write_tree(tmp_path / "t", [
        f"{ses}/001/alf/trials.table.npy",
        f"{ses}/001/bad name.with space.npy",
        f"{ses}/001/.hidden.file.npy",
        f"{ses}/001/my coll/trials.table.npy",
        f"{ses}/001/other+c/trials.table.npy",
        f"{ses}/2/alf/trials.table.npy",
        f"{ses}/002/alf/trials.table.npy",
        "lab/Subjects/sub/2021-02-30/001/alf/trials.table.npy",
        "lab/Subjects/sub/README.md",
    ])
    result = fastindex.build(root, workers=2)
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons == {
        f"{ses}/001/bad name.with space.npy": p.NOT_ALF_NAME,
        f"{ses}/001/.hidden.file.npy": p.NOT_ALF_NAME,
        f"{ses}/001/my coll/trials.table.npy": p.BAD_COLLECTION,
        f"{ses}/001/other+c/trials.table.npy": p.BAD_COLLECTION,
        "lab/Subjects/sub/2021-02-30/001/alf/trials.table.npy": p.IMPOSSIBLE_DATE,
        "lab/Subjects/sub/README.md": p.OUTSIDE_SESSION,
        f"{ses}/2/alf/trials.table.npy": p.UNLOADABLE_SESSION,
    }
    assert result.n_sessions == 2 and result.n_datasets == 2 and result.warnings == []


def test_no_temporary_files_left_and_tables_replaced(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    first = fastindex.build(root, workers=1)
    second = fastindex.build(root, workers=1)
    assert first.build_id != second.build_id
    assert sorted(f.name for f in root.iterdir() if f.is_file()) == [
        "datasets.pqt", "sessions.pqt"]
    assert second.skipped.height == 0  # its own tables are not reported


def test_empty_root_gives_valid_empty_tables(tmp_path, strict_warnings) -> None:
    result = fastindex.build(tmp_path, workers=2)
    assert (result.n_sessions, result.n_datasets) == (0, 0)
    from one.api import One

    one = One(cache_dir=tmp_path, mode="local")
    assert len(one.search()) == 0


def test_cli_build_summary_report_and_exit_codes(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, "cortexlab/Subjects/KS001/x.txt"])
    report = tmp_path / "report.json"
    assert main(["build", str(root), "--workers", "2", "--report", str(report)]) == 0
    err = capsys.readouterr().err
    summary = re.search(r"^fastindex: (\d+) sessions, (\d+) datasets, 1 skipped, "
                        r"0 warnings, 0 ignored, .* -> (.*); the list: (.*)$", err, re.M)
    assert summary, err
    sessions, datasets, where, listed = summary.groups()
    assert int(sessions) == pl.read_parquet(root / "sessions.pqt").height
    assert int(datasets) == pl.read_parquet(root / "datasets.pqt").height == len(BEHAVIOUR)
    assert (where, listed) == (str(root), str(report))
    data = json.loads(report.read_text())
    assert data["problems"] == [{"kind": "skipped", "path": "cortexlab/Subjects/KS001/x.txt",
                                 "reason": p.OUTSIDE_SESSION, "detail": ""}]
    csv = tmp_path / "report.csv"
    assert main(["build", str(root), "--quiet", "--report", str(csv)]) == 0
    assert pl.read_csv(csv)["reason"].to_list() == [p.OUTSIDE_SESSION]
    assert main(["build", str(tmp_path / "missing")]) == 2
    assert "root does not exist" in capsys.readouterr().err
    assert main(["build", str(root), "--out", str(tmp_path / "no/such/folder")]) == 2
    assert "output folder does not exist" in capsys.readouterr().err
    assert main(["build", str(root), "--quiet", "--out", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new/datasets.pqt").is_file()  # a missing --out is made
    with pytest.raises(SystemExit) as exc:
        main(["build", str(root), "--namespace", "not-a-uuid"])
    assert exc.value.code == 2


class _BrokenDisk(ThreadPoolExecutor):
    """Workers whose every task fails, as on a disk that fails every read."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_disk_on_fire)


def _disk_on_fire():
    raise OSError("disk on fire")


def test_worker_failure_is_a_clear_error_and_keeps_old_tables(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    before = (root / "datasets.pqt").read_bytes()
    with pytest.raises(fastindex.FastindexError, match="disk on fire"), _BrokenDisk(2) as pool:
        fastindex.build(root, executor=pool)
    assert (root / "datasets.pqt").read_bytes() == before
    shutil.rmtree(root / "cortexlab")


def test_batches_span_subjects_in_walk_order_and_are_bounded(tmp_path) -> None:
    from fastindex.discover import SUBJECTS_PER_BATCH, Discovery, discover

    files = [f"lab/Subjects/s{s}/2020-01-{d:02d}/001/alf/x.y.npy"
             for s in range(3) for d in range(1, 6)]
    root = write_tree(tmp_path / "t", [*files, "s9/2020-01-01/001/alf/x.y.npy"])
    batches = list(discover(root, Discovery(), max_batch=3))
    units = [Path(u.path).relative_to(root).as_posix() for b in batches for u in b]
    assert units == sorted({f.rsplit("/", 3)[0] for f in files}) + ["s9/2020-01-01"]
    assert [len(b) for b in batches] == [3, 3, 3, 3, 3, 1]
    assert all(u.parts is None for b in batches for u in b)  # date folders, for workers
    # a bucket's walk stops at the subjects (labs' subjects; dates of those outside)
    batches = list(discover(root, Discovery(), max_batch=3, hand_off_subjects=True))
    units = [Path(u.path).relative_to(root).as_posix() for b in batches for u in b]
    assert units == ["lab/Subjects/s0", "lab/Subjects/s1", "lab/Subjects/s2", "s9/2020-01-01"]
    assert [len(b) for b in batches] == [3, 1]  # subjects up to SUBJECTS_PER_BATCH
    assert SUBJECTS_PER_BATCH > 3
    found = Discovery()  # a root that is a session: ONE would look in root/s9/...
    assert list(discover(root / "s9/2020-01-01/001", found)) == []
    assert [s.parts.subject for s in found.unloadable] == ["s9"]


def test_tables_in_the_root_are_not_reported_when_writing_elsewhere(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1)
    out = tmp_path / "out"
    out.mkdir()
    assert fastindex.build(root, out, workers=1).skipped.height == 0


@pytest.mark.parametrize("command", [
    ["build", "--report", "{tmp}/r.csv"],
    ["update"],  # these two read the old tables (Arrow, polars) once their workers started
    ["verify", "--hash"],
], ids=["build", "update", "verify"])
def test_the_cli_forks_before_loading_polars_or_arrow(tmp_path, command) -> None:
    """A fork of a process running polars' or Arrow's threads could deadlock."""
    import subprocess
    import sys

    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=1, hash="xxh3")
    args = [command[0], str(root), "--quiet", "--workers", "2",
            *(a.format(tmp=tmp_path) for a in command[1:])]
    probe = ("import sys, fastindex.executors as P\n"
             "orig = P.default_start_method\n"
             "P.default_start_method = lambda: print('method', orig(), 'heavy',"
             " sorted(m for m in ('polars', 'pyarrow') if m in sys.modules)) or orig()\n"
             "from fastindex.cli import main\n"
             f"sys.exit(main({args!r}))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert out.stdout.strip() == f"method {expected} heavy []"

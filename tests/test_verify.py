"""`fastindex verify`: a tree against its tables, after the tree changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import BEHAVIOUR, write_tree

import fastindex
from fastindex.cli import main
from fastindex.verify import CONTENT, MISSING, NOT_COMPARED, SIZE, TABLES, UNINDEXED, verify

SES = "cortexlab/Subjects/KS001/2020-01-01/001"


@pytest.fixture
def tree(tmp_path):
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    fastindex.build(root, workers=2, hash="xxh3+md5")
    return root


def test_untouched_tree_verifies(tree, capsys) -> None:
    result = verify(tree, hash=True, workers=2)
    assert result.ok and result.checked == len(BEHAVIOUR)
    assert result.algorithms == ("xxh3", "md5")
    assert main(["verify", str(tree), "--hash"]) == 0
    assert "no differences" in capsys.readouterr().err


def test_every_kind_of_difference_is_listed(tree, tmp_path, capsys) -> None:
    (tree / SES / "alf/_ibl_trials.intervals.npy").unlink()
    (tree / SES / "alf/_ibl_trials.choice.npy").write_bytes(b"longer than before" * 10)
    same_size = tree / SES / "alf/probe00/pykilosort/spikes.times.npy"
    same_size.write_bytes(b"\x01" * same_size.stat().st_size)
    write_tree(tree, [f"{SES}/alf/new.object.npy"])

    assert verify(tree, workers=2).differences["kind"].to_list() == [MISSING, UNINDEXED, SIZE]
    result = verify(tree, hash=True, workers=1)
    kinds = dict(zip(result.differences["path"], result.differences["kind"]))
    assert kinds == {
        "cortexlab/Subjects/KS001/2020-01-01/001/alf/_ibl_trials.intervals.npy": MISSING,
        "cortexlab/Subjects/KS001/2020-01-01/001/alf/new.object.npy": UNINDEXED,
        "cortexlab/Subjects/KS001/2020-01-01/001/alf/_ibl_trials.choice.npy": SIZE,
        "cortexlab/Subjects/KS001/2020-01-01/001/alf/probe00/pykilosort/spikes.times.npy": CONTENT,
    }
    report = tmp_path / "diff.json"
    assert main(["verify", str(tree), "--hash", "--quiet", "--report", str(report)]) == 1
    found = json.loads(report.read_text())["differences"]
    assert [d["kind"] for d in found].count(CONTENT) == 2  # one per digest the tables hold
    assert len(found) == 5


def test_tables_from_two_builds_are_detected(tree, tmp_path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    fastindex.build(tree, other, workers=1, hash="xxh3+md5")
    (other / "sessions.pqt").replace(tree / "sessions.pqt")
    assert verify(tree).differences["kind"].to_list() == [TABLES]


def test_missing_tables_is_bad_input(tmp_path, capsys) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert "no table at" in capsys.readouterr().err


def test_verify_and_check_work_on_a_read_only_tree(tree) -> None:
    # as root, drop the capability that writes anywhere, so permissions apply
    drop = (["setpriv", "--bounding-set=-dac_override", "--"]
            if os.geteuid() == 0 and shutil.which("setpriv") else [])
    folders = [tree, *[p for p in tree.rglob("*") if p.is_dir()]]
    try:
        for folder in folders:
            folder.chmod(0o555)
        for command in (["verify", "--quiet"], ["check"]):
            done = subprocess.run([*drop, sys.executable, "-m", "fastindex", command[0],
                                   str(tree), *command[1:]], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        denied = subprocess.run([*drop, sys.executable, "-m", "fastindex", "build", str(tree)],
                                capture_output=True, text=True)
        assert denied.returncode == 2 and "not writable" in denied.stderr
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_hash_reports_rows_without_a_digest_as_not_compared(tree, tmp_path) -> None:
    """A row whose digests are gone, its file rewritten at the same size: not passed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rel = "alf/_ibl_trials.choice.npy"
    sessions = pq.read_table(tree / "sessions.pqt").to_pylist()
    eid = next(s["id"] for s in sessions if (s["subject"], str(s["date"]), s["number"])
               == ("KS001", "2020-01-01", 1))
    table = pq.read_table(tree / "datasets.pqt")
    row = list(zip(table.column("eid").to_pylist(),
                   table.column("rel_path").to_pylist())).index((eid, rel))
    for column in ("hash", "xxh3"):
        values = table.column(column).to_pylist()
        values[row] = None
        table = table.set_column(table.column_names.index(column), column,
                                 pa.array(values, pa.string()))
    pq.write_table(table, tree / "datasets.pqt")
    target = tree / SES / rel
    target.write_bytes(b"\x05" * target.stat().st_size)
    result = verify(tree, hash=True, workers=1)
    assert result.differences.select("kind", "path", "expected").rows() == [
        (NOT_COMPARED, f"{SES}/{rel}", "no digest")]
    assert "1 not_compared" in result.summary()

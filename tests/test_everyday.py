"""Everyday use without surprises: messages a new user meets, each in plain words."""

from __future__ import annotations

import sys

import pytest
from conftest import BEHAVIOUR, write_tree

from fastindex.cli import main


def test_a_count_that_is_not_a_number_says_so(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(tmp_path), "--workers", "abc"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--workers: not a whole number: abc" in err and "_positive_int" not in err


def test_verify_of_a_missing_zip_names_the_zip(tmp_path, capsys) -> None:
    assert main(["verify", str(tmp_path / "release.zip")]) == 2
    assert f"no such zip: {tmp_path / 'release.zip'}" in capsys.readouterr().err


def test_an_out_that_is_a_file_says_so(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR[:1])
    (tmp_path / "f").write_text("x")
    assert main(["build", str(root), "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_demo_tree_without_numpy_names_the_extra(tmp_path, monkeypatch, capsys) -> None:
    from fastindex import treegen

    monkeypatch.setitem(sys.modules, "numpy", None)  # as after `pip install .` alone
    treegen._npy.cache_clear()  # arrays made by earlier tests would hide the import
    assert main(["demo-tree", str(tmp_path / "d"), "--files", "20"]) == 2
    assert "pip install 'fastindex[demo]'" in capsys.readouterr().err


def test_verify_says_what_is_missing_in_words(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR[:2])
    assert main(["build", str(root), "--quiet", "--workers", "1"]) == 0
    (root / BEHAVIOUR[0]).unlink()
    assert main(["verify", str(root), "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"missing: {BEHAVIOUR[0]} (tables: " in err and "found: no file)" in err
    assert "None" not in err


def test_counts_of_one_are_singular(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR[:1])
    assert main(["build", str(root), "--workers", "1"]) == 0
    assert "fastindex: 1 session, 1 dataset, 0 skipped, 0 warnings" in capsys.readouterr().err


def test_a_misspelt_option_gets_the_commands_usage_and_a_suggestion(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(tmp_path), "--workrs", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fastindex build ")
    assert "unrecognized arguments: --workrs 2 (did you mean --workers?)" in err



def test_one_lists_the_datasets_of_a_tree_without_any(tmp_path, strict_warnings) -> None:
    """Sessions with no dataset: ONE's qc filters need a qc column it can compare."""
    from one.api import One

    root = write_tree(tmp_path / "t", {"lab/Subjects/s/2020-01-01/001/notes.txt": b"x"})
    assert main(["build", str(root), "--quiet", "--workers", "1"]) == 0
    one = One(cache_dir=root, mode="local")
    assert len(one.search()) == 1
    assert len(one.list_datasets()) == 0
    assert one.search(dataset_qc_lte="PASS") == []


def _tree_with_a_session_spelled_1(root):
    return write_tree(root, {**{f: b"x" for f in BEHAVIOUR[:2]},
                             "cortexlab/Subjects/KS001/2020-01-02/1/alf/_ibl_trials.choice.npy":
                             b"x"})


def test_the_drop_in_logs_what_it_skipped_and_prints_nothing(tmp_path, caplog, capsys) -> None:
    import fastindex

    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    with caplog.at_level("INFO", logger="fastindex"):
        fastindex.make_parquet_db(root)
    warned = [r for r in caplog.records if r.name == "fastindex" and r.levelname == "WARNING"]
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert "1 file skipped (1 unloadable_session)" in message
    assert f"to list them: fastindex check {root}" in message
    assert any(r.levelname == "INFO" and "2 datasets" in r.getMessage() for r in caplog.records)
    assert capsys.readouterr().out == ""


def test_one_setup_through_fastindex_is_not_silent(tmp_path, caplog, monkeypatch) -> None:
    import one.api
    from one.api import One

    import fastindex

    monkeypatch.setattr(one.api, "make_parquet_db", one.api.make_parquet_db)  # restored after
    fastindex.use_fastindex()
    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    with caplog.at_level("WARNING", logger="fastindex"):
        One.setup(root, silent=True)
    assert any("unloadable_session" in r.getMessage() for r in caplog.records
               if r.name == "fastindex")


def test_the_cli_says_it_once(tmp_path, caplog, capsys) -> None:
    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    with caplog.at_level("INFO", logger="fastindex"):
        assert main(["build", str(root), "--workers", "1"]) == 0
    assert not [r for r in caplog.records if r.name == "fastindex"]
    assert capsys.readouterr().err.count("1 skipped") == 1


def test_verify_after_update_keep_missing_passes(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {f: b"x" for f in BEHAVIOUR[:3]})
    assert main(["build", str(root), "--hash", "md5", "--workers", "1", "--quiet"]) == 0
    (root / BEHAVIOUR[0]).unlink()
    assert main(["update", str(root), "--keep-missing", "--workers", "1", "--quiet"]) == 0
    assert main(["verify", str(root), "--hash", "--workers", "1", "--quiet"]) == 0
    (root / BEHAVIOUR[1]).unlink()  # a file the tables still say exists
    assert main(["verify", str(root), "--workers", "1", "--quiet"]) == 1
    assert f"missing: {BEHAVIOUR[1]}" in capsys.readouterr().err


def test_update_reports_what_it_skipped_and_says_where(tmp_path, capsys) -> None:
    import json

    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    assert main(["build", str(root), "--hash", "md5", "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["update", str(root), "--workers", "1"]) == 0
    assert ("1 skipped, 0 warnings" in (err := capsys.readouterr().err)
            and f"to list them: fastindex update {root} --report FILE" in err)
    report = tmp_path / "skipped.json"
    assert main(["update", str(root), "--workers", "1", "--report", str(report)]) == 0
    listed = json.loads(report.read_text())
    assert [row["reason"] for row in listed["problems"]] == ["unloadable_session"]


def test_a_log_has_no_empty_progress_lines(tmp_path) -> None:
    import subprocess

    root = write_tree(tmp_path / "t", BEHAVIOUR)
    command = [sys.executable, "-m", "fastindex"]
    subprocess.run([*command, "build", str(root), "--hash", "md5"], check=True,
                   capture_output=True)
    for args in (["build", str(root), "--hash", "md5"], ["update", str(root)]):
        done = subprocess.run([*command, *args], capture_output=True, text=True, check=True)
        assert "0.00B" not in done.stderr and "?B/s" not in done.stderr, done.stderr

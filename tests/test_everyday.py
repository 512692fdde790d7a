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

"""Everyday use without surprises: messages a new user meets, each in plain words."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
from conftest import BEHAVIOUR, write_tree

import fastindex
from fastindex.cli import main
from fastindex.errors import InputError
from fastindex.update import update


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


# --quiet: the same on every command (cli's docstring): no progress, no summary, warning
# or advice lines; errors and the output asked for are printed all the same.

def test_every_command_takes_quiet() -> None:
    from fastindex.cli_parser import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.choices and "build" in a.choices).choices
    lacking = [name for name, command in commands.items()
               if "--quiet" not in {o for a in command._actions for o in a.option_strings}]
    assert lacking == []


def _quiet(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_quiet_check_prints_its_list_and_nothing_else(tmp_path, capsys) -> None:
    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    assert _quiet(capsys, "build", str(root), "--workers", "1", "--hash", "md5") == (0, "", "")
    assert _quiet(capsys, "update", str(root), "--workers", "1") == (0, "", "")
    code, out, err = _quiet(capsys, "check", str(root), "--workers", "1")
    assert (code, err) == (1, "")
    assert out.startswith("skipped\tunloadable_session\tcortexlab/Subjects/KS001/2020-01-02/1/")
    code, out, err = _quiet(capsys, "check", str(root), "--workers", "1", "--json")
    assert (code, err) == (1, "")
    assert [row["reason"] for row in json.loads(out)] == ["unloadable_session"]


def test_quiet_verify_prints_the_differences_and_no_summary(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR[:2])
    assert main(["build", str(root), "--workers", "1", "--quiet"]) == 0
    assert _quiet(capsys, "verify", str(root), "--workers", "1") == (0, "", "")
    (root / BEHAVIOUR[0]).unlink()
    code, out, err = _quiet(capsys, "verify", str(root), "--workers", "1")
    assert (code, out) == (1, "")
    assert err.startswith(f"missing: {BEHAVIOUR[0]} ") and err.count("\n") == 1


def test_quiet_release_prints_only_its_sha256(tmp_path, capsys) -> None:
    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    out_zip = tmp_path / "r.zip"
    code, out, err = _quiet(capsys, "release", str(root), str(out_zip), "--workers", "1",
                            "--allow-skipped")
    assert (code, err) == (0, "")
    digest = hashlib.sha256(out_zip.read_bytes()).hexdigest()
    assert out == f"{digest}  r.zip\n"


def test_quiet_fix_prints_its_renames_and_nothing_else(tmp_path, capsys) -> None:
    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    journal = tmp_path / "fix.jsonl"
    rename = ("rename\tcortexlab/Subjects/KS001/2020-01-02/1\t"
              "cortexlab/Subjects/KS001/2020-01-02/001\n")
    assert _quiet(capsys, "fix", str(root)) == (0, rename, "")
    assert _quiet(capsys, "fix", str(root), "--apply", "--journal", str(journal)) == (
        0, rename, "")
    assert (root / "cortexlab/Subjects/KS001/2020-01-02/001").is_dir()
    assert _quiet(capsys, "fix", str(root), "--undo", str(journal)) == (0, "", "")
    assert (root / "cortexlab/Subjects/KS001/2020-01-02/1").is_dir()


def test_quiet_demo_tree_says_nothing(tmp_path, capsys) -> None:
    assert _quiet(capsys, "demo-tree", str(tmp_path / "d"), "--files", "20") == (0, "", "")


def test_undo_says_the_tables_are_stale_and_what_to_run(tmp_path, capsys) -> None:
    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    journal = tmp_path / "fix.jsonl"
    assert main(["fix", str(root), "--apply", "--journal", str(journal)]) == 0
    assert main(["build", str(root), "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["fix", str(root), "--undo", str(journal)]) == 0
    err = capsys.readouterr().err
    assert "1 rename undone" in err
    assert f"tables built after the renames are now stale: now run: fastindex update {root}" \
        in err


def test_the_warning_names_the_first_paths_and_fix(tmp_path, caplog) -> None:
    import fastindex

    root = write_tree(tmp_path / "t", {
        **{f: b"x" for f in BEHAVIOUR[:2]},
        **{f"cortexlab/Subjects/KS001/2020-01-02/1/alf/a{i}.b.npy": b"x" for i in range(5)}})
    with caplog.at_level("WARNING", logger="fastindex"):
        fastindex.build(root, workers=1)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "fastindex"]
    first = [f"cortexlab/Subjects/KS001/2020-01-02/1/alf/a{i}.b.npy" for i in range(3)]
    assert f"5 files skipped (5 unloadable_session): {', '.join(first)} and 2 more" in warning
    assert f"fastindex fix {root} shows the renames" in warning
    caplog.clear()
    with caplog.at_level("DEBUG", logger="fastindex"):
        fastindex.build(root, workers=1)
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"
             and r.name == "fastindex"]
    assert all(any(f"a{i}.b.npy" in m for m in debug) for i in range(5)), debug


def test_the_library_prints_nothing_where_logging_is_not_configured(tmp_path) -> None:
    import subprocess

    root = _tree_with_a_session_spelled_1(tmp_path / "t")
    done = subprocess.run([sys.executable, "-c", "import sys, fastindex; "
                           "fastindex.build(sys.argv[1], workers=1)", str(root)],
                          capture_output=True, text=True, check=True)
    assert (done.stdout, done.stderr) == ("", "")
    shown = subprocess.run([sys.executable, "-c", "import logging, sys, fastindex; "
                            "logging.basicConfig(); fastindex.build(sys.argv[1], workers=1)",
                            str(root)], capture_output=True, text=True, check=True)
    assert "WARNING:fastindex:build" in shown.stderr  # configured, it is shown


def test_an_endpoint_without_a_scheme_says_which_form(capsys) -> None:
    pytest.importorskip("boto3")
    assert main(["check", "s3://bucket/data", "--endpoint-url", "localhost:9000"]) == 2
    err = capsys.readouterr().err
    assert "give http://localhost:9000 or https://localhost:9000" in err
    assert err.count("\n") == 1


def test_the_one_helpers_without_one_api_name_the_extra(tmp_path, monkeypatch) -> None:
    import fastindex

    monkeypatch.setitem(sys.modules, "one", None)  # as after `pip install .` alone
    monkeypatch.delitem(sys.modules, "one.api", raising=False)
    for call in (lambda: fastindex.setup(tmp_path), fastindex.use_fastindex):
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'fastindex\[one\]'"):
            call()


def test_counts_of_one_file_are_singular(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", {**{f: b"x" for f in BEHAVIOUR[:1]},
                                       "cortexlab/Subjects/KS001/2020-01-02/1/a.b.npy": b"x"})
    assert main(["build", str(root), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "fastindex: 1 file in session folders where ONE does not look" in err
    assert "files are" not in err


def _make_read_only(root) -> None:
    for folder in (root, *[p for p in root.rglob("*") if p.is_dir()]):
        folder.chmod(0o555)


def test_a_tree_made_read_only_is_not_written_even_by_root(tmp_path, capsys) -> None:
    """``chmod -R a-w``: the mode says read-only, for root too (who may write anyway)."""
    root = write_tree(tmp_path / "t", BEHAVIOUR[:2])
    _make_read_only(root)
    try:
        assert main(["release", str(root), str(tmp_path / "r.zip"), "--workers", "1"]) == 0
        assert "tables in the zip only" in capsys.readouterr().err
        assert not (root / "sessions.pqt").exists()
        assert main(["build", str(root), "--workers", "1"]) == 2
        assert (f"cannot write the tables in {root} (not writable): give --out DIR"
                in capsys.readouterr().err)
        assert main(["update", str(root), "--workers", "1"]) == 2
        assert (f"(not writable): fastindex build {root} --out DIR writes them elsewhere"
                in capsys.readouterr().err)
        assert not (root / "sessions.pqt").exists()
        assert main(["build", str(root), "--workers", "1", "--quiet", "--out",
                     str(tmp_path / "tables")]) == 0
    finally:
        for folder in (root, *[p for p in root.rglob("*") if p.is_dir()]):
            folder.chmod(0o755)


def test_update_on_a_releases_tables_says_why_it_hashes_again(tmp_path, capsys) -> None:
    import zipfile

    root = write_tree(tmp_path / "t", BEHAVIOUR[:2])
    assert main(["release", str(root), str(tmp_path / "r.zip"), "--workers", "1",
                 "--quiet"]) == 0
    unzipped = tmp_path / "u"
    with zipfile.ZipFile(tmp_path / "r.zip") as z:
        z.extractall(unzipped)
    capsys.readouterr()
    assert main(["update", str(unzipped), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "older fastindex" not in err
    assert "full build: these tables hold no modification times (a release's tables do " \
           "not), so every file is hashed again" in err


def test_the_library_writes_no_tables_into_a_tree_made_read_only(tmp_path) -> None:
    """The rule of the command line holds for ``build`` and ``update`` called from Python,
    as root too: the mode says read-only, for the tree and any folder of it."""
    root = write_tree(tmp_path / "t", BEHAVIOUR[:2])
    _make_read_only(root)
    try:
        for call in (lambda: fastindex.build(root, workers=1),
                     lambda: fastindex.build(root, root / "cortexlab", workers=1),
                     lambda: update(root, workers=1)):
            with pytest.raises(InputError, match="not writable"):
                call()
        assert not list(root.rglob("*.pqt"))
    finally:
        for folder in (root, *[p for p in root.rglob("*") if p.is_dir()]):
            folder.chmod(0o755)

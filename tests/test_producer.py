"""A producer's day: ignore rules, strict gating, reports checked up front, truthful
verify, unreadable files, progress that tells the truth, and a README that matches the
parser."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pathspec
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import BEHAVIOUR, table_bytes, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastindex
from fastindex import problems as p
from fastindex.cli import main
from fastindex.cli_parser import build_parser
from fastindex.errors import ProblemsFound

ROOT = Path(__file__).resolve().parents[1]
SES = "cortexlab/Subjects/KS001/2020-01-01/001"
LITTER = [".DS_Store", f"{SES}/.DS_Store", f"{SES}/alf/Thumbs.db", "cortexlab/desktop.ini",
          f"{SES}/alf/._ibl_trials.choice.npy"]
NOT_DATA = ["cortexlab/README", "notes.txt", f"{SES}/raw_video_data/_iblrig_leftCamera.raw.mp4",
            f"{SES}/raw_video_data/notes.txt"]


def messy_release(root: Path) -> Path:
    return write_tree(root, [*BEHAVIOUR, *LITTER, *NOT_DATA])


def metadata(table: Path) -> dict:
    return json.loads(pq.read_schema(table).metadata[b"fastindex"])


def test_ignore_file_exclude_and_os_litter(tmp_path, capsys) -> None:
    root = messy_release(tmp_path / "t")
    (root / ".fastindexignore").write_text("# not data\nREADME\n/notes.txt\n")
    args = ["build", str(root), "--strict", "--exclude", "raw_video_data/"]
    assert main(args) == 0, capsys.readouterr().err
    # 5 litter files, README, notes.txt, two raw_video_data folders (each counts once)
    assert ", 9 ignored," in capsys.readouterr().err
    rows = pl.read_parquet(root / "datasets.pqt")["rel_path"].to_list()
    assert not any("raw_video_data" in r or "._" in r for r in rows)
    meta = metadata(root / "datasets.pqt")
    assert meta["ignore_rules"] == ["README", "/notes.txt", "raw_video_data/"]
    assert meta["options"]["exclude"] == ["raw_video_data/"] and meta["counts"]["ignored"] == 9
    # verify and update use the build's rules: nothing "not indexed", the same rows;
    # only when they are given again (recorded options are not the user's)
    assert main(["verify", str(root), "--quiet"]) == 2
    assert main(["update", str(root), "--quiet"]) == 2
    again = ["--exclude", "raw_video_data/", "--quiet"]
    assert main(["verify", str(root), *again]) == 0
    assert main(["update", str(root), *again]) == 0
    assert pl.read_parquet(root / "datasets.pqt")["rel_path"].to_list() == rows
    assert main(["check", str(root), "--exclude", "raw_video_data/"]) == 0


def test_without_rules_everything_not_data_is_reported(tmp_path) -> None:
    root = messy_release(tmp_path / "t")
    result = fastindex.build(root, workers=1, default_ignores=False)
    reported = set(result.skipped["path"])
    assert set(LITTER) | {"cortexlab/README", "notes.txt"} <= reported
    assert result.ignored == 0
    with pytest.raises(ProblemsFound):
        fastindex.build(root, workers=1, strict=True)  # README, notes.txt remain


def test_a_bad_ignore_file_is_bad_input(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    (root / ".fastindexignore").write_bytes(b"\xff\xfe not utf-8\n")
    assert main(["build", str(root), "--quiet"]) == 2
    assert ".fastindexignore" in capsys.readouterr().err
    assert not (root / "datasets.pqt").exists()


patterns = st.lists(st.sampled_from(
    ["*.txt", "alf/", "/a", "b/**/c.npy", "!keep.txt", "#v1#/", "raw*", "s/2020-01-01/001/",
     "*.npy", "!a.b.npy", "probe00/"]), max_size=4)
parts = st.sampled_from(["alf", "#v1#", "probe00", "raw", "b", "x"])
names = st.sampled_from(["a.b.npy", "c.npy", "keep.txt", "notes.txt", ".DS_Store", "._a.b.npy",
                         "raw.data.bin", "spikes.times.npy"])


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["lab/Subjects/s/2020-01-01/001", "s/2020-01-01/001",
                                           "a", "lab/Subjects/s/2020-01-02/002"]),
                          st.lists(parts, max_size=2), names), max_size=12), patterns)
def test_ignored_files_are_exactly_what_gitignore_rules_say(tmp_path_factory, two_workers,
                                                            tree, rules) -> None:
    """Every file is a row, a problem, or ignored (as pathspec's gitignore says), one of
    the three; one worker and two give the same bytes."""
    root = tmp_path_factory.mktemp("ign")
    written = set()
    for session, folders, name in tree:
        rel = "/".join([session, *folders, name])
        if any(rel.startswith(w + "/") or w.startswith(rel + "/") for w in written):
            continue  # a file where a folder is, or the reverse
        write_tree(root, {rel: b"1"})
        written.add(rel)
    ignored = {w for w in written if gitignores(pathspec.GitIgnoreSpec.from_lines(
        rules, backend="simple"), w)}  # Python re: the reference, not the engine used
    one = fastindex.build(root, tmp_path_factory.mktemp("o1"), workers=1, exclude=rules)
    two = fastindex.build(root, tmp_path_factory.mktemp("o2"), executor=two_workers,
                          exclude=rules)
    ses = pl.read_parquet(one.sessions_path).select(pl.col("id").alias("eid"), "lab", "subject",
                                                    "date", "number")
    rows = pl.read_parquet(one.datasets_path).join(ses, on="eid")
    indexed = {(f"{lab}/Subjects/" if lab else "") + f"{s}/{d}/{n:03d}/{r}"
               for lab, s, d, n, r in rows.select("lab", "subject", "date", "number",
                                                  "rel_path").iter_rows()}
    reported = set(one.skipped["path"])
    assert indexed | reported | ignored == written
    assert not (indexed & ignored) and not (reported & ignored) and not (indexed & reported)
    assert one.ignored <= len(ignored)  # an ignored folder counts once
    assert table_bytes(one.datasets_path) == table_bytes(two.datasets_path)


def gitignores(spec: pathspec.GitIgnoreSpec, path: str) -> bool:
    """git's rule: a file is ignored when a folder above it is (no negation can bring
    it back), else when it matches; plus the OS litter fastindex ignores by default."""
    name = path.rsplit("/", 1)[-1]
    if name == ".DS_Store" or name.startswith("._"):
        return True
    folders = path.split("/")[:-1]
    return any(spec.match_file("/".join(folders[:i]) + "/") for i in range(1, len(folders) + 1)
               ) or spec.match_file(path)


def test_strict_lists_the_problems_and_writes_nothing(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    assert main(["build", str(root), "--quiet"]) == 0
    before = {f: (root / f).read_bytes() for f in ("sessions.pqt", "datasets.pqt")}
    write_tree(root, [f"{SES}/notes.txt", f"{SES}/alf/new.dataset.npy"])
    report = tmp_path / "r.json"
    assert main(["build", str(root), "--quiet", "--strict", "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert f"skipped\t{p.NOT_ALF_NAME}\t{SES}/notes.txt" in err
    assert "nothing was written" in err and "previous tables are unchanged" in err
    assert {f: (root / f).read_bytes() for f in before} == before  # new dataset not in
    assert json.loads(report.read_text())["problems"][0]["path"] == f"{SES}/notes.txt"
    with pytest.raises(ProblemsFound) as raised:
        fastindex.build(root, workers=1, strict=True)
    assert raised.value.skipped["path"].to_list() == [f"{SES}/notes.txt"]


@pytest.mark.parametrize("report, message", [
    ("missing-folder/r.csv", "does not exist"),
    ("r.xlsx", "must end in .csv or .json"),
    (".", "must end in"),
])
def test_the_report_path_is_checked_before_any_work(tmp_path, capsys, report,
                                                    message) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, "notes.txt"])
    for command in (["build"], ["check"], ["verify"]):
        code = main([*command, str(root), "--report", str(tmp_path / report)])
        assert code == 2, command
        assert message in capsys.readouterr().err
    assert not (root / "datasets.pqt").exists()


def test_the_summary_says_where_the_skipped_files_are_listed(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", [*BEHAVIOUR, "notes.txt"])
    assert main(["build", str(root)]) == 0
    assert f"to list them: fastindex check {root}" in capsys.readouterr().err
    report = tmp_path / "r.csv"
    assert main(["build", str(root), "--report", str(report)]) == 0
    assert f"the list: {report}" in capsys.readouterr().err
    assert not list(tmp_path.glob(".r.csv*"))  # written under a temporary name, renamed


def test_verify_hash_on_tables_without_digests_is_bad_input(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    assert main(["build", str(root), "--quiet"]) == 0
    assert main(["verify", str(root), "--hash", "--quiet"]) == 2
    assert "hold no digests" in capsys.readouterr().err
    assert main(["build", str(root), "--quiet", "--hash", "xxh3"]) == 0
    assert main(["verify", str(root), "--hash"]) == 0
    assert "content checked with xxh3" in capsys.readouterr().err


def test_a_file_nobody_may_read_is_reported_not_indexed(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    secret = root / SES / "alf/_ibl_trials.choice.npy"
    secret.chmod(0o000)  # root reads it anyway; ONE's users could not
    try:
        result = fastindex.build(root, workers=1)
    finally:
        secret.chmod(0o644)
    assert result.skipped.rows() == [(f"{SES}/alf/_ibl_trials.choice.npy", p.UNREADABLE,
                                      "no read permission for anyone (mode 000)")]
    assert result.n_datasets == len(BEHAVIOUR) - 1


def test_hashing_progress_counts_each_byte_once(tmp_path, capsys) -> None:
    # two files hashed apart: defer_size
    root = write_tree(tmp_path / "t", {f"{SES}/alf/a.b.npy": 3000, f"{SES}/alf/c.d.npy": 2000,
                                       f"{SES}/alf/e.f.npy": 500, f"{SES}/alf/g.h.npy": 500})
    fastindex.build(root, workers=1, hash="xxh3", progress=True, defer_size=1000)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "100%" in last and "6.00k/6.00k" in last, last  # a total, reached once


def test_progress_in_a_log_is_lines_not_carriage_returns(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    done = subprocess.run([sys.executable, "-m", "fastindex", "build", str(root)],
                          capture_output=True, text=True, check=True)
    assert "\r" not in done.stderr
    bars = [line for line in done.stderr.splitlines() if line.startswith("indexing")]
    assert 1 <= len(bars) <= 3 and re.search(r" (\d+)/\1 ", bars[-1]), done.stderr  # all


def test_check_takes_lab_report_and_exclude(tmp_path, capsys) -> None:
    one_lab = [f for f in BEHAVIOUR if f.startswith("cortexlab/")]
    root = write_tree(tmp_path / "t", [*one_lab, "notes.txt"])
    report = tmp_path / "r.csv"
    assert main(["check", str(root), "--lab", "cortexlab", "--report", str(report)]) == 1
    assert pl.read_csv(report)["path"].to_list() == ["notes.txt"]
    assert main(["check", str(root), "--exclude", "*.txt"]) == 0
    assert main(["check", str(root), "--lab", "otherlab", "--exclude", "*.txt"]) == 2
    assert "lab name conflict" in capsys.readouterr().err


def readme_synopses() -> dict[str, set[str]]:
    """The options each ``fastindex COMMAND`` line of the README's synopsis shows."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    shown: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        if line.startswith("fastindex "):
            command = line.split()[1]
        if command:
            shown.setdefault(command, set()).update(re.findall(r"--[a-z][a-z-]*", line))
    return shown


def test_every_readme_synopsis_matches_the_parser() -> None:
    shown = readme_synopses()
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(shown) == set(subparsers)
    for name, parser in subparsers.items():
        options = {o for a in parser._actions for o in a.option_strings
                   if o.startswith("--") and o != "--help"}
        assert shown[name] == options, name


def test_the_readme_says_how_to_run_the_command_after_set_up() -> None:
    text = (ROOT / "README.md").read_text()
    assert ".venv/bin/fastindex" in text
    assert os.access(Path(sys.executable).parent / "fastindex", os.X_OK)

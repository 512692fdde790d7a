"""Ignore rules are untrusted: matched in time linear in the path, capped in number and
length, refused in one line when they cannot be compiled (issue 34)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BEHAVIOUR, write_tree

import fastindex
from fastindex import ignore
from fastindex.cli import main
from fastindex.errors import InputError

#: Python's re backtracks on it: time grows as the name's length to the ninth power.
CATASTROPHIC = "*a*a*a*a*a*a*a*a*a*b"


def test_a_backtracking_rule_and_a_long_name_do_not_hang_check(tmp_path) -> None:
    root = write_tree(tmp_path / "t", {**dict.fromkeys(BEHAVIOUR, b"1"), "a" * 250: b"1"})
    (root / ".fastindexignore").write_text(CATASTROPHIC + "\n")
    # a subprocess, so that a hang fails the test instead of holding the suite
    done = subprocess.run([sys.executable, "-m", "fastindex", "check", str(root), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # the long name is not ALF: reported
    assert "aaaa" in done.stdout


def test_rules_match_in_time_linear_in_the_path() -> None:
    code = ("from fastindex.ignore import IgnoreRules; "
            f"r = IgnoreRules(({CATASTROPHIC!r}, 'x/')); "
            "print(r.matches('a' * 100_000, False), r.matches('a' * 100_000 + 'b', False), "
            "r.matches('q/x', True), r.matches('q/x/y', False))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["False", "True", "True", "True"], done.stderr


@pytest.mark.parametrize("lines, says", [
    ([f"file{i}.bin" for i in range(ignore.MAX_RULES + 1)], "rules; at most"),
    (["a" * (ignore.MAX_RULE_CHARS + 1)], "characters; at most"),
])
def test_too_many_or_too_long_rules_are_refused_in_one_line(tmp_path, capsys, lines, says
                                                            ) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    (root / ".fastindexignore").write_text("\n".join(lines) + "\n")
    assert main(["check", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_rules_within_the_caps_but_too_big_to_compile_are_refused() -> None:
    rules = tuple(f"{CATASTROPHIC}{i}" for i in range(ignore.MAX_RULES))
    with pytest.raises(InputError, match="bad ignore pattern"):
        ignore.compile_rules(rules)


def test_names_that_are_not_utf8_are_matched_not_a_crash(tmp_path) -> None:
    """RE2 takes only UTF-8: a name holding other bytes is still matched, byte for byte."""
    root = tmp_path / "t"
    session = root / "lab/Subjects/s1/2020-01-01/001/alf"
    session.mkdir(parents=True)
    (session / "spikes.times.npy").write_bytes(b"x")
    os.mkdir(os.fsencode(session) + b"/raw\xff")
    (Path(os.fsdecode(os.fsencode(session) + b"/raw\xff")) / "a.b.npy").write_bytes(b"x")
    (Path(os.fsdecode(os.fsencode(session) + b"/x\xffy.npy"))).write_bytes(b"x")
    index = fastindex.check(root, exclude=["raw?/", "x?y.npy"], workers=1)
    assert index.skipped.height == 0 and index.datasets.height == 1

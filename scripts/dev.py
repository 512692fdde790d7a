#!/usr/bin/env python3
"""Set up and run fastindex from a fresh clone with nothing but python3.

    python3 scripts/dev.py demo   # build the tables of a generated example tree, query with ONE
    python3 scripts/dev.py test   # lint, type-check and run the test suite

The first run creates ``.venv`` in the repository and installs fastindex with its test
extras into it; later runs reuse it (reinstalling when pyproject.toml changes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv() -> None:
    """Create the virtual environment and install fastindex[test] when needed."""
    stamp = VENV / ".fastindex-installed"
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing fastindex[test] (first run only)", file=sys.stderr)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "-e", f"{REPO}[test]"],
                   check=True)
    stamp.write_text(wanted)


def run(*args: str | Path) -> int:
    return subprocess.run([str(a) for a in args], cwd=REPO).returncode


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("demo", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    if argv[0] == "demo":
        return run(PYTHON, REPO / "scripts" / "demo.py", *argv[1:])
    lint = run(PYTHON, "-m", "ruff", "check", "fastindex", "fastindex_entry.py", "tests",
               "scripts", "benchmarks")
    types = run(PYTHON, "-m", "mypy")  # what it checks: [tool.mypy] in pyproject.toml
    tests = run(PYTHON, "-m", "pytest", "-q", *argv[1:])
    return lint or types or tests


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

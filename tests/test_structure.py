"""The structure every command shares: one spec, one set of run options, a light worker."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest
from conftest import BEHAVIOUR, write_tree

import fastindex
from fastindex.cli_parser import RUN_OPTIONS, build_parser
from fastindex.errors import InputError
from fastindex.hashing import Digests
from fastindex.spec import DEFAULT_NAMESPACE, BuildSpec, RunSettings, options
from fastindex.store import TableStore
from fastindex.update import update
from fastindex.verify import verify

WALKING = ("build", "check", "update", "verify", "release")


def _options_of(parser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def test_every_walking_command_takes_the_same_run_options() -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in WALKING:
        assert set(RUN_OPTIONS) <= _options_of(subparsers[name]), name
    # and the tree options wherever the spec is not taken from old tables
    tree = {"--follow-symlinks", "--exclude", "--no-default-ignores"}
    for name in ("build", "check", "release"):
        assert tree <= _options_of(subparsers[name]), name


def test_the_worker_side_imports_neither_pyarrow_nor_polars() -> None:
    code = ("import sys, fastindex.index, fastindex.executors; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pyarrow', 'polars', 'numpy', 'pandas', 'tqdm'}))")
    # not through the package's __init__ either: workers import fastindex itself
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_a_spec_survives_its_provenance() -> None:
    spec = BuildSpec(uuid_ids=False, namespace=uuid.uuid4(), digests=Digests(("xxh3", "md5")),
                     follow_symlinks=True, exclude=("a/", "*.txt"), default_ignores=False,
                     lab="mylab")
    recorded = json.loads(json.dumps(spec.to_provenance()))
    assert BuildSpec.from_provenance(recorded) == spec
    assert BuildSpec.from_provenance({}) == BuildSpec()


@pytest.mark.parametrize("forged", [
    {"hash": 7}, {"hash": "sha1"}, {"exclude": "*"}, {"exclude": [1]},
    {"follow_symlinks": "yes"}, {"namespace": "not-a-uuid"}, {"lab": ["x"]}, [],
])
def test_forged_provenance_is_refused_not_obeyed(forged) -> None:
    with pytest.raises(InputError, match="provenance"):
        BuildSpec.from_provenance(forged)


def test_keyword_options_split_into_spec_and_settings() -> None:
    spec, settings = options(hash="xxh3+md5", hash_ids=False, namespace=str(DEFAULT_NAMESPACE),
                             exclude=["x"], workers=3, io_threads=0, progress=True, lab=None)
    assert spec == BuildSpec(uuid_ids=False, digests=Digests(("xxh3", "md5")), exclude=("x",))
    assert settings == RunSettings(workers=3, io_threads=0, progress=True)
    with pytest.raises(TypeError, match="unknown option 'wrokers'"):
        options(wrokers=2)
    with pytest.raises(InputError, match="unknown hash"):
        options(hash="sha1")


@pytest.mark.parametrize("command, given", [
    (command, given) for command in ("update", "verify")
    for given in ({"hash_ids": False}, {"lab": "x"}, {"default_ignores": False},
                  {"spec": BuildSpec()})])  # exclude= they take, to confirm the recorded
def test_commands_that_keep_the_tables_spec_refuse_its_options(tmp_path, command, given
                                                               ) -> None:
    run = {"update": update, "verify": verify}[command]
    with pytest.raises(TypeError, match=f"^{command} keeps the tables' {next(iter(given))};"):
        run(tmp_path, **given)


def _release(root, **given):
    return fastindex.release(root, root / "r.zip", **given)


@pytest.mark.parametrize("run", [fastindex.build, fastindex.check, update, verify, _release])
@pytest.mark.parametrize("name", ["wrokers", "keeps"])
def test_every_command_refuses_an_unknown_keyword_by_name(tmp_path, run, name) -> None:
    with pytest.raises(TypeError, match=f"unknown option '{name}'"):
        run(tmp_path, **{name: 2})


def test_the_tables_a_build_writes_are_the_tables_the_store_reads(tmp_path) -> None:
    root = write_tree(tmp_path / "t", BEHAVIOUR)
    result = fastindex.build(root, workers=1, hash="md5")
    stored = TableStore(root).read()
    assert stored.build_ids == (result.build_id, result.build_id)
    assert BuildSpec.from_provenance(stored.provenance["options"]) == BuildSpec(
        digests=Digests(("md5",)))
    assert stored.datasets.height == result.n_datasets == 9
    for name, frame in zip(("sessions.pqt", "datasets.pqt"), (stored.sessions, stored.datasets)):
        assert pl.from_arrow(result.tables[name]).equals(frame), name


def _package_modules() -> dict[str, ast.Module]:
    package = Path(fastindex.__file__).parent
    return {f.stem: ast.parse(f.read_text()) for f in sorted(package.glob("*.py"))}


def _imports(tree: ast.Module) -> set[str]:
    """The package modules a module imports, anywhere but under ``if TYPE_CHECKING``."""
    typing_only = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(branch.test)
                   for node in ast.walk(branch)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "fastindex":
            found |= {alias.name for alias in node.names}  # a name not a module: __init__
            found |= {"__init__"} if any(a.name.startswith("__") for a in node.names) else set()
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastindex."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("fastindex.")}
    return found


def test_no_module_imports_itself_through_others() -> None:
    """No import circle: each module's imports (TYPE_CHECKING aside) lead down only."""
    modules = _package_modules()
    graph = {name: _imports(tree) & set(modules) - {name} for name, tree in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and not seen.add(nxt)
                                   and reaches(nxt, goal, seen)) for nxt in graph[start])

    circles = sorted(name for name in graph if reaches(name, name, set()))
    assert circles == []


def test_modules_and_functions_stay_small() -> None:
    """No module over 400 lines, no function over 8 parameters: an options object
    instead of a long list."""
    package = Path(fastindex.__file__).parent
    long = [f.name for f in package.glob("*.py") if len(f.read_text().splitlines()) > 400]
    wide = []
    for name, tree in _package_modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len([x for x in a.posonlyargs + a.args + a.kwonlyargs
                             if x.arg not in ("self", "cls")]) + bool(a.vararg) + bool(a.kwarg)
                if count > 8:
                    wide.append(f"{name}.{node.name}")
    assert (long, wide) == ([], [])

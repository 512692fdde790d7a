"""What a build is asked for, in two objects: ``BuildSpec`` and ``RunSettings``.

``BuildSpec`` is everything that changes what the tables hold (ids, digests, links,
ignore rules, the lab check) and is recorded in their provenance, so that ``update`` and
``verify`` index a tree again exactly as it was built.  ``RunSettings`` is how to run
(workers, I/O threads, start method, backend, progress): never recorded, since it never
changes a byte of the tables.  The command line builds both once, from option groups
that every walking command shares; the Python API takes the same names as keywords
(``options``).
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields, replace
from typing import Any

from fastindex.errors import InputError
from fastindex.hashing import Digests

#: Ids are uuid3 in this namespace unless another is given, so a tree always gets the same ids.
DEFAULT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "fastindex:alf")


@dataclass(frozen=True)
class BuildSpec:
    """What the tables will hold; recorded in their ``fastindex`` metadata."""

    uuid_ids: bool = True  # uuid3 ids (one-api's hash_ids), else ONE's string ids
    namespace: uuid.UUID = DEFAULT_NAMESPACE
    digests: Digests = field(default_factory=Digests)
    follow_symlinks: bool = False
    exclude: tuple[str, ...] = ()  # ignore patterns besides the root's .fastindexignore
    default_ignores: bool = True  # ignore OS litter (.DS_Store, Thumbs.db, ...)
    lab: str | None = None  # every session must be in this lab's folder

    @property
    def id_namespace(self) -> uuid.UUID | None:
        """The namespace of uuid3 ids, or None for string ids (what workers need)."""
        return self.namespace if self.uuid_ids else None

    def to_provenance(self) -> dict:
        """The ``options`` entry of the provenance (keys as fastindex has always written)."""
        return {"hash_ids": self.uuid_ids, "namespace": str(self.namespace), "lab": self.lab,
                "follow_symlinks": self.follow_symlinks, "hash": self.digests.choice,
                "exclude": list(self.exclude), "default_ignores": self.default_ignores}

    @classmethod
    def from_provenance(cls, options: dict) -> BuildSpec:
        """The spec a table's provenance records, checked: the tables may come from
        anyone, so a value of the wrong type is refused, not obeyed (``InputError``)."""
        if not isinstance(options, dict):
            raise InputError("the tables' provenance has no options")
        kinds: dict[str, type | tuple[type, ...]] = {
            "hash_ids": bool, "namespace": str, "lab": (str, type(None)),
            "follow_symlinks": bool, "hash": str, "exclude": list, "default_ignores": bool}
        for key, kind in kinds.items():
            if key in options and not isinstance(options[key], kind):
                raise InputError(f"the tables' provenance has a bad {key}: {options[key]!r}")
        exclude = options.get("exclude", [])
        if not all(isinstance(line, str) for line in exclude):
            raise InputError(f"the tables' provenance has a bad exclude: {exclude!r}")
        try:
            namespace = uuid.UUID(options.get("namespace", str(DEFAULT_NAMESPACE)))
            digests = Digests.parse(options.get("hash"))
        except ValueError as err:
            raise InputError(f"the tables' provenance is not valid: {err}") from None
        return cls(options.get("hash_ids", True), namespace, digests,
                   options.get("follow_symlinks", False), tuple(exclude),
                   options.get("default_ignores", True), options.get("lab"))

    def confirmed(self, follow_symlinks: bool, command: str,
                  exclude: Sequence[str] = ()) -> BuildSpec:
        """This spec, read from tables, once the user has confirmed what the tables
        cannot be trusted to say (a recorded option is not the user's):

        - links are followed only when the user asks again (``follow_symlinks``):
          followed links may lead anywhere on the machine;
        - recorded ``--exclude`` patterns are used only when the user gives them again,
          the same patterns in the same order (``exclude``): a forged ``*`` would leave
          every file out of the new tables, or hide files from ``verify``.

        ``InputError`` names the options to give otherwise.
        """
        if self.follow_symlinks and not follow_symlinks:
            raise InputError(f"these tables were built with --follow-symlinks; {command} "
                             f"follows links only when asked: {command} --follow-symlinks")
        if tuple(exclude) != self.exclude:
            again = " ".join(f"--exclude {shlex.quote(p)}" for p in self.exclude)
            if not self.exclude:
                raise InputError(f"these tables were built without --exclude; {command} "
                                 f"walks as they were built (use build to change the rules)")
            raise InputError(f"these tables were built with {again}; {command} uses "
                             f"recorded patterns only when given again, the same: "
                             f"{command} {again}")
        return self


@dataclass(frozen=True)
class RunSettings:
    """How to run: where the work goes and what is shown; never recorded."""

    workers: int | None = None  # default: the CPUs this process may use; 1: in-process
    io_threads: int | None = None  # listings in flight per process (folderlister.io_threads)
    start_method: str | None = None  # of the default process pool
    executor: Executor | None = None  # any concurrent.futures.Executor
    client: Any = None  # a Dask client
    scheduler: str | None = None  # a Dask scheduler address, or local:N
    progress: bool = False
    endpoint_url: str | None = None  # an S3-compatible store's, for s3:// roots
    anonymous: bool = False  # read a public bucket without signing (--no-sign-request)
    #: when hashing, files this large are hashed as tasks of their own, so that one huge
    #: file does not hold up a worker's batch
    defer_size: int = 64 << 20
    #: a write may replace tables that hold sessions with tables holding none, or fewer
    #: than half as many (``build``, ``update``: refused otherwise)
    allow_shrink: bool = False
    #: ``update`` may replace tables whose ids would change (another tool's tables, or
    #: another namespace asked for)
    force: bool = False

    def __post_init__(self) -> None:
        _check_count("workers", self.workers, 1, MAX_WORKERS)
        _check_count("io_threads", self.io_threads, 0, MAX_IO_THREADS)
        _check_count("defer_size", self.defer_size, 1, 1 << 62)


#: Worker processes at most: more than any machine's cores is only a fork bomb (the
#: I/O threads are what keep many requests in flight on slow storage).
MAX_WORKERS = 256
#: I/O threads per process at most.
MAX_IO_THREADS = 1024


def _check_count(name: str, value: Any, low: int, high: int) -> None:
    """A count is a whole number within bounds, or the run is refused (exit 2)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}: {value!r}")


_SPEC_NAMES = {f.name for f in fields(BuildSpec)}
_ALIASES = {"hash": "digests", "hash_ids": "uuid_ids"}
_RUN_NAMES = {f.name for f in fields(RunSettings)}


def options(keeps: str = "", /, spec: BuildSpec | None = None,
            settings: RunSettings | None = None, **given: Any) -> tuple[BuildSpec, RunSettings]:
    """A spec and settings from keyword options, as the Python API takes them.

    ``given`` may name any field of either object, and one-api's spellings: ``hash``
    (a ``--hash`` choice), ``hash_ids``, ``namespace`` as text.  ``None`` means the
    default.  An unknown name is a ``TypeError``, as for any misspelt keyword; so is any
    option of the spec (or a ``spec``) given to ``keeps``, a command that keeps the
    tables' spec (positional only: ``keeps=`` is an unknown option).
    """
    if keeps:  # update and verify index the tree as the tables' spec says
        refused = ["spec"] * (spec is not None) + [
            name for name in given if _ALIASES.get(name, name) in _SPEC_NAMES]
        if refused:
            raise TypeError(f"{keeps} keeps the tables' {refused[0]}; it is not an option here")
    spec, settings = spec or BuildSpec(), settings or RunSettings()
    spec_changes, run_changes = {}, {}
    for name, value in given.items():
        name = _ALIASES.get(name, name)
        if name in _RUN_NAMES:
            run_changes[name] = value
        elif name not in _SPEC_NAMES:
            raise TypeError(f"unknown option {name!r}")
        elif value is not None:  # None: the default, or what ``spec`` has
            spec_changes[name] = _CONVERT.get(name, _same)(value)
    return replace(spec, **spec_changes), replace(settings, **run_changes)


def _same(value: Any) -> Any:
    return value


def _digests(value: str | Digests | None) -> Digests:
    try:
        return Digests.parse(value)
    except ValueError as err:
        raise InputError(str(err)) from None


def _namespace(value: str | uuid.UUID) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InputError(f"not a UUID: {value}") from None


_CONVERT: dict[str, Callable[[Any], Any]] = {"digests": _digests, "namespace": _namespace,
                                             "exclude": tuple}

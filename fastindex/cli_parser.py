"""The ``fastindex`` command line's parsers: every command's options, the option groups
the walking commands share, and the types that check an option's value."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

from fastindex import hashing
from fastindex.cli_commands import (
    run_build,
    run_check,
    run_demo_tree,
    run_fix,
    run_release,
    run_update,
    run_verify,
)
from fastindex.version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``fastindex`` parser: a subcommand each, its handler as ``func``."""
    parser = argparse.ArgumentParser(
        prog="fastindex", description="Index ALF trees into ONE's cache tables, in parallel.")
    parser.add_argument("--version", action="version", version=f"fastindex {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="write sessions.pqt and datasets.pqt for a tree")
    b.add_argument("root", type=_root, help="folder to index, or s3://bucket/prefix")
    b.add_argument("--out", type=Path, help="folder for the tables (default: ROOT)")
    b.add_argument("--lab", help="check that every session is in LAB/Subjects/ (refused "
                                 "otherwise; fastindex fix --lab moves them there)")
    b.add_argument("--string-ids", action="store_true",
                   help="ONE's string ids (lab/subject/date/number, rel_path), not uuid3")
    b.add_argument("--namespace", type=_uuid, help="uuid namespace for the uuid3 ids")
    b.add_argument("--hash", choices=hashing.CHOICES, default="none",
                   help="digest every file: md5 goes in ONE's hash column, xxh3 in an "
                        "extra xxh3 column (default: none)")
    _add_tree_options(b)
    _add_source_options(b)
    _add_run_options(b)
    b.add_argument("--report", type=Path,
                   help="write skipped files and warnings here (.csv or .json)")
    b.add_argument("--strict", action="store_true",
                   help="when any file would be skipped or any warning given: list them, "
                        "write no tables, exit 1")
    _add_allow_shrink(b)
    b.set_defaults(func=run_build)

    k = sub.add_parser("check", help="list what would not be indexed, write nothing "
                                     "(exit 1 when anything is reported)")
    k.add_argument("root", type=_root, help="folder to check, or s3://bucket/prefix")
    k.add_argument("--lab", help="also check that every session is in LAB/Subjects/")
    _add_tree_options(k)
    _add_source_options(k)
    _add_run_options(k)
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.add_argument("--report", type=Path, help="also write the list here (.csv or .json)")
    k.set_defaults(func=run_check)

    u = sub.add_parser("update", help="bring the tables up to date, re-hashing only what "
                                      "changed")
    u.add_argument("root", type=_root, help="folder (or s3://bucket/prefix) that was indexed")
    u.add_argument("--out", type=Path, help="folder of the tables (default: ROOT)")
    u.add_argument("--hash", choices=hashing.CHOICES,
                   help="other digests than the tables have (a full build)")
    u.add_argument("--namespace", type=_uuid, help="another id namespace (needs --force)")
    u.add_argument("--keep-missing", action="store_true",
                   help="keep datasets whose files are gone, with exists=False")
    u.add_argument("--force", action="store_true",
                   help="rebuild tables whose ids would change (another tool or namespace)")
    u.add_argument("--report", type=Path,
                   help="write skipped files and warnings here (.csv or .json)")
    _add_allow_shrink(u)
    _add_confirm_links(u)
    _add_source_options(u)
    _add_run_options(u)
    u.set_defaults(func=run_update)

    v = sub.add_parser("verify", help="compare a tree, or a release zip, with its tables "
                                      "(exit 1 on differences)")
    v.add_argument("root", type=_root, help="folder (or s3://bucket/prefix) that was indexed, "
                                            "or a release .zip")
    v.add_argument("--tables", type=Path, help="folder of the tables (default: ROOT)")
    v.add_argument("--hash", action="store_true",
                   help="also compare contents, with the digests the tables hold")
    _add_confirm_links(v)
    _add_source_options(v)
    _add_run_options(v)
    v.add_argument("--report", type=Path, help="write the differences here (.csv or .json)")
    v.set_defaults(func=run_verify)

    f = sub.add_parser("fix", help="rename session folders to where ONE looks for them "
                                   "(a dry run unless --apply; exit 1 when some cannot be)")
    f.add_argument("root", type=_root, help="folder to fix (or whose renames to undo)")
    f.add_argument("--lab", help="move sessions that have no lab folder into LAB/Subjects/")
    f.add_argument("--apply", action="store_true", help="carry out the renames")
    f.add_argument("--journal", type=Path,
                   help="where --apply records its renames, for --undo "
                        "(default: fastindex-fix-TIME.jsonl in the current folder)")
    f.add_argument("--undo", type=Path, metavar="JOURNAL",
                   help="reverse the renames a journal of ROOT records")
    _add_quiet(f)
    f.set_defaults(func=run_fix)

    r = sub.add_parser("release", help="check, build and zip a tree: a verified, "
                                       "reproducible release (exit 1 when anything "
                                       "would be skipped)")
    r.add_argument("root", type=_root, help="folder to release")
    r.add_argument("out", type=Path, help="the zip to write (OUT.zip)")
    r.add_argument("--hash", choices=[c for c in hashing.CHOICES if c != "none"],
                   default="md5", help="digest in the tables, checked while zipping "
                                       "(default: md5, the one ONE checks)")
    r.add_argument("--allow-skipped", action="store_true",
                   help="release without the files that would be skipped (listed)")
    r.add_argument("--allow-outside-links", action="store_true",
                   help="publish files that are links to outside the root (refused by "
                        "default: a link could ship any file of this machine)")
    r.add_argument("--include", action="append", default=[], type=Path, metavar="FILE",
                   help="also zip this file (README, LICENSE; repeatable)")
    r.add_argument("--compression", choices=["store", "deflate"], default="store",
                   help="store (default: fastest; data files rarely shrink) or deflate")
    r.add_argument("--tables", type=Path, metavar="DIR",
                   help="also write the tables here (default: ROOT when it is writable; "
                        "a read-only tree's tables are in the zip only)")
    _add_tree_options(r)
    _add_run_options(r)
    r.set_defaults(func=run_release)

    d = sub.add_parser("demo-tree", help="generate an example ALF tree")
    d.add_argument("dest", type=Path, help="folder to create the tree in")
    d.add_argument("--files", type=_positive_int, default=10_000,
                   help="about how many files (default 10000)")
    d.add_argument("--shape", default="behaviour", choices=["behaviour", "ephys", "wide", "deep"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--sparse-size", type=int, metavar="BYTES",
                   help="make every file sparse, of this size (no disk space needed)")
    _add_quiet(d)
    d.set_defaults(func=run_demo_tree)
    for command in sub.choices.values():  # its own usage for its own mistakes
        command.set_defaults(command_parser=command)
    return parser


def _add_tree_options(command: argparse.ArgumentParser) -> None:
    """How a tree is walked: the options of the spec that every command that walks a
    tree from scratch shares (update and verify take them from the tables)."""
    command.add_argument("--follow-symlinks", action="store_true",
                         help="walk into linked folders (loops are detected and reported)")
    command.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                         help="a gitignore pattern of paths that are not data (repeatable; "
                              "added to ROOT/.fastindexignore)")
    command.add_argument("--no-default-ignores", dest="default_ignores",
                         action="store_false",
                         help="report .DS_Store, Thumbs.db, desktop.ini and ._* files "
                              "instead of ignoring them")


def _root(text: str) -> Path | str:
    """A folder, or an ``s3://`` URL kept as it is (a Path would fold its ``//``)."""
    return text if text.startswith("s3://") else Path(text)


def _add_source_options(command: argparse.ArgumentParser) -> None:
    """Where an ``s3://`` root is: an S3-compatible endpoint, and signing."""
    command.add_argument("--endpoint-url", metavar="URL",
                         help="an S3-compatible store's endpoint, for s3:// roots "
                              "(default: AWS)")
    command.add_argument("--no-sign-request", dest="anonymous", action="store_true",
                         help="read a public bucket without credentials")


def _add_allow_shrink(command: argparse.ArgumentParser) -> None:
    """build and update replace tables; emptying them, or losing more than half their
    sessions, needs the user's word (a root one level too high looks just like that)."""
    command.add_argument("--allow-shrink", action="store_true",
                         help="replace tables even when the new ones hold no session, or "
                              "fewer than half the sessions of the old (refused otherwise, "
                              "exit 2)")


def _add_confirm_links(command: argparse.ArgumentParser) -> None:
    """update and verify walk as the tables were built, except for what widens or
    narrows the walk: a recorded --follow-symlinks or --exclude is obeyed only when the
    user gives it again."""
    command.add_argument("--follow-symlinks", action="store_true",
                         help="follow linked folders, for tables built with "
                              "--follow-symlinks (refused otherwise)")
    command.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                         help="the build's --exclude patterns, given again in the same "
                              "order (tables built with them are refused otherwise)")


#: The options of ``RunSettings`` on the command line, shared by every walking command.
RUN_OPTIONS = ("--workers", "--io-threads", "--scheduler", "--quiet")


def _add_run_options(command: argparse.ArgumentParser) -> None:
    """How to run (``RunSettings``): the same for every command that walks a tree."""
    command.add_argument("--workers", type=_positive_int,
                         help="worker processes (default: the CPUs available; twice that "
                              "for a bucket)")
    command.add_argument("--io-threads", type=_non_negative_int, metavar="N",
                         help="listings and stats in flight per process, for network "
                              "storage (default: 0 on a fast disk, 16 once listings are "
                              "found slow; also FASTINDEX_IO_THREADS)")
    command.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on a Dask cluster: tcp://host:8786, or local:N for N "
                              "local worker processes (needs fastindex[dask])")
    _add_quiet(command)


def _add_quiet(command: argparse.ArgumentParser) -> None:
    """``--quiet``, the same on every command (see ``cli``)."""
    command.add_argument("--quiet", action="store_true",
                         help="no progress and no summary, warning or advice lines; errors "
                              "and the output asked for (check's list, verify's "
                              "differences, fix's renames, release's sha256) are still "
                              "printed")


def _whole_number(text: str, least: int, refusal: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{refusal}: {text}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1, "must be at least 1")


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0, "must be 0 or more")


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text}") from None

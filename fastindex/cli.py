"""The ``fastindex`` command line.

Exit codes: 0 done; 1 problems were found where the command treats them as failure
(``build --strict``, which then writes nothing; ``check``; ``verify``); 2 bad input
(missing root, unwritable output, bad option or report path, another build writing the
same tables); 3 the build failed (a worker died) and nothing was written; 130
interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from fastindex import hashing, log
from fastindex.errors import FastindexError, InputError, ProblemsFound
from fastindex.problems import UNLOADABLE_SESSION, display_path
from fastindex.progress import counted
from fastindex.report import check_report_path, write_report
from fastindex.version import __version__


def _parser() -> argparse.ArgumentParser:
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
    b.set_defaults(func=_build)

    k = sub.add_parser("check", help="list what would not be indexed, write nothing "
                                     "(exit 1 when anything is reported)")
    k.add_argument("root", type=_root, help="folder to check, or s3://bucket/prefix")
    k.add_argument("--lab", help="also check that every session is in LAB/Subjects/")
    _add_tree_options(k)
    _add_source_options(k)
    _add_run_options(k)
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.add_argument("--report", type=Path, help="also write the list here (.csv or .json)")
    k.set_defaults(func=_check)

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
    _add_confirm_links(u)
    _add_source_options(u)
    _add_run_options(u)
    u.set_defaults(func=_update)

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
    v.set_defaults(func=_verify)

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
    f.set_defaults(func=_fix)

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
    r.set_defaults(func=_release)

    d = sub.add_parser("demo-tree", help="generate an example ALF tree")
    d.add_argument("dest", type=Path, help="folder to create the tree in")
    d.add_argument("--files", type=_positive_int, default=10_000,
                   help="about how many files (default 10000)")
    d.add_argument("--shape", default="behaviour", choices=["behaviour", "ephys", "wide", "deep"])
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--sparse-size", type=int, metavar="BYTES",
                   help="make every file sparse, of this size (no disk space needed)")
    d.set_defaults(func=_demo_tree)
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


def _add_confirm_links(command: argparse.ArgumentParser) -> None:
    """update and verify walk as the tables were built, except for links: a recorded
    --follow-symlinks is obeyed only when the user gives it again."""
    command.add_argument("--follow-symlinks", action="store_true",
                         help="follow linked folders, for tables built with "
                              "--follow-symlinks (refused otherwise)")


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
    command.add_argument("--quiet", action="store_true", help="no progress bar, no summary")


def _settings(args: argparse.Namespace) -> dict:
    """The run options, as keywords of the Python API."""
    return {"workers": args.workers, "io_threads": args.io_threads,
            "scheduler": args.scheduler, "progress": not args.quiet,
            "endpoint_url": getattr(args, "endpoint_url", None),
            "anonymous": getattr(args, "anonymous", False)}


def _tree(args: argparse.Namespace) -> dict:
    """The walking options of the spec, as keywords of the Python API."""
    return {"follow_symlinks": args.follow_symlinks, "exclude": args.exclude,
            "default_ignores": args.default_ignores}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text}") from None


def _build(args: argparse.Namespace) -> int:
    from fastindex.build import build
    from fastindex.tablefiles import DATASETS_FILE

    report = check_report_path(args.report) if args.report else None
    tables = args.out or args.root
    had_tables = isinstance(tables, Path) and (tables / DATASETS_FILE).exists()
    try:
        result = build(args.root, args.out, strict=args.strict, hash_ids=not args.string_ids,
                       namespace=args.namespace, lab=args.lab, hash=args.hash, **_tree(args),
                       **_settings(args))
    except ProblemsFound as found:
        return _refuse(found, report, args, "the previous tables are unchanged")
    _tell_outcome(result, report, args, result.summary())
    if not args.quiet:
        unloadable = (result.skipped["reason"] == UNLOADABLE_SESSION).sum()
        if unloadable:
            print(f"fastindex: {unloadable} files are in session folders where ONE does not "
                  f"look for them; `fastindex fix {args.root}` shows the renames that "
                  f"fix that", file=sys.stderr)
        if had_tables and args.hash != "none":
            print("tip: fastindex update re-hashes only the files that changed",
                  file=sys.stderr)
    return 0


#: ``build`` prints at most this many warnings.
WARNINGS_SHOWN = 20
#: ``build --strict`` prints at most this many problems (all of them go to ``--report``).
STRICT_LIST = 50


def _refuse(found: ProblemsFound, report: Path | None, args: argparse.Namespace,
            outcome: str) -> int:
    """List what a strict command found (the first ``STRICT_LIST``) and say why it stopped."""
    frame = _problems(found.skipped, found.warnings)
    _print_problems(frame, sys.stderr, limit=None if report else STRICT_LIST)
    if report:
        write_report(report, frame, str(found))
    print(f"fastindex: {found}; {outcome}"
          f"{_where_listed(report, args, frame.height, STRICT_LIST)}", file=sys.stderr)
    return found.exit_code


def _problems(skipped, warnings):
    from fastindex.report import problems_frame  # polars: only after the workers ran

    return problems_frame(skipped, warnings)


def _where_listed(report: Path | None, args: argparse.Namespace, problems: int,
                  shown: int) -> str:
    """Where to read the problems not printed: the report, or the command that lists
    them, with the walking options of this one (so it lists what this one skipped)."""
    if problems <= shown:
        return ""
    if report:
        return f"; the list: {report}"
    if args.func is _update:  # its walking options are the tables', not the command line's
        return f"; to list them: fastindex update {shlex.quote(str(args.root))} --report FILE"
    same = [f"--exclude {shlex.quote(p)}" for p in getattr(args, "exclude", [])]
    same += ["--follow-symlinks"] if getattr(args, "follow_symlinks", False) else []
    same += [] if getattr(args, "default_ignores", True) else ["--no-default-ignores"]
    command = " ".join(["fastindex check", shlex.quote(str(args.root)), *same])
    return f"; to list them: {command} (or --report FILE)"


def _print_problems(frame, stream, limit: int | None = None) -> None:
    """One tab-separated line per problem: kind, reason, path (detail)."""
    for row in (frame if limit is None else frame.head(limit)).iter_rows(named=True):
        detail = f" ({row['detail']})" if row["detail"] else ""
        print(f"{row['kind']}\t{row['reason']}\t{row['path']}{detail}", file=stream)
    if limit and frame.height > limit:
        print(f"... {frame.height - limit} more", file=stream)


def _tell_outcome(result, report: Path | None, args: argparse.Namespace, summary: str
                  ) -> None:
    """After a build or update: the report when asked for, the first warnings, and the
    summary with where to read what was skipped."""
    if report:
        write_report(report, _problems(result.skipped, result.warnings),
                     {"sessions": result.n_sessions, "datasets": result.n_datasets,
                      "ignored": result.ignored, "bytes": result.total_bytes,
                      "build_id": result.build_id})
    if args.quiet:
        return
    for w in result.warnings[:WARNINGS_SHOWN]:
        print(f"warning: {w.path}: {w.detail}", file=sys.stderr)
    if len(result.warnings) > WARNINGS_SHOWN:
        print(f"... {len(result.warnings) - WARNINGS_SHOWN} more warnings "
              f"(--report FILE lists them all)", file=sys.stderr)
    if result.n_sessions == 0:
        print(f"fastindex: no sessions under {args.root}: the tables are empty",
              file=sys.stderr)
    problems = result.skipped.height + len(result.warnings)
    print(f"fastindex: {summary} -> {result.sessions_path.parent}"
          f"{_where_listed(report, args, problems, 0)}", file=sys.stderr)


def _update(args: argparse.Namespace) -> int:
    from fastindex.update import update

    report = check_report_path(args.report) if args.report else None
    result = update(args.root, args.out, hash=args.hash, namespace=args.namespace,
                    keep_missing=args.keep_missing, force=args.force,
                    follow_symlinks=args.follow_symlinks, **_settings(args))
    _tell_outcome(result.build, report, args, result.summary())
    return 0


def _check(args: argparse.Namespace) -> int:
    from fastindex.build import check

    report = check_report_path(args.report) if args.report else None
    index = check(args.root, lab=args.lab, **_tree(args), **_settings(args))
    frame = _problems(index.skipped, index.warnings)
    summary = (f"{counted(index.sessions.height, 'session')}, "
               f"{counted(index.datasets.height, 'dataset')}, "
               f"{index.skipped.height} skipped, {counted(len(index.warnings), 'warning')}, "
               f"{index.ignored} ignored")
    if report:
        write_report(report, frame, summary)
    if args.json:
        print(json.dumps(frame.to_dicts(), indent=1, ensure_ascii=False))
    else:
        _print_problems(frame, sys.stdout)
    print(f"fastindex: {summary}", file=sys.stderr)
    return 1 if frame.height else 0


def _verify(args: argparse.Namespace) -> int:
    from fastindex.verify import verify, verify_zip

    report = check_report_path(args.report) if args.report else None
    is_zip = isinstance(args.root, Path) and args.root.suffix.lower() == ".zip"
    if is_zip and not args.root.exists():
        raise InputError(f"no such zip: {args.root}")
    if is_zip and args.root.is_file():
        if args.tables or args.scheduler:
            raise InputError("a release zip holds its tables; --tables and --scheduler "
                             "do not apply")
        result = verify_zip(args.root, hash=args.hash, progress=not args.quiet)
    else:
        result = verify(args.root, args.tables, hash=args.hash,
                        follow_symlinks=args.follow_symlinks, **_settings(args))
    if report:
        write_report(report, result.differences, result.summary(), key="differences")
    for row in result.differences.head(20).iter_rows(named=True):
        print(f"{row['kind']}: {row['path']} (tables: {row['expected'] or 'no row'}, "
              f"found: {row['found'] or 'no file'})", file=sys.stderr)
    if result.differences.height > 20:
        print(f"... {result.differences.height - 20} more", file=sys.stderr)
    print(f"fastindex: {result.summary()}", file=sys.stderr)
    return 0 if result.ok else 1


def _release(args: argparse.Namespace) -> int:
    from fastindex.publish import release

    try:
        result = release(args.root, args.out, allow_skipped=args.allow_skipped,
                         allow_outside_links=args.allow_outside_links, include=args.include,
                         compression=args.compression, hash=args.hash, tables=args.tables,
                         **_tree(args), **_settings(args))
    except ProblemsFound as found:
        return _refuse(found, None, args, found.remedy or
                       "no zip written (--allow-skipped releases the tree without them)")
    listed = _problems(result.build.skipped, result.build.warnings)
    if listed.height:
        _print_problems(listed, sys.stderr)
    if result.build.skipped.height:
        print(f"fastindex: {counted(result.build.skipped.height, 'file')} skipped, not in the zip",
              file=sys.stderr)
    print(f"fastindex: {result.build.summary()}", file=sys.stderr)
    tables = result.build.sessions_path
    print(f"fastindex: tables in {tables.parent} and in the zip" if tables else
          f"fastindex: tables in the zip only ({display_path(str(args.root))} is not writable; "
          f"--tables DIR writes them there too)", file=sys.stderr)
    print(f"fastindex: released {result.summary()}", file=sys.stderr)
    print(f"{result.sha256}  {result.path.name}")
    return 0


def _fix(args: argparse.Namespace) -> int:
    from fastindex import fix
    from fastindex.tablefiles import DATASETS_FILE

    if args.undo:
        if args.apply or args.lab:
            raise InputError("--undo takes only ROOT and the journal")
        root, undone, left = fix.undo(args.root, args.undo)
        for line in left:
            print(f"not undone: {line}", file=sys.stderr)
        print(f"fastindex: {counted(undone, 'rename')} undone under {root}", file=sys.stderr)
        return 1 if left else 0
    plan = fix.plan(args.root, args.lab)
    for step in plan.renames:  # names shown as check shows them: \xNN for bytes not UTF-8
        print(f"rename\t{display_path(step.source)}\t{display_path(step.target)}")
    for folder, why in plan.refused:
        print(f"refused\t{display_path(str(folder))}\t{why}")
    summary = (f"{counted(plan.unloadable, 'session')} where ONE does not look for them; "
               f"{counted(len(plan.renames), 'rename')}, {len(plan.refused)} refused")
    if not plan.renames:
        print(f"fastindex: {summary}: nothing to rename", file=sys.stderr)
    elif not args.apply:
        print(f"fastindex: {summary}; a dry run: add --apply to rename", file=sys.stderr)
    else:
        journal = args.journal or Path(f"fastindex-fix-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
        done = fix.apply(plan, journal.resolve())
        next_step = "update" if (plan.root / DATASETS_FILE).exists() else "build"
        print(f"fastindex: {summary}; renamed {counted(done, 'folder')} (undo: fastindex fix "
              f"{args.root} --undo {journal}); now run: fastindex {next_step} {args.root}",
              file=sys.stderr)
    return 1 if plan.refused else 0


def _demo_tree(args: argparse.Namespace) -> int:
    from fastindex.treegen import make_tree

    n = make_tree(args.dest, files=args.files, shape=args.shape, seed=args.seed,
                  sparse_size=args.sparse_size)
    print(f"fastindex: wrote {counted(n, 'file')} under {args.dest}", file=sys.stderr)
    return 0


def _unknown_options(command: argparse.ArgumentParser, unknown: list[str]) -> None:
    """The command's usage and the option it most likely meant (exits 2)."""
    known = [o for action in command._actions for o in action.option_strings]
    close = difflib.get_close_matches(unknown[0].split("=")[0], known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


def _terminate(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary tables are removed on the way out."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising."""
    args, unknown = _parser().parse_known_args(argv)
    if unknown:
        _unknown_options(args.command_parser, unknown)
    try:
        if threading.current_thread() is threading.main_thread():
            if getattr(signal.getsignal(signal.SIGINT), "__module__", "") == "fastindex_entry":
                signal.signal(signal.SIGINT, signal.default_int_handler)  # the command starts
            signal.signal(signal.SIGTERM, _terminate)
        with log.kept_quiet():
            return args.func(args)
    except FastindexError as err:
        print(f"fastindex: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as stop:
        landed = getattr(stop, "landed", "the previous tables are unchanged")
        print(f"fastindex: interrupted; {landed}", file=sys.stderr)
        return 130
    except OSError as err:  # the machine's, not the input's: a device, a permission
        print(f"fastindex: error: {err}", file=sys.stderr)
        return FastindexError.exit_code


def run() -> None:
    """The console script and ``python -m fastindex``: ``main``, then a fast exit.

    The interpreter's teardown of Arrow, polars and numpy takes 0.05 to 0.1 s, a tenth
    of a 74k-file build, and does nothing that matters here: every table, report and
    lock is closed and every pool shut down before ``main`` returns.  So the output
    streams are flushed and the process leaves with ``os._exit``.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (``fastindex check | head``): nothing more to say
        code = code or 1
    os._exit(code)

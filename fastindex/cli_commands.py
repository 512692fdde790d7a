"""The ``fastindex`` commands as the command line runs them: each handler takes the
parsed arguments, calls the Python API, prints what the user reads and returns the exit
code (see ``cli``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from fastindex.errors import InputError, ProblemsFound
from fastindex.problems import UNLOADABLE_SESSION, display_path
from fastindex.progress import counted
from fastindex.report import check_report_path, write_report


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


def run_build(args: argparse.Namespace) -> int:
    from fastindex.build import build
    from fastindex.tablefiles import DATASETS_FILE

    report = check_report_path(args.report) if args.report else None
    _check_tables_writable(args, "give --out DIR")
    tables = args.out or args.root
    had_tables = isinstance(tables, Path) and (tables / DATASETS_FILE).exists()
    try:
        result = build(args.root, args.out, strict=args.strict, hash_ids=not args.string_ids,
                       namespace=args.namespace, lab=args.lab, hash=args.hash,
                       allow_shrink=args.allow_shrink, **_tree(args), **_settings(args))
    except ProblemsFound as found:
        return _refuse(found, report, args, "the previous tables are unchanged")
    _tell_outcome(result, report, args, result.summary())
    if not args.quiet:
        unloadable = int((result.skipped["reason"] == UNLOADABLE_SESSION).sum())
        if unloadable:
            print(f"fastindex: {counted(unloadable, 'file')} in session folders where ONE "
                  f"does not look for them; {_how_to_move(args)}", file=sys.stderr)
        if had_tables and args.hash != "none":
            print("tip: fastindex update re-hashes only the files that changed",
                  file=sys.stderr)
    return 0


def _check_tables_writable(args: argparse.Namespace, remedy: str) -> None:
    """Without ``--out`` the tables go in ROOT: a read-only ROOT (``store.read_only``:
    one this process cannot write, or whose mode has no write bit, even for root) is
    refused before any work, with ``remedy``, the way to write them elsewhere."""
    from fastindex.store import read_only

    root = args.root
    if args.out is None and isinstance(root, Path) and root.expanduser().is_dir() and (
            read_only(root.expanduser())):
        raise InputError(f"cannot write the tables in {root} (not writable): {remedy}")


def _how_to_move(args: argparse.Namespace) -> str:
    """Advice on sessions where ONE does not look that works on this root: ``fix``
    renames a folder's sessions; a bucket's keys are moved by the user (``fix`` takes no
    bucket), to the prefix each problem's detail names."""
    if _is_bucket(args.root):
        where = f"in {args.report}" if args.report else "--report FILE lists them"
        return (f"move their keys to the prefix ONE looks in, which each one's detail "
                f"names ({where}); fastindex fix renames local folders, not a bucket's keys")
    return f"`fastindex fix {shlex.quote(str(args.root))}` shows the renames that fix that"


def _is_bucket(root) -> bool:
    return isinstance(root, str) and root.startswith("s3://")


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
    source = _source_options(args)
    same = [f"--exclude {shlex.quote(p)}" for p in getattr(args, "exclude", [])]
    same += ["--follow-symlinks"] if getattr(args, "follow_symlinks", False) else []
    if args.func is run_update:  # it walks as the tables say, once confirmed
        command = " ".join(["fastindex update", shlex.quote(str(args.root)), *same, *source])
        return f"; to list them: {command} --report FILE"
    same += [] if getattr(args, "default_ignores", True) else ["--no-default-ignores"]
    command = " ".join(["fastindex check", shlex.quote(str(args.root)), *same, *source])
    return f"; to list them: {command} (or --report FILE)"


def _source_options(args: argparse.Namespace) -> list[str]:
    """Where this command's bucket is (``--endpoint-url``, ``--no-sign-request``), for
    advice that names another command on the same root."""
    endpoint = getattr(args, "endpoint_url", None)
    return ([f"--endpoint-url {shlex.quote(endpoint)}"] if endpoint else []) + (
        ["--no-sign-request"] if getattr(args, "anonymous", False) else [])


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
        print(f"... {counted(len(result.warnings) - WARNINGS_SHOWN, 'more warning')} "
              f"(--report FILE lists them all)", file=sys.stderr)
    if result.n_sessions == 0:
        print(f"fastindex: no sessions under {args.root}: the tables are empty",
              file=sys.stderr)
    problems = result.skipped.height + len(result.warnings)
    print(f"fastindex: {summary} -> {result.sessions_path.parent}"
          f"{_where_listed(report, args, problems, 0)}", file=sys.stderr)


def run_update(args: argparse.Namespace) -> int:
    from fastindex.update import update

    report = check_report_path(args.report) if args.report else None
    _check_tables_writable(args, f"fastindex build {shlex.quote(str(args.root))} --out DIR "
                                 f"writes them elsewhere")
    result = update(args.root, args.out, hash=args.hash, namespace=args.namespace,
                    keep_missing=args.keep_missing, force=args.force,
                    follow_symlinks=args.follow_symlinks, exclude=args.exclude,
                    allow_shrink=args.allow_shrink,
                    **_settings(args))
    _tell_outcome(result.build, report, args, result.summary())
    return 0


def run_check(args: argparse.Namespace) -> int:
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
    if not args.quiet:
        print(f"fastindex: {summary}", file=sys.stderr)
    return 1 if frame.height else 0


def run_verify(args: argparse.Namespace) -> int:
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
                        follow_symlinks=args.follow_symlinks, exclude=args.exclude,
                        **_settings(args))
    if report:
        write_report(report, result.differences, result.summary(), key="differences")
    for row in result.differences.head(20).iter_rows(named=True):
        print(f"{row['kind']}: {row['path']} (tables: {row['expected'] or 'no row'}, "
              f"found: {row['found'] or 'no file'})", file=sys.stderr)
    if result.differences.height > 20:
        print(f"... {result.differences.height - 20} more", file=sys.stderr)
    if not args.quiet:
        print(f"fastindex: {result.summary()}", file=sys.stderr)
    return 0 if result.ok else 1


def run_release(args: argparse.Namespace) -> int:
    from fastindex.release import release

    try:
        result = release(args.root, args.out, allow_skipped=args.allow_skipped,
                         allow_outside_links=args.allow_outside_links, include=args.include,
                         compression=args.compression, hash=args.hash, tables=args.tables,
                         **_tree(args), **_settings(args))
    except ProblemsFound as found:
        return _refuse(found, None, args, found.remedy or
                       "no zip written (--allow-skipped releases the tree without them)")
    if args.quiet:
        print(f"{result.sha256}  {result.path.name}")
        return 0
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


def run_fix(args: argparse.Namespace) -> int:
    from fastindex import fix
    from fastindex.tablefiles import DATASETS_FILE

    if args.undo:
        if args.apply or args.lab:
            raise InputError("--undo takes only ROOT and the journal")
        root, undone, left = fix.undo(args.root, args.undo)
        for line in left:
            print(f"not undone: {line}", file=sys.stderr)
        if not args.quiet:
            print(f"fastindex: {counted(undone, 'rename')} undone under {root}"
                  f"{_stale_after_undo(root) if undone else ''}", file=sys.stderr)
        return 1 if left else 0
    plan = fix.plan(args.root, args.lab)
    for step in plan.renames:  # names shown as check shows them: \xNN for bytes not UTF-8
        print(f"rename\t{display_path(step.source)}\t{display_path(step.target)}")
    for folder, why in plan.refused:
        print(f"refused\t{display_path(str(folder))}\t{why}")
    summary = (f"{counted(plan.unloadable, 'session')} where ONE does not look for them; "
               f"{counted(len(plan.renames), 'rename')}, {len(plan.refused)} refused")
    if plan.renames and args.apply:
        journal = args.journal or fix.default_journal(plan.root)
        done = fix.apply(plan, journal.resolve())
    if args.quiet:
        pass
    elif not plan.renames:
        print(f"fastindex: {summary}: nothing to rename", file=sys.stderr)
    elif not args.apply:
        print(f"fastindex: {summary}; a dry run: add --apply to rename", file=sys.stderr)
    else:
        next_step = "update" if (plan.root / DATASETS_FILE).exists() else "build"
        print(f"fastindex: {summary}; renamed {counted(done, 'folder')} (undo: fastindex fix "
              f"{args.root} --undo {journal}); now run: fastindex {next_step} {args.root}",
              file=sys.stderr)
    return 1 if plan.refused else 0


def run_demo_tree(args: argparse.Namespace) -> int:
    from fastindex.treegen import make_tree

    n = make_tree(args.dest, files=args.files, shape=args.shape, seed=args.seed,
                  sparse_size=args.sparse_size)
    if not args.quiet:
        print(f"fastindex: wrote {counted(n, 'file')} under {args.dest}", file=sys.stderr)
    return 0


def _stale_after_undo(root: Path) -> str:
    """What an undo leaves to do: tables built after the renames list the folders
    where the renames put them, so they are stale until the next update or build."""
    from fastindex.tablefiles import DATASETS_FILE

    next_step = "update" if (root / DATASETS_FILE).exists() else "build"
    return (f"; tables built after the renames are now stale: now run: fastindex "
            f"{next_step} {shlex.quote(str(root))}")

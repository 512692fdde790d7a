"""The ``fastindex`` command line.

Exit codes: 0 done; 1 problems were found where the command treats them as failure
(``build --strict``, which then writes nothing; ``check``; ``verify``); 2 bad input
(missing root, unwritable output, bad option or report path, another build writing the
same tables, tables that would shrink without ``--allow-shrink``); 3 the build failed (a
worker died, a folder above the sessions could not be listed) and nothing was written;
130 interrupted (Ctrl-C or SIGTERM).

``--quiet``, on every command: no progress and none of the lines that say how a command
went (its summary, the warnings after a build, advice); errors, refusals and the output
the user asked for (``check``'s list or ``--json``, ``verify``'s differences, ``fix``'s
renames, ``release``'s sha256 line) are printed all the same, and the exit code is the
same.  So a script sees results and failures, and nothing else.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import threading

from fastindex import log
from fastindex.cli_parser import build_parser
from fastindex.errors import FastindexError


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
    args, unknown = build_parser().parse_known_args(argv)
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

    The output streams are flushed and the process leaves with ``os._exit``: every
    table, report and lock is closed and every pool shut down before ``main`` returns,
    so the interpreter's teardown of Arrow, polars and numpy would only add time.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (``fastindex check | head``): nothing more to say
        code = code or 1
    os._exit(code)

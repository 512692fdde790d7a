"""The ``fastindex`` console script: a Ctrl-C before the command starts is one line.

A Ctrl-C while fastindex imports (polars, pyarrow, the executors) would end in a
traceback from the middle of an import.  This module lives outside
the package so that its first statement runs before any of those imports: until the
command has started, SIGINT and SIGTERM print one line and exit 130 (nothing has been
written yet); ``cli.main`` then puts Python's own handling back, under which
interrupted work cleans up after itself.  A signal while the interpreter itself starts
comes before any of this and is Python's to report.
"""

import os
import signal


def _before_start(signum, frame) -> None:
    os.write(2, b"fastindex: interrupted before starting; nothing was written\n")
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _before_start)
    signal.signal(signal.SIGTERM, _before_start)
    from fastindex.cli import run

    run()


if __name__ == "__main__":
    main()  # run() leaves the process itself

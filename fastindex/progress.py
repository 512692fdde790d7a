"""Progress on stderr: a live bar on a terminal, a line every few seconds in a log.

tqdm draws the bar.  When stderr is not a terminal (a batch job's log, a pipe), each
refresh is written as a line of its own, at most one per ``LOG_INTERVAL`` seconds,
instead of tqdm's carriage returns, which pile up in a log file as one huge line.
tqdm is imported only when a bar is made: the workers are started before it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

LOG_INTERVAL = 5.0  # seconds between two progress lines in a log


class LogLines:
    """A stream for tqdm that turns each refresh into one plain line.

    The first line, tqdm's drawing of the bar before any work ("hashing: 0.00B"), is
    left out: in a log it says nothing.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = False

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and not self.started:
            self.started = True
        elif line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(progress: bool, desc: str, unit: str, total: float | None = None) -> tqdm:
    """A bar on stderr (disabled unless ``progress``, and when there is nothing to do:
    a ``total`` of 0); bytes are shown scaled."""
    from tqdm import tqdm

    stream = sys.stderr
    interactive = stream.isatty()
    return tqdm(desc=desc, unit=unit, unit_scale=unit == "B", total=total,
                disable=not progress or total == 0,
                file=stream if interactive else LogLines(stream),
                mininterval=0.1 if interactive else LOG_INTERVAL,
                maxinterval=10.0 if interactive else 60.0)


def counted(n: int, noun: str) -> str:
    """``1, "file"`` -> ``1 file``; ``2, "file"`` -> ``2 files``: counts in messages."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def human_bytes(n: float) -> str:
    """``1234567`` -> ``1.2 MB``: sizes in summaries."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"

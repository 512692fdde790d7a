"""What the Python API says, through the ``fastindex`` logger, as one-api does.

A build from Python (``build``, ``make_parquet_db``, ``One.setup`` after
``use_fastindex``) or an update or release logs its summary at INFO and, when files
were skipped or warned about, a WARNING with the counts by reason, the first few paths
and how to list them (every path at DEBUG): a session folder spelled ``1`` must not
vanish without a word.  The library prints nothing: the logger has a ``NullHandler``,
the standard practice for a library, so its records are shown only where the program
configures logging (without it, Python's last-resort handler would print warnings on
stderr).  The CLI prints its own lines and keeps these to itself (``kept_quiet``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastindex.problems import UNLOADABLE_SESSION
from fastindex.progress import counted

if TYPE_CHECKING:
    from fastindex.results import BuildResult

logger = logging.getLogger("fastindex")
logger.addHandler(logging.NullHandler())

#: The WARNING names at most this many paths (DEBUG records name every one).
PATHS_NAMED = 3


def outcome(what: str, root: object, result: BuildResult) -> None:
    """Log a build's summary (INFO) and what it left out (WARNING: counts by reason,
    the first ``PATHS_NAMED`` paths, how to list them and, for sessions where ONE does
    not look, how to move them; DEBUG: one record per path)."""
    logger.info("%s %s: %s", what, root, result.summary())
    total = result.skipped.height + len(result.warnings)
    if not total:
        return
    every = logger.isEnabledFor(logging.DEBUG)  # else only the first few rows are read
    skipped = result.skipped if every else result.skipped.head(PATHS_NAMED)
    listed = [(row["path"], row["reason"], row["detail"])
              for row in skipped.iter_rows(named=True)]
    listed += [(w.path, w.reason, w.detail) for w in result.warnings]
    reasons = Counter(result.skipped["reason"].to_list())
    warned = Counter(w.reason for w in result.warnings)
    parts = []
    if reasons:
        parts.append(f"{counted(sum(reasons.values()), 'file')} skipped ("
                     + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")")
    if warned:
        parts.append(f"{counted(sum(warned.values()), 'warning')} ("
                     + ", ".join(f"{n} {r}" for r, n in sorted(warned.items())) + ")")
    first = ", ".join(path for path, _, _ in listed[:PATHS_NAMED])
    more = f" and {total - PATHS_NAMED} more" if total > PATHS_NAMED else ""
    fix = ("" if not reasons[UNLOADABLE_SESSION] else
           "; move their keys to the prefix ONE looks in (each one's detail names it)"
           if str(root).startswith("s3://") else
           f"; fastindex fix {root} shows the renames that put their sessions where ONE "
           f"looks")
    logger.warning("%s %s: %s: %s%s%s; to list them: fastindex check %s, or the result's "
                   ".skipped and .warnings", what, root, " and ".join(parts), first, more,
                   fix, root)
    if every:
        for path, reason, detail in listed:
            logger.debug("%s %s: %s: %s%s", what, root, reason, path,
                         f" ({detail})" if detail else "")


@contextlib.contextmanager
def kept_quiet() -> Iterator[None]:
    """The CLI's commands say everything themselves: the logger's records stop here
    (restored after, for the callers of ``cli.main`` in the same process)."""
    before = logger.propagate
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = before

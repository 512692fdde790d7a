"""What the Python API says, through the ``fastindex`` logger, as one-api does.

A build from Python (``build``, ``make_parquet_db``, ``One.setup`` after
``use_fastindex``) or an update or release logs its summary at INFO and, when files
were skipped or warned about, a WARNING with the counts by reason and how to list
them: a session folder spelled ``1`` must not vanish without a word.  The library
prints nothing; the CLI prints its own lines and keeps these to itself
(``kept_quiet``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastindex.progress import counted

if TYPE_CHECKING:
    from fastindex.results import BuildResult

logger = logging.getLogger("fastindex")


def outcome(what: str, root: object, result: BuildResult) -> None:
    """Log a build's summary (INFO) and what it left out (WARNING)."""
    logger.info("%s %s: %s", what, root, result.summary())
    reasons = Counter(result.skipped["reason"].to_list())
    warned = Counter(w.reason for w in result.warnings)
    if not (reasons or warned):
        return
    parts = []
    if reasons:
        parts.append(f"{counted(sum(reasons.values()), 'file')} skipped ("
                     + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")")
    if warned:
        parts.append(f"{counted(sum(warned.values()), 'warning')} ("
                     + ", ".join(f"{n} {r}" for r, n in sorted(warned.items())) + ")")
    logger.warning("%s %s: %s; to list them: fastindex check %s, or the result's "
                   ".skipped and .warnings", what, root, " and ".join(parts), root)


@contextlib.contextmanager
def kept_quiet() -> Iterator[None]:
    """The CLI's commands say everything themselves: the logger's records stop here
    (restored after, for the callers of ``cli.main`` in the same process)."""
    before = logger.propagate
    null = logging.NullHandler()
    logger.addHandler(null)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = before
        logger.removeHandler(null)

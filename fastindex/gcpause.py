"""Python's cycle collector, paused while a build's many acyclic objects pile up."""

from __future__ import annotations

import functools
import gc


def pauses_gc(fn):
    """Run ``fn`` with Python's cycle collector paused (as it was, after).

    A tree's sessions and batches are many small objects without cycles: while they pile
    up, the collector scans them all again and again, for nothing.  Reference counting
    still frees them.
    """

    @functools.wraps(fn)
    def paused(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused

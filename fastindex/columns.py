"""Arrow columns built straight from their buffers.

Workers build their columns here rather than with ``pyarrow.array``: pyarrow imports
pandas (about 0.35 s of CPU) the first time it converts a Python list, in every worker
of every build.  Filling an ``array.array`` and handing its buffer over is also faster.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

import pyarrow as pa


def strings(encoded: list[bytes]) -> pa.Array:
    """A utf8 column from UTF-8-encoded values (``large_string`` past 2 GiB of text)."""
    offsets = array("q", accumulate((len(b) for b in encoded), initial=0))
    kind = pa.large_string()
    if offsets[-1] < 2**31:
        offsets, kind = array("i", offsets), pa.string()
    return pa.Array.from_buffers(kind, len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def integers(values: list[int], kind: pa.DataType) -> pa.Array:
    """An unsigned integer column (``pa.uint32()`` or ``pa.uint64()``)."""
    code = {pa.uint32(): "I", pa.uint64(): "Q"}[kind]
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(array(code, values))])


def fixed_binary(values: list[bytes], width: int) -> pa.Array:
    """A ``binary(width)`` column from values of exactly ``width`` bytes."""
    return pa.Array.from_buffers(pa.binary(width), len(values),
                                 [None, pa.py_buffer(b"".join(values))])

"""Generate realistic ALF trees of any size, deterministically from a seed.

Used by the demo, the tests and the benchmarks, since real releases cannot be fetched
here.  The files are real ``.npy`` arrays (numpy is needed: ``fastindex[demo]``) whose
objects have consistent row counts, so ONE can load them; large raw files can be sparse
so that big trees need no real disk space.
"""

from __future__ import annotations

import datetime
import io
import os
import random
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

SHAPES = ("behaviour", "ephys", "wide", "deep")
LABS = ("cortexlab", "churchlandlab", "hoferlab", "mrsicflogellab", "danlab",
        "wittenlab", "angelakilab", "mainenlab", "zadorlab", "steinmetzlab")
TRIALS = ("choice", "contrastLeft", "contrastRight", "feedbackType", "feedback_times",
          "firstMovement_times", "goCue_times", "intervals", "probabilityLeft",
          "response_times", "rewardVolume", "stimOn_times")
WHEEL = (("_ibl_wheel", "position"), ("_ibl_wheel", "timestamps"),
         ("_ibl_wheelMoves", "intervals"))
SPIKES = ("times", "clusters", "amps", "depths")
CLUSTERS = ("channels", "depths", "amps")


@lru_cache(maxsize=4096)
def _npy(rows: int, cols: int) -> bytes:
    """The bytes of a float64 .npy array; cached, since many files share a shape."""
    try:
        import numpy as np
    except ImportError:
        from fastindex.errors import InputError

        raise InputError("demo-tree writes .npy arrays and needs numpy: "
                         "pip install 'fastindex[demo]'") from None

    array = np.arange(rows * cols, dtype=np.float64).reshape((rows, cols) if cols > 1 else rows)
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _session_files(shape: str, rng: random.Random, revision: str,
                   raw_mb: tuple[int, int] = (2, 8)) -> Iterator[tuple[str, bytes | int]]:
    """(rel_path, content) for one session; content is bytes, or a size for a sparse file."""
    trials = rng.randint(300, 900)
    for attr in TRIALS:
        yield f"alf/_ibl_trials.{attr}.npy", _npy(trials, 2 if attr == "intervals" else 1)
    moves = rng.randint(100, 400)
    for obj, attr in WHEEL:
        rows = moves if obj == "_ibl_wheelMoves" else trials * 2
        yield f"alf/{obj}.{attr}.npy", _npy(rows, 2 if attr == "intervals" else 1)
    if shape != "ephys":
        return
    yield "alf/_ibl_trials.stimOn_times_bpod.npy", _npy(trials, 1)  # a timescale
    yield f"raw_behavior_data/_iblrig_taskData.raw.{rng.getrandbits(32):08x}.jsonable", b"{}\n"
    for probe in range(rng.randint(1, 4)):
        spikes, clusters = rng.randint(1000, 3000), rng.randint(50, 200)
        sorter = f"alf/probe0{probe}/pykilosort"
        for folder in (sorter, f"{sorter}/#{revision}#"):
            for attr in SPIKES:
                yield f"{folder}/spikes.{attr}.npy", _npy(spikes, 1)
            for attr in CLUSTERS:
                yield f"{folder}/clusters.{attr}.npy", _npy(clusters, 1)
        raw = f"raw_ephys_data/probe0{probe}/_spikeglx_ephysData_g0_t0.imec{probe}"
        yield f"{raw}.ap.cbin", rng.randint(*raw_mb) * 1_000_000
        yield f"{raw}.ap.meta", b"nSavedChans=385\n"


def _layout(shape: str, sessions: int, rng: random.Random) -> Iterator[str]:
    """Session folders (root-relative) for ``sessions`` sessions of the given shape."""
    per_subject = {"behaviour": 40, "ephys": 10, "wide": 2, "deep": 2000}[shape]
    subjects = max(1, -(-sessions // per_subject))
    labs = LABS[: max(1, min(len(LABS), subjects // 10 or 1))]
    made = 0
    for s in range(subjects):
        lab = labs[s % len(labs)]
        day = datetime.date(2019, 1, 1) + datetime.timedelta(days=rng.randint(0, 900))
        for _ in range(min(per_subject, sessions - made)):
            numbers = rng.choice((1, 1, 1, 2))
            for number in range(1, numbers + 1):
                if made == sessions:
                    break
                yield f"{lab}/Subjects/{lab[:4].upper()}_{s:04d}/{day.isoformat()}/{number:03d}"
                made += 1
            day += datetime.timedelta(days=rng.randint(1, 3))


def make_tree(dest: str | os.PathLike, files: int = 10_000, shape: str = "behaviour",
              seed: int = 0, sparse: bool = True, sparse_size: int | None = None,
              raw_mb: tuple[int, int] = (2, 8)) -> int:
    """Write an ALF tree of about ``files`` files under ``dest``; returns the file count.

    ``sparse`` makes the large raw files sparse (no disk blocks); otherwise they are
    written in full with zeros.  ``sparse_size`` makes every file a sparse file of that
    many bytes instead of a real array: large trees then need no disk space and are
    quick to write (the layout and names are the same).  ``raw_mb`` is the range of
    sizes, in MB, of the ephys shape's raw recordings (real ones are tens of GB).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    rng = random.Random(seed)
    per_session = 15 if shape != "ephys" else 57  # 17 + 16 per probe, 2.5 probes
    dest = Path(dest)
    written = 0
    for folder in _layout(shape, max(1, round(files / per_session)), rng):
        revision = "2024-05-06"
        for rel, content in _session_files(shape, rng, revision, raw_mb):
            path = dest / folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, content if sparse_size is None else sparse_size, sparse)
            written += 1
    return written


def _write(path: Path, content: bytes | int, sparse: bool) -> None:
    with open(path, "wb") as f:
        if isinstance(content, bytes):
            f.write(content)
        elif sparse:
            f.truncate(content)
        else:
            chunk = bytes(1 << 20)
            for start in range(0, content, len(chunk)):
                f.write(chunk[: min(len(chunk), content - start)])

"""The example trees behind the demo and the benchmarks: reproducible, and sized as asked."""

from __future__ import annotations

from pathlib import Path

from fastindex.treegen import make_tree


def _listing(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size
            for p in root.rglob("*") if p.is_file()}


def test_a_seed_gives_the_same_tree(tmp_path) -> None:
    make_tree(tmp_path / "a", files=300, shape="ephys", seed=5)
    make_tree(tmp_path / "b", files=300, shape="ephys", seed=5)
    make_tree(tmp_path / "c", files=300, shape="ephys", seed=6)
    assert _listing(tmp_path / "a") == _listing(tmp_path / "b") != _listing(tmp_path / "c")


def test_raw_recordings_are_sparse_and_sized_by_raw_mb(tmp_path) -> None:
    make_tree(tmp_path / "t", files=300, shape="ephys", seed=1, raw_mb=(20, 30))
    raw = [p for p in (tmp_path / "t").rglob("*.ap.cbin")]
    assert raw
    for path in raw:
        st = path.stat()
        assert 20_000_000 <= st.st_size <= 30_000_000
        assert st.st_blocks * 512 < st.st_size  # no disk space taken

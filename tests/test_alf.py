"""fastindex's ALF rules are one-api's: property tests against one.alf.spec and path."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from one.alf import path as one_path
from one.alf import spec as one_spec

from fastindex import alf
from fastindex.merge import row_order, uuid3_text

ONE_FILE = one_spec.regex(one_spec.FILE_SPEC)
ONE_REL = one_spec.regex(one_spec.REL_PATH_SPEC)

word = st.text(st.sampled_from("abcXYZ019_"), min_size=1, max_size=6)
noise = st.text(st.sampled_from("aZ0_.-# /é\n"), max_size=4)
part = st.one_of(word, st.tuples(word, noise, word).map("".join), noise)


@st.composite
def file_names(draw) -> str:
    """Names near the ALF pattern: mostly well-formed parts, sometimes broken ones."""
    ns = draw(st.sampled_from(["", "_", "_ibl_", "_x_y_"]))
    pieces = [draw(part) for _ in range(draw(st.integers(1, 5)))]
    return ns + ".".join(pieces)


@st.composite
def rel_paths(draw) -> str:
    folders = draw(st.lists(st.one_of(word, part, word.map(lambda w: f"#{w}#")), max_size=3))
    return "/".join([*folders, draw(file_names())])


@given(st.one_of(file_names(), st.text(max_size=30)))
@example("trials.intervals.npy")
@example("_ibl_trials.stimOn_times_bpod.npy")
@example("bad name.with space.npy")
@example(".hidden.file.npy")
def test_file_names_match_one(name: str) -> None:
    assume("\n" not in name)  # the one documented difference, tested below
    assert alf.is_dataset_name(name) == (ONE_FILE.match(name) is not None)


@given(rel_paths())
@example("alf/#v1#/spikes.times.npy")
@example("#v1#/alf/spikes.times.npy")
@example("my coll/spikes.times.npy")
def test_rel_paths_match_one(rel_path: str) -> None:
    assume("\n" not in rel_path)
    assume(not _climbs(rel_path.split("/")[:-1]))  # documented difference, tested below
    assert alf.is_rel_path(rel_path) == (ONE_REL.match(rel_path) is not None)


def _climbs(folders: list[str]) -> bool:
    return any(f in ("", ".", "..") for f in folders)


@pytest.mark.parametrize("rel_path", ["../../etc/x.y.npy", "alf/../x.y.npy", "./x.y.npy",
                                      "alf/./x.y.npy", "alf//x.y.npy", "../#v1#/x.y.npy"])
def test_collections_never_climb_out_of_the_session(rel_path: str) -> None:
    assert ONE_REL.match(rel_path) is not None  # one-api's pattern takes them
    assert not alf.is_rel_path(rel_path)
    assert alf.is_rel_path(rel_path.replace("..", "a..b").replace("/./", "/a/")
                           .replace("//", "/a/").lstrip("./") or "x.y.npy")


@pytest.mark.parametrize("path", ["lab/Subjects/sub/\u0662\u0660\u0662\u0660-\u0660\u0661-"
                                  "\u0660\u0661/001", "sub/2020-01-01/\u0660\u0660\u0661",
                                  "lab/Subjects/../2020-01-01/001", "./2020-01-01/001"])
def test_session_digits_are_ascii_and_subjects_never_climb(path: str) -> None:
    assert one_spec.is_session_path(path)  # one-api's pattern takes them
    assert alf.session_parts(path) is None


def test_trailing_newline_is_not_a_dataset() -> None:
    assert ONE_FILE.match("trials.table.npy\n") is not None  # one-api's `$` accepts it
    assert not alf.is_dataset_name("trials.table.npy\n")


session_paths = st.tuples(
    st.lists(st.one_of(word, part), max_size=3),
    st.sampled_from(["", "Subjects"]),
    st.one_of(word, part),
    st.one_of(st.just("2020-01-31"), st.text(st.sampled_from("0129-"), min_size=8, max_size=11)),
    st.text(st.sampled_from("0123a"), min_size=1, max_size=4),
).map(lambda t: "/".join(filter(None, [*t[0], t[1], t[2], t[3], t[4]])))


@given(session_paths)
@example("/data/lab/Subjects/subj/2020-01-01/001")
@example("subj/2020-01-01/1")
@example("lab/Subjects/subj/2020-01-01/0001")
def test_session_paths_match_one(path: str) -> None:
    # A difference, tested above: no subject "." or "..", also as one-api reads it, from
    # the end of a folder name ("#." is subject "." to its unanchored pattern).
    subject = re.search(r"[\w.-]*$", ("", *path.split("/"))[-3:][0])[0]
    assume(subject not in (".", ".."))
    ours = alf.session_parts(path)
    assert (ours is not None) == one_spec.is_session_path(path)
    if ours is not None:
        lab, subject, date, number = one_path.session_path_parts(path, assert_valid=True)
        assert ours == (lab or "", subject, date, number)


@given(st.binary(min_size=16, max_size=16), st.lists(st.text(max_size=40), max_size=5))
def test_vectorized_uuid3_is_uuid3(namespace: bytes, names: list[str]) -> None:
    names = [n for n in names if n.encode("utf-8", "surrogatepass") == n.encode("utf-8", "ignore")]
    import hashlib

    digests = b"".join(hashlib.md5(namespace + name.encode()).digest() for name in names)
    got = uuid3_text(digests).to_pylist()
    assert got == [str(uuid.uuid3(uuid.UUID(bytes=namespace), name)) for name in names]


@given(st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=2, max_size=2),
                          st.binary(min_size=12, max_size=12)), max_size=40))
def test_rows_are_ordered_as_their_session_rank_and_uuid_text_sort(
        rows: list[tuple[int, bytes, bytes]]) -> None:
    # ids sharing their first bytes (a tie of the fast key) are still ordered by the rest
    ids = [b"\x00\x00" + head + rest for _, head, rest in rows]
    rank = np.array([r for r, _, _ in rows], dtype=np.uint32)
    matrix = np.frombuffer(b"".join(ids), dtype=np.uint8).reshape(-1, 16)
    order = row_order(rank, matrix).tolist()
    text = [str(uuid.UUID(bytes=i)) for i in ids]
    assert [(rank[i], text[i]) for i in order] == sorted(zip(rank.tolist(), text))


def test_revision_group_is_ones_key() -> None:
    assert alf.revision_group("alf/#v1#/trials.table.npy") == "alf/trials.table.npy"
    assert alf.revision_group("#2020-01-01#/trials.table.npy") == "trials.table.npy"


@given(st.lists(st.sampled_from(["lab", "Subjects", "s1", "2020-01-01", "001", "7", "x.y"]),
                min_size=3, max_size=8), st.integers(0, 8))
def test_rooted_parts_reads_the_lab_only_below_the_root(folders, depth) -> None:
    """The shortcut in rooted_parts equals parsing the root-relative path again."""
    path = "/data/" + "/".join(folders)
    parts = alf.session_parts(path)
    if parts is None:
        return
    rel = "/".join(folders[len(folders) - min(depth, len(folders)):]) if depth else ""
    again = alf.session_parts(rel) if rel else None
    assert alf.rooted_parts(parts, rel) == (again or parts._replace(lab=""))

"""``fastindex fix``: rename folders so that ONE can load every session.

ONE looks for a session only at ``root/[lab/Subjects/]subject/date/NNN``
(``SessionParts.folder``).  Sessions found elsewhere are reported by a build; this
module plans the folder renames that put them there, applies them with ``os.rename``
(atomic each), and undoes them from a journal.  It renames folders only: it never opens,
moves or deletes a file by itself, and it never merges two folders (a rename whose
target exists is refused, not carried out).

The journal is JSON Lines: a header naming the root, then one line per step, written
and flushed *before* the step is taken, so an interrupted run can still be undone:
undo reverses only the steps whose result is on disk.  It is never written inside the
tree it renames (``check`` would report it, ``release`` refuse it): ``apply`` refuses a
journal there, and ``default_journal`` is the current folder, or the folder above the
root when the current folder is inside it.

Folder names and journals are untrusted (docs/THREAT-MODEL.md).  A folder is renamed
only when its name is the ALF part it is read as (``ibl-cortex`` is not the lab
``cortex``; a name that is not UTF-8 is no subject), and ``--undo`` takes the root from
the user, not from the journal, and accepts only steps of the shapes ``apply`` writes:
relative paths without ``..``, whose folders resolve inside that root.  Both ``apply``
and ``undo`` hold the root's table lock, so no build indexes a tree half renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fastindex import alf
from fastindex import problems as p
from fastindex.discover import Discovery, Session, discover
from fastindex.errors import FastindexError, InputError
from fastindex.progress import counted

JOURNAL_FORMAT = "fastindex-fix/1"


@dataclass(frozen=True)
class Rename:
    """One folder to rename, both paths relative to the root (posix)."""

    source: str
    target: str


@dataclass
class FixPlan:
    """The renames that make sessions loadable, in the order they must run."""

    root: Path
    renames: list[Rename] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)
    unloadable: int = 0  # sessions where ONE does not look for them


def plan(root: str | os.PathLike, lab: str | None = None) -> FixPlan:
    """The renames that put every session where ONE looks for it.

    ``lab`` is the lab of sessions that sit at the root without a lab folder: they move
    to ``LAB/Subjects/``.  A single folder above a subject, where a lab would be
    (``labB/m2/...``), is taken as the lab and gets its ``Subjects`` folder.
    """
    from fastindex.root import open_folder

    root_path = open_folder(root).path
    if lab is not None and not alf.LAB_RE.fullmatch(lab):
        raise InputError(f"not a lab name (letters, digits, underscores): {lab}")
    found = Discovery()
    sessions = []
    for batch in discover(root_path, found, hand_off_dates=False):
        for unit in batch:
            assert unit.parts is not None  # without hand_off_dates, every unit is a session
            sessions.append(Session(unit.path, unit.rel, unit.parts))
    moving = found.unloadable + ([s for s in sessions if not s.parts.lab] if lab else [])
    result = FixPlan(root_path, unloadable=len(found.unloadable))
    numbers: list[Rename] = []
    tops: dict[str, Rename] = {}
    taken: set[str] = set()
    for session in sorted(moving, key=lambda s: s.rel):
        target, why = _target(session, lab, root_path)
        if target is None:
            result.refused.append((session.rel or ".", why))
            continue
        number, top = _steps(session.rel, target)
        if number is not None:
            if number.target in taken or os.path.lexists(root_path / number.target):
                result.refused.append((session.rel, f"{number.target} exists: ONE would "
                                                    f"load that folder; merge the two by hand"))
                continue
            taken.add(number.target)
            numbers.append(number)
        if top is not None:
            tops.setdefault(top.source, top)
    for step in tops.values():
        if step.target in taken or os.path.lexists(root_path / step.target):
            result.refused.append((step.source, f"{step.target} exists: merge the two by hand"))
        else:
            taken.add(step.target)
            result.renames.append(step)
    result.renames[:0] = numbers  # inside the folders that move next, so first
    return result


def _target(session: Session, lab: str | None, root: Path) -> tuple[str | None, str]:
    """Where a session must go (root-relative), or None and why it cannot be moved.

    A subject never leaves its lab: a lab-less session below two or more folders, the
    last of which could be its lab (``t/labB/m2/...``), is refused, naming the folder to
    index instead (there ``labB`` is a lab without ``Subjects``, which fix completes)."""
    parts = session.parts
    names = session.rel.split("/") if session.rel else []
    misread = _misread(names, parts)
    if misread:
        return None, misread
    above = names[: len(names) - (5 if parts.lab else 3)]
    if len(names) < 3:
        return None, (f"the root is inside this session's subject folder: index "
                      f"{_keeping_lab(root.parents[2 - len(names)])} instead")
    if not parts.lab and above == ["Subjects"]:
        return None, f"the root is a lab folder: index {root.parent}, which keeps the lab"
    if not parts.lab and len(above) > 1 and alf.LAB_RE.fullmatch(above[-1]):
        return None, (f"{p.display_path(above[-1])} may be this subject's lab, which a "
                      f"move to the root would lose: run fix on "
                      f"{p.display_path(str(root.joinpath(*above[:-1])))} instead (it "
                      f"moves the subject to {p.display_path(above[-1])}/Subjects)")
    if not parts.lab and len(above) == 1 and alf.LAB_RE.fullmatch(above[0]):
        parts = parts._replace(lab=above[0])  # labB/m2/... : a lab without Subjects
    elif not parts.lab and not above and lab:
        parts = parts._replace(lab=lab)
    return parts.folder, ""


def _misread(names: list[str], parts: alf.SessionParts) -> str:
    """Why the folders are not the parts they were read as ('' when they are): ONE's
    pattern finds a lab ``cortex`` at the end of ``ibl-cortex``, a subject ``03`` in a
    name that is not UTF-8; renaming by those parts would move the wrong folder."""
    if any(p.has_invalid_encoding(name) for name in names):
        return "a folder name is not UTF-8: rename it by hand"
    subject = names[-3] if len(names) >= 3 else parts.subject
    if subject != parts.subject:
        return f"the folder {p.display_path(subject)} is not a subject name: rename it by hand"
    if parts.lab and len(names) >= 5 and names[-5] != parts.lab:
        return f"the folder {p.display_path(names[-5])} is not a lab name: rename it by hand"
    return ""


def _keeping_lab(folder: Path) -> Path:
    """``folder``, or the parent of its lab when it is a lab's ``Subjects`` folder."""
    return folder.parents[1] if alf.lab_around(folder.as_posix()) else folder


def _steps(source: str, target: str) -> tuple[Rename | None, Rename | None]:
    """The renames from a session folder to its target: its number folder, then the
    highest folder that differs (subject, or lab), which carries all its sessions."""
    src, dst = source.split("/"), target.split("/")
    number = Rename(source, "/".join([*src[:-1], dst[-1]])) if src[-1] != dst[-1] else None
    cut = 4 if len(dst) == 5 and src[-5:-3] == dst[-5:-3] else 2  # the lab, or the subject
    top = Rename("/".join(src[:-cut]), "/".join(dst[:-cut]))
    return number, (top if top.source != top.target else None)


def default_journal(root: Path, when: float | None = None) -> Path:
    """``fastindex-fix-TIME.jsonl`` in the current folder, or in the folder above
    ``root`` when the current folder is inside the tree (``cd tree && fix . --apply``):
    never where the next walk of the tree would find it."""
    import time

    name = f"fastindex-fix-{time.strftime('%Y%m%dT%H%M%S', time.localtime(when))}.jsonl"
    here = Path.cwd().resolve()
    return (root.parent if _within(here, root) else here) / name


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def apply(fix: FixPlan, journal: Path) -> int:
    """Carry out a plan, journalling each step before it is taken; the renames done.

    A journal inside the root is refused (``InputError``) before any step: the tree
    would hold it.  A rename whose target has appeared since the plan was made stops
    the run: nothing is ever replaced.  The root's table lock is held throughout, so no
    build or update indexes the tree half renamed.
    """
    from fastindex.store import TableStore

    where = Path(os.path.realpath(journal.parent)) / journal.name
    if _within(where, fix.root):
        raise InputError(f"the journal {journal} would be inside {fix.root}, the tree fix "
                         f"renames (check would report it, release refuse it): give "
                         f"--journal a path outside it")
    try:
        out = open(journal, "x", encoding="utf-8")  # exclusive: never overwrite a journal
    except OSError as err:
        raise InputError(f"cannot create the journal {journal}: {err}") from None
    done = 0
    with out, TableStore(fix.root).lock():
        _record(out, {"format": JOURNAL_FORMAT, "root": str(fix.root)}, journal, done)
        for step in fix.renames:
            source, target = fix.root / step.source, fix.root / step.target
            if os.path.lexists(target):
                raise FastindexError(f"{step.target} appeared since the plan was made; "
                                     f"stopped after {counted(done, 'rename')} "
                                     f"(journal: {journal})")
            for folder in _missing_parents(target, fix.root):
                _record(out, {"mkdir": folder.relative_to(fix.root).as_posix()}, journal, done)
                try:
                    folder.mkdir()
                except OSError as err:
                    raise FastindexError(f"cannot create {folder}: {err.strerror}; stopped "
                                         f"after {counted(done, 'rename')} "
                                         f"(journal: {journal})") from None
            _record(out, {"rename": [step.source, step.target]}, journal, done)
            try:
                os.rename(source, target)
            except OSError as err:
                raise FastindexError(f"cannot rename {step.source}: {err}; stopped after "
                                     f"{counted(done, 'rename')} (journal: {journal})") from None
            done += 1
    return done


def _missing_parents(target: Path, root: Path) -> list[Path]:
    missing = []
    for folder in target.parents:
        if folder == root or folder.exists():
            break
        missing.append(folder)
    return missing[::-1]


def _record(out, entry: dict, journal: Path, done: int) -> None:
    """A step, on disk before it is taken; a journal that cannot be written stops the
    run (``undo`` leaves out a last line cut short)."""
    try:
        out.write(json.dumps(entry) + "\n")
        out.flush()
        os.fsync(out.fileno())
    except OSError as err:
        raise FastindexError(f"cannot write the journal {journal}: {err.strerror}; stopped "
                             f"after {counted(done, 'rename')}, which it records") from None


#: A journal is a few lines per session moved; anything larger is not one of ours.
MAX_JOURNAL_BYTES = 64 << 20


def undo(root: str | os.PathLike, journal: str | os.PathLike) -> tuple[Path, int, list[str]]:
    """Reverse a journal's steps under ``root``, last first: the root, the steps undone,
    and the steps that could not be (their result is not on disk as the journal says).

    The journal must name ``root``; every step is checked before any is taken.
    """
    from fastindex.root import open_folder
    from fastindex.store import TableStore

    root_path = open_folder(root).path
    steps = _read_journal(Path(journal), root_path)
    undone, left = 0, []
    with TableStore(root_path).lock():
        for step in reversed(steps):
            if "rename" in step:
                source, target = (root_path / p for p in step["rename"])
                if target.is_dir() and not os.path.lexists(source):
                    os.rename(target, source)
                    undone += 1
                elif os.path.lexists(target):
                    left.append(f"{step['rename'][1]}: cannot move back, "
                                f"{step['rename'][0]} exists")
            else:
                folder = root_path / step["mkdir"]
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(f"{step['mkdir']}: made by fix, not empty now: kept")
    return root_path, undone, left


def _read_journal(journal: Path, root: Path) -> list[dict]:
    """A journal's steps, each checked, or a one-line refusal (``InputError``).

    Each step is written before it is taken, so a last line cut short (a full disk, a
    kill) is a step never taken: it is left out.  Any other damage refuses the journal.
    """
    from fastindex.safefile import read_regular

    data = read_regular(journal, MAX_JOURNAL_BYTES, "journal")
    if data is None:
        raise InputError(f"no such journal: {journal}")
    lines = data.split(b"\n")
    if lines[-1]:  # no newline at the end: the last step was being written
        lines.pop()
    entries = []
    for number, line in enumerate(filter(None, lines), 1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise InputError(f"{journal}: line {number} is not JSON: not a fastindex fix "
                             f"journal, or damaged") from None
    if not entries or not isinstance(entries[0], dict) or \
            entries[0].get("format") != JOURNAL_FORMAT:
        raise InputError(f"not a fastindex fix journal: {journal}")
    if entries[0].get("root") != str(root):
        raise InputError(f"{journal} records renames under {entries[0].get('root')!r}, "
                         f"not {root}")
    for number, step in enumerate(entries[1:], 2):
        why = _bad_step(step, root)
        if why:
            raise InputError(f"{journal}: line {number}: {why}; nothing was undone")
    return entries[1:]


def _bad_step(step: object, root: Path) -> str:
    """Why a journal line is not a step ``apply`` writes ('' when it is one)."""
    if not isinstance(step, dict) or len(step) != 1:
        return "not a step"
    if "mkdir" in step:
        paths = [step["mkdir"]]
    elif "rename" in step and isinstance(step["rename"], list) and len(step["rename"]) == 2:
        paths = step["rename"]
    else:
        return "not a step"
    for path in paths:
        if not isinstance(path, str) or not _is_inside(root, path):
            return f"{path!r} is not a folder path inside {root}"
    return ""


def _is_inside(root: Path, rel: str) -> bool:
    """A relative posix path of plain names, whose parent folder resolves inside ``root``
    (a link among its folders could lead out)."""
    names = rel.split("/")
    if not rel or "\0" in rel or any(n in ("", ".", "..") for n in names):
        return False
    parent = os.path.realpath(root.joinpath(*names[:-1]))
    return parent == str(root) or parent.startswith(str(root) + os.sep)

"""Which paths are not data: ignore rules, as users know them from git and ripgrep.

An ignored path is neither a row nor a problem; builds count them.  The rules are
gitignore lines (from ``.fastindexignore`` at the root, then ``--exclude`` patterns),
matched on the root-relative path by ``pathspec``, plus a few names operating systems
leave everywhere.  An ignored folder is not walked.

The rules are untrusted (anyone who can write the tree writes ``.fastindexignore``; old
tables record ``--exclude``), so they are matched by RE2 (``pathspec``'s ``re2``
backend: every rule in one ``re2.Set``), whose time is linear in the path whatever the
rules: Python's backtracking ``re`` takes time exponential in the number of ``*`` of a
rule like ``*a*a*a*a*b`` on a long name.  The rules are capped in number
(``MAX_RULES``) and length (``MAX_RULE_CHARS``), which bounds their compile time, paid
once per process; rules RE2 cannot compile within its memory budget are refused.

The litter names are a set lookup per file; the rules, a dearer match per path, run
only when there are user rules, so a tree without rules pays nothing for them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastindex.root import Root

IGNORE_FILE = ".fastindexignore"
#: Files that Finder, Explorer and AppleDouble copies leave in every folder.
LITTER_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
LITTER_PREFIX = "._"
#: An ignore file is a few lines; anything larger is refused, not read into memory.
MAX_BYTES = 1 << 20
#: Rules at most (the ignore file's and ``--exclude``'s together): each adds to the
#: compile time every process pays, and a gitignore of real data is a few lines.
MAX_RULES = 1000
#: Characters per rule at most: longer rules grow RE2's automaton without use.
MAX_RULE_CHARS = 128


@dataclass(frozen=True)
class IgnoreRules:
    """The rules of one build: picklable, so the same object goes to every worker."""

    patterns: tuple[str, ...] = ()  # gitignore lines, in order (later lines win)
    litter: bool = True  # ignore LITTER_NAMES and ._* files

    def ignores(self, folder: str, name: str, is_dir: bool) -> bool:
        """True when the entry ``name`` of the root-relative ``folder`` is not data.

        The one skip predicate of every walk.  Its path is joined only when there are
        user rules: this runs once per file.
        """
        if self.litter and not is_dir and (name in LITTER_NAMES
                                           or name.startswith(LITTER_PREFIX)):
            return True
        return bool(self.patterns) and self.matches(f"{folder}/{name}" if folder else name,
                                                    is_dir)

    def matches(self, rel: str, is_dir: bool) -> bool:
        """The user's rules on a root-relative path (a folder's with a trailing slash,
        so that ``raw/`` matches the folder).  A name that is not UTF-8 (its bytes held
        as lone surrogates, which RE2 cannot take) is matched with each such byte as one
        U+FFFD: ``*`` and ``?`` count it as one character, as git counts one byte."""
        path = f"{rel}/" if is_dir else rel
        try:
            return _spec(self.patterns).match_file(path)
        except UnicodeEncodeError:
            utf8 = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return _spec(self.patterns).match_file(utf8)


@functools.lru_cache(maxsize=8)
def _spec(patterns: tuple[str, ...]):
    """The compiled rules, once per process (workers get the lines, not the regexes),
    matched by RE2: in time linear in the path."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns, backend="re2")


def compile_rules(patterns: tuple[str, ...], where: str = "the ignore rules") -> None:
    """Refuse (``InputError``) rules beyond the caps, or that do not compile."""
    from fastindex.errors import InputError

    if len(patterns) > MAX_RULES:
        raise InputError(f"{where}: {len(patterns)} rules; at most {MAX_RULES} are taken")
    long = next((p for p in patterns if len(p) > MAX_RULE_CHARS), None)
    if long is not None:
        raise InputError(f"{where}: a rule of {len(long)} characters; at most "
                         f"{MAX_RULE_CHARS}: {long[:40]}...")
    try:
        _spec(patterns)
    except Exception as err:  # pathspec and re2 raise several types
        raise InputError(f"bad ignore pattern in {where}: {err}") from None


def read_rules(root: Root, exclude: tuple[str, ...] = (), litter: bool = True
               ) -> IgnoreRules:
    """The root's ``.fastindexignore`` lines, then ``exclude``; bad patterns are refused.

    Comments and blank lines are dropped, so the provenance records only rules.
    """
    from fastindex.errors import InputError

    path = root.join(IGNORE_FILE)
    data = root.read_small(IGNORE_FILE, MAX_BYTES) or b""
    try:
        text = data.decode("utf-8-sig")  # an editor's byte-order mark is not a rule
    except UnicodeDecodeError as err:
        raise InputError(f"cannot read {path}: {err}") from None
    lines = [line.rstrip("\n") for line in text.splitlines()]
    patterns = tuple(line for line in (*lines, *exclude)
                     if line.strip() and not line.startswith("#"))
    compile_rules(patterns, f"{path} or --exclude")
    return IgnoreRules(patterns, litter)

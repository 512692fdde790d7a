"""Which paths are not data: ignore rules, as users know them from git and ripgrep.

An ignored path is neither a row nor a problem; builds count them.  The rules are
gitignore lines (from ``.fastindexignore`` at the root, then ``--exclude`` patterns),
matched on the root-relative path by ``pathspec``, plus a few names operating systems
leave everywhere.  An ignored folder is not walked.

The litter names are a set lookup per file; ``pathspec``, a far dearer match per path,
runs only when there are user rules, so a tree without rules pays nothing for them.
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
        so that ``raw/`` matches the folder)."""
        return _spec(self.patterns).match_file(f"{rel}/" if is_dir else rel)


@functools.lru_cache(maxsize=8)
def _spec(patterns: tuple[str, ...]):
    """The compiled rules, once per process (workers get the lines, not the regexes)."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns)


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
    try:
        _spec(patterns)
    except Exception as err:  # pathspec raises GitWildMatchPatternError and others
        raise InputError(f"bad ignore pattern in {path} or --exclude: {err}") from None
    return IgnoreRules(patterns, litter)

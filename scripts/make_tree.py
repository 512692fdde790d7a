"""Generate an example ALF tree: the same as ``fastindex demo-tree``.

    python scripts/make_tree.py DEST [--files N] [--shape behaviour|ephys|wide|deep]
                                     [--seed S] [--sparse-size BYTES]
"""

import sys

from fastindex.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo-tree", *sys.argv[1:]]))

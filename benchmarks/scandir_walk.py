"""The floor for a Python indexer: walk a tree with os.scandir and stat every file."""

import os
import sys


def walk(root: str) -> tuple[int, int]:
    files = total = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    files += 1
                    total += entry.stat().st_size
    return files, total


if __name__ == "__main__":
    print(*walk(sys.argv[1]))

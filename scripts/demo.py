"""The main job on an example tree: generate it, build its tables, query them with ONE.

Run through ``python3 scripts/dev.py demo`` (which sets up the environment first).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "demo" / "tree"


def main() -> int:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 74_000
    if TREE.exists():
        shutil.rmtree(TREE)
    fastindex = [sys.executable, "-m", "fastindex"]
    subprocess.run([*fastindex, "demo-tree", TREE, "--files", str(files)], check=True)
    (TREE / "README.txt").write_text("not a dataset: reported as outside any session\n")
    subprocess.run([*fastindex, "build", TREE, "--report", TREE.parent / "report.csv"],
                   check=True)
    print(f"skipped files are listed in {TREE.parent / 'report.csv'}")

    from one.api import One

    one = One(cache_dir=TREE, mode="local")
    eids = one.search(subject="CORT*", datasets=["_ibl_trials.choice.npy"])
    print(f"ONE finds {len(eids)} sessions of subjects CORT* with trials.choice")
    trials = one.load_object(eids[0], "trials", collection="alf")
    print(f"loaded trials of {one.eid2path(eids[0])}: {len(trials.choice)} trials, "
          f"attributes {', '.join(sorted(trials.keys()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Golden outputs: what every command writes, kept before a refactor and compared after.

    .venv/bin/python scripts/golden.py record golden.json    # before the change
    .venv/bin/python scripts/golden.py compare golden.json   # after it: exit 1 on a change

``FASTINDEX_GOLDEN_DIR`` moves its work folder (``/tmp/fastindex-golden``), so that two
checkouts can run it at once.

It generates a messy tree and two example trees at fixed paths with fixed modification
times, runs ``build``, ``check``, ``update``, ``verify``, ``release`` and ``fix`` through
the command line over a matrix of options (every hash mode, string and uuid ids,
``--io-threads`` 0 and 16, 1 and 2 workers, Dask ``local:2``), and keeps a SHA-256 of
every file and stream each run writes.  Only what must change from run to run is masked,
in place and at the same length: the build id, ``date_created`` and ``listed_at_ns`` in
the tables' metadata (so a table's bytes are otherwise compared whole), and seconds in
the summaries.  A release is made under ``SOURCE_DATE_EPOCH``, so its zip is compared
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

BASE = Path(os.environ.get("FASTINDEX_GOLDEN_DIR", "/tmp/fastindex-golden"))
MTIME_NS = 1_577_880_000 * 10**9  # 2020-01-01 12:00 UTC: old enough for update
EDIT_MTIME_NS = MTIME_NS + 86_400 * 10**9
REPO = Path(__file__).resolve().parent.parent

MESSY = [
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/_ibl_trials.choice.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/_ibl_trials.intervals.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/#2021-01-01#/_ibl_trials.choice.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/probe00/pykilosort/spikes.times.npy",
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/probe00/pykilosort/#v2#/spikes.times.npy",
    "cortexlab/Subjects/KS001/2020-01-01/002/alf/_ibl_wheel.timestamps_bpod.npy",
    "cortexlab/Subjects/KS001/2020-01-02/001/_iblrig_taskData.raw.abc-123.jsonable",
    "cortexlab/Subjects/KS002/2020-01-01/001/alf/_ibl_trials.choice.npy",
    "hoferlab/Subjects/SWC_01/2021-06-30/003/raw_video_data/_iblrig_leftCamera.raw.mp4",
    "SW_labless/2021-02-03/001/alf/spikes.times.npy",
    "cortexlab/Subjects/KS003/2020-02-01/1/alf/spikes.times.npy",  # unloadable: 1 not 001
    "cortexlab/Subjects/KS003/2021-02-30/001/alf/spikes.times.npy",  # impossible date
    "cortexlab/Subjects/KS003/2020-03-01/0001/alf/spikes.times.npy",  # 4-digit number
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/notes.txt",  # not ALF
    "cortexlab/Subjects/KS001/2020-01-01/001/al f/spikes.times.npy",  # bad collection
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/.DS_Store",  # litter
    "cortexlab/README.md",  # outside a session, ignored by the rules
    "stray.file.npy",  # outside a session
    "exports/table.csv",  # ignored folder
    "cortexlab/Subjects/KS001/2020-01-01/001/alf/excluded.thing.npy",  # --exclude
]


def make_trees() -> dict[str, Path]:
    """The trees, at fixed paths (the tables record their origin), with fixed mtimes."""
    sys.path.insert(0, str(REPO))
    from fastindex.treegen import make_tree

    shutil.rmtree(BASE, ignore_errors=True)
    messy = BASE / "trees" / "messy"
    for i, rel in enumerate(MESSY):
        path = messy / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(rel.encode()).digest() * (i + 1))
    alf = messy / "cortexlab/Subjects/KS001/2020-01-01/001/alf"
    with open(os.path.join(os.fsencode(alf), b"bad\xff.name.npy"), "wb") as f:
        f.write(b"not utf-8")
    with open(alf / "_ibl_big.raw.bin", "wb") as f:  # hashed as a task of its own
        f.truncate(64 << 20)
    (alf / "linked.file.npy").symlink_to(alf / "_ibl_trials.choice.npy")
    (alf / "broken.link.npy").symlink_to(alf / "nothing.here.npy")
    (alf / "probe01").symlink_to(alf / "probe00")
    (messy / ".fastindexignore").write_text("README*\n/exports/\n")
    # entries that are neither files nor folders, inside, outside and in a rejected session
    rejected = messy / "cortexlab/Subjects/KS003/2020-02-01/1/alf"
    for fifo in (messy / "cortexlab/fifo", alf / "pipe.fifo.npy", rejected / "pipe.fifo.npy"):
        os.mkfifo(fifo)
    (messy / "cortexlab/Subjects/broken").symlink_to(messy / "nothing")
    (messy / "cortexlab/Subjects/KS002/alias").symlink_to(messy / "cortexlab/Subjects/KS002")
    (rejected / "probe_link").symlink_to(alf / "probe00")
    trees = {"messy": messy}
    for name, shape, files in (("behaviour", "behaviour", 1500), ("ephys", "ephys", 800)):
        trees[name] = BASE / "trees" / name
        make_tree(trees[name], files=files, shape=shape, seed=7, sparse_size=4096)
    for tree in trees.values():
        set_mtimes(tree, MTIME_NS)
    return trees


def copy_tree(source: Path, copy: Path) -> None:
    """Copy a tree as it is: links as links, FIFOs as new FIFOs (never opened)."""
    def copy_entry(src: str, dst: str) -> None:
        if stat.S_ISFIFO(os.lstat(src).st_mode):
            os.mkfifo(dst)
        else:
            shutil.copy2(src, dst)
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, symlinks=True, copy_function=copy_entry)


def set_mtimes(tree: Path, ns: int) -> None:
    for folder, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.utime(path, ns=(ns, ns))


def fastindex(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    """Run the command line as a user would: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "fastindex", *args], capture_output=True,
                          text=True, errors="backslashreplace", cwd=BASE,
                          env={**os.environ, **(env or {})})
    return done.returncode, done.stdout, done.stderr


VOLATILE = [
    re.compile(rb'"build_id": "[0-9a-f-]{36}"'),
    re.compile(rb'"date_created": "[0-9: -]{16}"'),
    re.compile(rb'"listed_at_ns": [0-9]+'),
]
SECONDS = re.compile(r"\b[0-9]+\.[0-9]{2} s\b")
PROGRESS = re.compile(r"^\s*(indexing|hashing|zipping|verifying)\b.*$", re.M)


def masked(data: bytes) -> bytes:
    """``data`` with every run-dependent value replaced by as many ``#``."""
    for pattern in VOLATILE:
        data = pattern.sub(lambda m: m.group(0).split(b":")[0] + b":" + b"#" * (
            len(m.group(0)) - len(m.group(0).split(b":")[0]) - 1), data)
    return data


def text(stream: str) -> str:
    return PROGRESS.sub("", SECONDS.sub("# s", stream))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parquet_digest(path: Path) -> str:
    """A table file, masked: its data pages byte for byte, then its footer as pyarrow
    reads it (row groups, offsets, sizes, encodings, statistics, the schema and every
    metadata entry, masked).  The footer's bytes themselves cannot be masked in place:
    Arrow's schema is stored there again, base64-encoded, build id and all."""
    import pyarrow.parquet as pq

    data = path.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    meta = pq.read_metadata(path)
    schema = pq.read_schema(path)
    kv = {k.decode(): masked(v).decode() for k, v in (schema.metadata or {}).items()}
    described = json.dumps({"footer": meta.to_dict(), "schema": str(schema.remove_metadata()),
                            "metadata": kv}, sort_keys=True, default=str)
    return digest(data[:len(data) - 8 - footer] + described.encode())


def outputs(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (tables, reports, zips), masked and digested."""
    return {p.name: parquet_digest(p) if p.suffix == ".pqt" else digest(masked(p.read_bytes()))
            for p in sorted(folder.iterdir()) if p.is_file()}


def case(results: dict, name: str, args: list[str], out: Path | None = None,
         env: dict | None = None) -> None:
    code, stdout, stderr = fastindex(*args, env=env)
    entry = {"exit": code, "stdout": digest(text(stdout).encode()),
             "stderr": digest(text(stderr).encode())}
    if out is not None and out.is_dir():
        entry.update(outputs(out))
    results[name] = entry
    print(f"{name}: exit {code}", file=sys.stderr)
    if code not in (0, 1) or "Traceback" in stderr:
        print(stderr, file=sys.stderr)


def fresh(name: str) -> Path:
    out = BASE / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def run_all() -> dict:
    trees = make_trees()
    results: dict = {}
    for tree_name, tree in trees.items():
        common = ["--exclude", "excluded.thing.npy"] if tree_name == "messy" else []
        for hash_mode in ("none", "xxh3", "md5", "xxh3+md5"):
            for ids in ("uuid", "string"):
                name = f"build/{tree_name}/{hash_mode}/{ids}"
                out = fresh(name)
                case(results, name, ["build", str(tree), "--out", str(out), "--quiet",
                                     "--hash", hash_mode, "--report", str(out / "r.json"),
                                     *common, *(["--string-ids"] if ids == "string" else [])],
                     out)
        for label, extra in (("io0", ["--io-threads", "0"]), ("io16", ["--io-threads", "16"]),
                             ("w1", ["--workers", "1"]), ("w2io16", ["--workers", "2",
                                                                     "--io-threads", "16"]),
                             ("dask", ["--scheduler", "local:2"])):
            for hash_mode in ("none", "xxh3+md5"):
                name = f"build/{tree_name}/{hash_mode}/{label}"
                out = fresh(name)
                case(results, name, ["build", str(tree), "--out", str(out), "--quiet",
                                     "--hash", hash_mode, "--report", str(out / "r.csv"),
                                     *common, *extra], out)
        out = fresh(f"check/{tree_name}")
        case(results, f"check/{tree_name}", ["check", str(tree), "--report",
                                              str(out / "r.json"), *common], out)
        case(results, f"check/{tree_name}/json", ["check", str(tree), "--json", *common])
        case(results, f"fix/{tree_name}", ["fix", str(tree)])
        out = fresh(f"build/{tree_name}/summary")
        case(results, f"build/{tree_name}/summary", ["build", str(tree), "--out", str(out),
                                                     *common], out)
    messy = trees["messy"]
    out = fresh("build/messy/strict")
    case(results, "build/messy/strict", ["build", str(messy), "--out", str(out), "--strict",
                                         "--report", str(out / "r.json")], out)
    out = fresh("build/messy/follow")
    case(results, "build/messy/follow", ["build", str(messy), "--out", str(out), "--quiet",
                                         "--follow-symlinks", "--hash", "md5"], out)
    out = fresh("build/messy/lab-refused")
    case(results, "build/messy/lab-refused", ["build", str(messy), "--out", str(out),
                                              "--lab", "cortexlab"], out)
    out = fresh("build/messy/no-default-ignores")
    case(results, "build/messy/no-default-ignores",
         ["build", str(messy), "--out", str(out), "--no-default-ignores", "--quiet",
          "--report", str(out / "r.csv")], out)
    update_cases(results, trees)
    release_cases(results, trees)
    return results


def update_cases(results: dict, trees: dict[str, Path]) -> None:
    """update and verify on copies of the trees, edited between build and update."""
    for tree_name in ("messy", "ephys"):
        for hash_mode, extra in (("xxh3", []), ("md5", ["--workers", "1"]),
                                 ("xxh3+md5", ["--io-threads", "16"]),
                                 ("xxh3", ["--scheduler", "local:2"])):
            label = f"{tree_name}/{hash_mode}/{'-'.join(extra) or 'default'}"
            common = ["--exclude", "excluded.thing.npy"] if tree_name == "messy" else []
            copy = BASE / "copies" / label
            copy_tree(trees[tree_name], copy)
            set_mtimes(copy, MTIME_NS)
            out = fresh(f"update/{label}")
            case(results, f"update/{label}/build", ["build", str(copy), "--out", str(out),
                                                    "--quiet", "--hash", hash_mode, *common,
                                                    *extra], out)
            edit(copy)
            vout = fresh(f"verify/{label}")
            case(results, f"verify/{label}", ["verify", str(copy), "--tables", str(out),
                                              "--hash", "--report", str(vout / "v.json"),
                                              *common, *extra], vout)
            case(results, f"update/{label}", ["update", str(copy), "--out", str(out),
                                              "--quiet", *common, *extra], out)
            vout = fresh(f"verify/{label}/after")
            case(results, f"verify/{label}/after", ["verify", str(copy), "--tables", str(out),
                                                    "--hash", "--report", str(vout / "v.csv"),
                                                    *common, *extra], vout)
            if not extra:
                case(results, f"update/{label}/keep-missing",
                     ["update", str(copy), "--out", str(out), "--quiet", "--keep-missing",
                      "--force", *common], out)
                case(results, f"update/{label}/rehash", ["update", str(copy), "--out",
                                                         str(out), "--quiet", "--hash", "md5",
                                                         *common], out)


def edit(tree: Path) -> None:
    """Rewrite one file (another size), add one, delete one, at fixed times."""
    files = sorted(p for p in tree.rglob("*.npy") if p.is_file() and not p.is_symlink())
    files[0].write_bytes(files[0].read_bytes() + b"more")
    files[1].unlink()
    added = files[2].with_name("_ibl_added.times.npy")
    added.write_bytes(b"added")
    for path in (files[0], added):
        os.utime(path, ns=(EDIT_MTIME_NS, EDIT_MTIME_NS))


def release_cases(results: dict, trees: dict[str, Path]) -> None:
    env = {"SOURCE_DATE_EPOCH": "1600000000"}
    for tree_name, hash_mode, extra in (("behaviour", "md5", []),
                                        ("ephys", "xxh3+md5", ["--compression", "deflate"]),
                                        ("messy", "xxh3", ["--allow-skipped", "--exclude",
                                                           "excluded.thing.npy"]),
                                        ("messy", "md5", [])):
        label = f"release/{tree_name}/{hash_mode}/{'-'.join(extra) or 'default'}"
        copy = BASE / "copies" / label
        copy_tree(trees[tree_name], copy)
        set_mtimes(copy, MTIME_NS)
        out = fresh(label)
        case(results, label, ["release", str(copy), str(out / "r.zip"), "--quiet", "--hash",
                              hash_mode, *extra], out, env=env)
        if (out / "r.zip").exists():
            case(results, f"{label}/verify", ["verify", str(out / "r.zip"), "--hash"])


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    results = run_all()
    path = Path(argv[1])
    if argv[0] == "record":
        path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(results)} runs in {path}", file=sys.stderr)
        return 0
    kept = json.loads(path.read_text())
    changed = [name for name in sorted(set(kept) | set(results))
               if kept.get(name) != results.get(name)]
    for name in changed:
        before, after = kept.get(name, {}), results.get(name, {})
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        print(f"changed: {name}: {', '.join(keys)}", file=sys.stderr)
    print(f"{len(results)} runs, {len(changed)} changed", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

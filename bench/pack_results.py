#!/usr/bin/env python3
"""Pack a finished result folder's bulk (raw.jsonl, stats/*.json) into gzip, losing nothing.

Every GPU call carries the whole working tree to the device machine, 64 MiB at most
(/work/.library/device/README.md), and committed results are most of it: by session 19 the
raw rows and FIKIT_STATS files alone were 39 of its 62 MiB, and the next call was refused.
Packed, they take a seventh of that and stay readable: benchlib.read_jsonl and
pool_multigpu.py read raw.jsonl.gz where raw.jsonl is gone, and `zcat` reads either.

Each file is packed deterministically (no name or time in the gzip header, so packing again
gives the same bytes), checked by unpacking it again, and only then removed. A folder a run
still writes to must not be packed: run_pairs.py resumes by appending to raw.jsonl.

    python3 bench/pack_results.py bench/results/<folder> ...   # pack
    python3 bench/pack_results.py --check bench/results         # list what is left unpacked
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

import benchlib

MIN_BYTES = 16 * 1024  # smaller files are left as they are: gzip saves them little


def bulk(folder: Path) -> Iterator[Path]:
    """The files worth packing under folder: raw rows and FIKIT_STATS dumps, large enough."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.stat().st_size < MIN_BYTES:
            continue
        if path.name == "raw.jsonl" or (path.parent.name == "stats" and path.suffix == ".json"):
            yield path


def pack(path: Path) -> int:
    """Replace path by path.gz; the bytes saved. A .gz already there must hold the same bytes."""
    data = path.read_bytes()
    packed = gzip.compress(data, compresslevel=9, mtime=0)
    gz = benchlib.packed_copy(path)
    if gz.exists() and gzip.decompress(gz.read_bytes()) != data:
        raise SystemExit(f"pack_results: {gz} exists and differs from {path}: left both as they are")
    tmp = gz.with_name(gz.name + ".tmp")
    tmp.write_bytes(packed)
    if gzip.decompress(tmp.read_bytes()) != data:
        tmp.unlink()
        raise SystemExit(f"pack_results: {path}: the packed copy does not unpack to it; left as it is")
    tmp.replace(gz)
    path.unlink()
    return len(data) - len(packed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="result folders (or a folder of them)")
    p.add_argument("--check", action="store_true",
                   help="pack nothing; list what would be packed, exit 1 if any")
    a = p.parse_args(argv)
    for folder in a.folders:
        if not folder.is_dir():
            raise SystemExit(f"pack_results: {folder}: not a folder")
    todo = [path for folder in a.folders for path in bulk(folder)]
    if a.check:
        for path in todo:
            print(f"unpacked: {path} ({path.stat().st_size // 1024} KiB)")
        return 1 if todo else 0
    saved = sum(pack(path) for path in todo)
    print(f"pack_results: {len(todo)} files packed, {saved / 2**20:.1f} MiB saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())

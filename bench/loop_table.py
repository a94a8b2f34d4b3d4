#!/usr/bin/env python3
"""The medians of a file of launch_loop.c runs, one process a line: `LABEL ... {json}`.

The calls that price the library (bench/candidates/price.sh) run each variant in several
processes, interleaved, because real-driver processes differ by up to 30%; what they report is
the median over a variant's processes of diff_ns (a cost measured inside one process, EXTRA 16,
32 or 128) or, without it, of median_us. Lines that are not a label and a JSON object (a build
message, an error) are passed over and counted.

    python3 bench/loop_table.py R/launch_loop.txt [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def table(text: str) -> dict[str, Any]:
    per: dict[str, list[float]] = {}
    key: dict[str, str] = {}
    skipped = 0
    for line in text.splitlines():
        head, brace, js = line.partition("{")
        label = " ".join(head.split())
        try:
            d = json.loads(brace + js) if brace and label else None
        except ValueError:
            d = None
        field = "diff_ns" if isinstance(d, dict) and "diff_ns" in d else "median_us"
        if not isinstance(d, dict) or not isinstance(d.get(field), (int, float)):
            skipped += 1
            continue
        per.setdefault(label, []).append(float(d[field]))
        key[label] = field
    rows = {
        label: {"field": key[label], "median": round(statistics.median(v), 4), "processes": sorted(v)}
        for label, v in sorted(per.items())
    }
    return {"rows": rows, "skipped_lines": skipped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="launch_loop output, one `LABEL ... {json}` line a process")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not a.file.is_file():
        print(f"loop_table: {a.file}: no such file", file=sys.stderr)
        return 2
    t = table(a.file.read_text())
    if a.json:
        print(json.dumps(t, indent=2))
        return 0
    for label, r in t["rows"].items():
        print(f"{label:18s} {r['field']} median {r['median']:9.4f}  per process {r['processes']}")
    if t["skipped_lines"]:
        print(f"({t['skipped_lines']} lines without a label and a figure passed over)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

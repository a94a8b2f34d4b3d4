"""bench/pack_results.py: a finished result folder's bulk packed into gzip, every reader still
reading it, and the committed results kept packed so that a GPU call can carry the tree."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import benchlib  # noqa: E402
import pack_results  # noqa: E402
import pool_multigpu  # noqa: E402


def result_folder(d: Path, reps: int = 400) -> Path:
    """A verify_multigpu-like folder: raw rows big enough to pack, a stats dump, a small note."""
    (d / "stats").mkdir(parents=True)
    rows = []
    for rep in range(reps):
        for mode, ms in (("solo_hp", 4.0), ("fikit", 4.04)):
            rows.append({"mode": mode, "rep": rep, "generation": rep // 2, "ok": True,
                         "hp": {"hp0": {"p50_ms": ms, "p99_ms": 2 * ms}}, "pad": "x" * 40})
    (d / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "stats" / "multigpu.fikit-hp0-bert.123.json").write_text(json.dumps({"kernels": list(range(9000))}))
    (d / "stats" / "tiny.json").write_text("{}")
    (d / "RUNS.md").write_text("# a run\n" * 4000)
    return d


def test_packed_rows_read_the_same_and_nothing_else_is_touched(tmp_path: Path) -> None:
    d = result_folder(tmp_path / "run")
    before_rows = benchlib.read_jsonl(d / "raw.jsonl")
    before_pool = pool_multigpu.pool([d])
    stats = (d / "stats" / "multigpu.fikit-hp0-bert.123.json").read_bytes()
    assert pack_results.main([str(d)]) == 0
    assert not (d / "raw.jsonl").exists() and (d / "raw.jsonl.gz").is_file()
    assert gzip.decompress((d / "stats" / "multigpu.fikit-hp0-bert.123.json.gz").read_bytes()) == stats
    # small files and notes stay as they are, however large a note is
    assert (d / "stats" / "tiny.json").is_file() and (d / "RUNS.md").is_file()
    assert benchlib.read_jsonl(d / "raw.jsonl") == before_rows
    assert pool_multigpu.pool([d]) == before_pool
    assert pack_results.main([str(d), "--check"]) == 0


def test_packing_again_gives_the_same_bytes(tmp_path: Path) -> None:
    a, b = result_folder(tmp_path / "a"), result_folder(tmp_path / "b")
    pack_results.main([str(a)])
    pack_results.main([str(b)])
    assert (a / "raw.jsonl.gz").read_bytes() == (b / "raw.jsonl.gz").read_bytes()
    assert pack_results.main([str(a)]) == 0  # nothing left to pack: a no-op


def test_a_packed_folder_appended_to_reads_whole(tmp_path: Path) -> None:
    """run_pairs.py resumes by appending to raw.jsonl: packed rows come first, then the new ones."""
    d = result_folder(tmp_path / "run", reps=200)
    pack_results.main([str(d)])
    benchlib.append_jsonl(d / "raw.jsonl", {"mode": "solo_hp", "rep": 999})
    rows = benchlib.read_jsonl(d / "raw.jsonl")
    assert len(rows) == 401 and rows[-1]["rep"] == 999


def test_a_differing_packed_copy_is_never_overwritten(tmp_path: Path) -> None:
    d = result_folder(tmp_path / "run")
    (d / "raw.jsonl.gz").write_bytes(gzip.compress(b"{}\n"))
    with pytest.raises(SystemExit, match=r"raw.jsonl.gz exists and differs from .*raw.jsonl"):
        pack_results.pack(d / "raw.jsonl")
    assert (d / "raw.jsonl").is_file()


def test_check_lists_what_is_unpacked_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = result_folder(tmp_path / "run")
    assert pack_results.main(["--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "unpacked: " in out and "raw.jsonl" in out and "multigpu.fikit-hp0-bert.123.json" in out
    assert "tiny.json" not in out
    with pytest.raises(SystemExit, match="nope: not a folder"):
        pack_results.main([str(tmp_path / "nope")])
    assert (d / "raw.jsonl").is_file()  # --check packed nothing


def test_a_bad_line_in_a_packed_file_is_named(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "raw.jsonl.gz").write_bytes(gzip.compress(b'{"mode": "fikit"}\n{torn\n'))
    with pytest.raises(SystemExit, match=r"raw.jsonl.gz:2: not JSON"):
        pool_multigpu.load(d)


def test_the_committed_results_are_packed() -> None:
    """Every GPU call carries the tree, 64 MiB at most: results committed unpacked outgrow it.
    Pack a new result folder before committing it: python3 bench/pack_results.py <folder>."""
    r = subprocess.run([sys.executable, str(REPO / "bench" / "pack_results.py"), "--check",
                        str(REPO / "bench" / "results")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout

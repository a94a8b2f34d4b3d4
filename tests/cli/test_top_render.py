"""``top`` without a terminal: snapshots from daemon replies and golden frames at fixed widths."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fikitctl import top
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Frames carry a clock; pin the zone so golden files match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def reply(launches: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "gpus": [
            {
                "index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1", "util_pct": 87,
                "mem_used": 12 * 2**30, "mem_total": 80 * 2**30, "mps": "running", "mode": "fikit",
                "corun_sm_pct": 30,
                "clients": [
                    {"pid": 4242, "user": "alice", "job": 17, "prog": "resnet50_inference.py", "prio": 0,
                     "state": "running", "launches": launches[0], "held_ns": 0, "filled_ns": 3e9,
                     "idle_gap_ns": 1e10, "slowdown": 1.021},
                    {"pid": 5150, "user": "bob", "job": None, "prog": "train", "prio": 2, "state": 2,
                     "launches": launches[1], "held_ns": 12.5e9},
                    {"pid": 6001, "user": "nobody", "job": "18", "prog": "bert", "prio": 2,
                     "state": "filling", "launches": launches[2], "held_s": 0.3},
                ],
            },
            {"index": 1, "name": "NVIDIA H100", "mps": "off", "mode": "off", "clients": []},
        ]
    }


def snapshot() -> top.Snapshot:
    first = top.from_reply(reply((1000, 50, 10)), None, now=1000.0)
    return top.from_reply(reply((3000, 60, 10)), first, now=1002.0)


def record(snap: top.Snapshot, width: int, sort_key: str = "prio", paused: bool = False) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(top.render(snap, width, sort_key, paused))
    return console.export_text()


def test_rates_and_shares_come_from_two_snapshots() -> None:
    snap = snapshot()
    by_pid = {c.pid: c for c in snap.clients()}
    assert by_pid[4242].kernels_per_s == 1000.0
    assert by_pid[5150].kernels_per_s == 5.0
    assert by_pid[6001].kernels_per_s == 0.0
    assert by_pid[4242].gap_fill == pytest.approx(0.3)
    assert by_pid[5150].state == "held" and by_pid[5150].held_s == 12.5
    assert by_pid[6001].held_s == 0.3
    assert top.from_reply(reply((1, 1, 1))).gpus[0].clients[0].kernels_per_s is None


def test_a_restarted_client_has_no_negative_rate() -> None:
    first = top.from_reply(reply((1000, 50, 10)), None, now=1.0)
    again = top.from_reply(reply((5, 50, 10)), first, now=2.0)
    assert again.gpus[0].clients[0].kernels_per_s is None


def test_a_quiet_client_shows_its_stride() -> None:
    r = reply((1000, 50, 10))
    r["gpus"][0]["clients"][0]["stride"] = 32
    snap = top.from_reply(r, None, now=1.0)
    assert [c.stride for c in snap.gpus[0].clients] == [32, 1, 1]
    frame = record(snap, 100)
    assert "running q32" in frame and "held q" not in frame


@pytest.mark.parametrize(("width", "sort_key", "paused"), [(80, "prio", False), (50, "kps", True)])
def test_golden_frames(width: int, sort_key: str, paused: bool) -> None:
    text = record(snapshot(), width, sort_key, paused)
    path = GOLDEN / f"top_{width}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_sorting() -> None:
    clients = list(snapshot().clients())
    assert [c.pid for c in top.sort_clients(clients, "prio")] == [4242, 5150, 6001]
    assert [c.pid for c in top.sort_clients(clients, "kps")] == [4242, 5150, 6001]
    assert [c.pid for c in top.sort_clients(clients, "held")] == [5150, 6001, 4242]
    assert top.next_sort("prio") == "kps" and top.next_sort("pid") == "prio"


def test_empty_snapshot() -> None:
    text = record(top.Snapshot(taken_at=0.0, gpus=[]), 80)
    assert "no GPU domains" in text


def test_json_shape() -> None:
    data = snapshot().to_json()
    assert set(data) == {"taken_at", "gpus"}
    client = data["gpus"][0]["clients"][0]
    assert {"pid", "user", "job", "prog", "prio", "state", "kernels_per_s", "held_s", "gap_fill",
            "slowdown"} <= set(client)


names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=0, max_size=60)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(min_value=20, max_value=160), prog=names, user=names, gpu_name=names,
       launches=st.integers(min_value=0, max_value=10**12), pid=st.integers(min_value=1, max_value=2**31 - 1))
def test_no_line_is_wider_than_the_terminal(width: int, prog: str, user: str, gpu_name: str,
                                            launches: int, pid: int) -> None:
    raw = reply((launches, launches, launches))
    raw["gpus"][0]["name"] = gpu_name
    raw["gpus"][0]["clients"][0].update(prog=prog, user=user, pid=pid)
    snap = top.from_reply(raw)
    text = record(snap, width)
    from rich.cells import cell_len

    assert all(cell_len(line) <= width for line in text.splitlines())
    assert str(pid) in text or width < 40

"""set_mode changes a GPU's scheduler live: mode and budgets, into the domain clients read."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_fixture import find_libfikit, start_daemon

from fikitd import shm
from fikitd.protocol import DaemonError

pytestmark = pytest.mark.skipif(find_libfikit() is None, reason="libfikit.so not built (cmake)")


def test_set_mode_writes_mode_and_budgets(fk_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIKIT_LIBRARY", str(find_libfikit()))
    d = start_daemon(fk_root)
    try:
        r = d.call("set_mode", gpu=0, corun_sm_pct=50, budget_us=20)
        assert r["scheduler"]["by_gpu"]["0"]["corun_sm_pct"] == 50
        cfg = shm.Domain.open(fk_root / "run" / "gpu0").config()
        assert (cfg["corun_sm_pct"], cfg["budget_us"], cfg["mode"]) == (50, 20, "fikit")
        d.call("set_mode", mode="strict")
        assert shm.Domain.open(fk_root / "run" / "gpu0").config()["mode"] == "strict"
        for bad in ({"gpu": 0}, {"corun_sm_pct": 101}):
            with pytest.raises(DaemonError) as e:
                d.call("set_mode", **bad)
            assert e.value.code == "bad_request", bad
    finally:
        assert d.stop() == 0

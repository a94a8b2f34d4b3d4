"""What the next GPU session will run: run_pairs' default pairs and modes (issues 9 and 11), its
plan and estimates, and the device commands (bench/device_cmd.py) within the device tool's limits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "fikitd"))  # fake_client: a slot as the library writes it

import device_cmd  # noqa: E402
import run_pairs  # noqa: E402
import workloads_catalog  # noqa: E402
from fake_client import slot_view  # noqa: E402


def test_default_pairs_cover_issue_9() -> None:
    pairs = [run_pairs.parse_pair(s) for s in run_pairs.DEFAULT_PAIRS]
    assert len(pairs) >= 8
    desc = {m: workloads_catalog.CATALOG[m][2] for m in workloads_catalog.CATALOG}
    cnn = {"resnet50", "resnet50_graph", "resnet50_compile"}
    transformer = {"bert", "gpt2", "vit_b_16"}
    b2b = [p for p in pairs if p.rate == 0 and len(p.lps) == 1]
    poisson = [p for p in pairs if p.rate > 0]
    assert any(p.hp in cnn for p in b2b) and any(p.hp in transformer for p in b2b)
    assert any(p.hp in cnn for p in poisson) and any(p.hp in transformer for p in poisson)
    assert any("CUDAGraph" in desc[p.hp] for p in pairs)
    assert any("torch.compile" in desc[p.hp] for p in pairs)
    lps = {m for p in pairs for m in p.lp_models}
    assert any("training" in desc[m] for m in lps) and any("inference" in desc[m] for m in lps)
    assert any(len({pr for _, pr in p.lps}) == 2 for p in pairs)  # high + normal + low
    assert any(len(p.lps) == 4 for p in pairs)
    # issue 11's two core pairs come first: HP b1 back to back next to LP kernels over 300 us
    assert run_pairs.DEFAULT_PAIRS[:2] == ["bert:vgg16_infer", "resnet50:resnet50_train"]


def test_modes_expand_to_issue_11_variants() -> None:
    modes = run_pairs.expand_modes(run_pairs.DEFAULT_MODES, [40, 60], [50, 70])
    for m in modes:
        run_pairs.check_mode(m)
    assert set(run_pairs.ALL_MODES) - {"mps_prio_smcap"} <= set(modes)
    assert {"mps_prio_smcap40", "mps_prio_smcap60", "fikit_corun50", "fikit_corun70"} <= set(modes)
    assert run_pairs.mode_groups("fikit_corun70", "daemon", 60, 50) == ("fikit_corun70", "fikit_corun70")
    g = run_pairs.make_group("fikit_corun70", 50)
    assert g.corun == 70 and g.force_domain and g.mps and g.preload
    with pytest.raises(ValueError):
        run_pairs.check_mode("fikit_corun101")
    with pytest.raises(ValueError):
        run_pairs.parse_pcts("50,0", "--corun-sm-pct")


def test_fikit_runs_the_daemon_default_and_gapfill_pins_zero(tmp_path: Path) -> None:
    """`fikit` measures what users get (fikitd's default share); `fikit_gapfill` keeps
    issue 11's gap-filling-alone variant in a domain pinned at corun_sm_pct = 0."""
    d = run_pairs.Daemon(tmp_path, None, mps=True, budget_us=None, template=None, fikitd_cmd=["true"])
    assert "corun_sm_pct" not in d.config_text()
    assert run_pairs.benchlib.fikitd_default_share() == 0, "fikitd's default: HP first, gap filling"
    auto = run_pairs.Daemon(tmp_path, None, mps=True, budget_us=50, template=None, fikitd_cmd=["true"],
                            corun_sm_pct="auto")
    assert 'corun_sm_pct = "auto"' in auto.config_text() and "budget_us = 50" in auto.config_text()
    pinned = run_pairs.Daemon(tmp_path, None, mps=True, budget_us=None, template=None, fikitd_cmd=["true"],
                              corun_sm_pct="30")
    assert "corun_sm_pct = 30\n" in pinned.config_text()
    with pytest.raises(SystemExit, match="auto"):
        run_pairs.share_value("101")
    run_pairs.check_mode("fikit_gapfill")
    assert run_pairs.mode_groups("fikit_gapfill", "daemon", 60, 50) == ("fikit_gapfill", "fikit_gapfill")
    g = run_pairs.make_group("fikit_gapfill", 50)
    assert g.corun == 0 and g.force_domain and g.fikit and g.sched_mode == "fikit"


def test_mps_is_started_for_every_mode_that_runs_mps_clients() -> None:
    assert not run_pairs.needs_mps(["solo", "solo_preload", "timeslice"])
    for mode in ("solo_mps", "mps", "mps_prio_smcap60", "fikit", "fikit_gapfill", "fikit_corun50"):
        assert run_pairs.needs_mps(["solo", mode]), mode


def test_fikit_hp_env_takes_key_value_pairs_only() -> None:
    assert run_pairs.parse_env(["FIKIT_PROFILE=1", "FIKIT_CUPTI=/x/libcupti.so=odd"]) == {
        "FIKIT_PROFILE": "1", "FIKIT_CUPTI": "/x/libcupti.so=odd"}
    for bad in ("FIKIT_PROFILE", "=1", "A B=1"):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            run_pairs.parse_env([bad])


def test_plan_only_estimates(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_pairs.py"), "--out", str(tmp_path), "--plan-only",
         "--pairs", "bert:vgg16_infer", "--modes", device_cmd.CORE_MODES, "--smcap", "40,60",
         "--corun-sm-pct", "50,70", "--reps", "5"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("bert:vgg16_infer"))
    todo, windows, start, est = (float(x) for x in line.split()[1:])
    assert (todo, windows) == (55, 65)  # 11 modes x 5 reps; solo and solo_preload take 2 windows
    assert 35 <= start <= 70 and est < 400  # fits call 1 beside verify_daemon
    assert "fikit_corun70" in r.stdout and not list(tmp_path.glob("raw.jsonl"))


def test_device_commands_fit_the_tool() -> None:
    for n in device_cmd.CALLS:
        cmd = device_cmd.command(n, "2026-11-26", "0123456789abcdef0123456789abcdef01234567")
        assert len(cmd) <= device_cmd.LIMIT, (n, len(cmd))
        assert "FIKIT_COMMIT=0123456789abcdef0123456789abcdef01234567" in cmd
        assert cmd.rstrip().endswith("s") and "tar czf $OUT/results.tgz $R" in cmd
        assert f"R={device_cmd.results_dir(n, '2026-11-26')};" in cmd
        assert device_cmd.CALLS[n][1] <= device_cmd.DEADLINE_S  # inside the 10-minute command limit
    assert "DL=300" in device_cmd.command(3, "2026-11-26", "x", 300)
    assert device_cmd.results_dir(1, "D") == "bench/results/D-h100"
    assert device_cmd.results_dir(4, "D") == "bench/results/D-2xh200"  # issue 8: <date>-<gpus>
    multi = device_cmd.command(4, "D", "x")
    assert "verify_multigpu.py" in multi and "DL=555" in multi and "--hp-restart-every 8" in multi
    r = subprocess.run([sys.executable, str(REPO / "bench" / "device_cmd.py"), "1"], capture_output=True,
                       text=True, timeout=60, check=True)  # fmt: skip
    assert "FIKIT_COMMIT=" in r.stdout and "unknown" not in r.stdout.split(";")[0]


def test_next_session_shows_the_command_device_cmd_prints() -> None:
    text = (REPO / "bench" / "NEXT_SESSION.md").read_text()
    assert device_cmd.command(5, "2026-11-25", "<HASH>") in text.splitlines()
    assert len(device_cmd.command(5, "2026-11-25", "x" * 40)) <= device_cmd.LIMIT


def test_fill_counts_lp_filled_time_against_hp_idle_gaps(tmp_path: Path, libfikit: Path) -> None:
    """Filled time is counted in LP slots and idle gaps in HP's: the H100 run of 2026-11-25 showed
    fill 0.00 in every fikit row because both were read from HP's slot."""
    import benchlib

    from fikitd import shm

    dom = shm.Domain.create(tmp_path / "gpu0", 0, self_grant=True)

    def slot(i: int, pid: int, **counters: int) -> None:
        buf, v = slot_view(pid)
        for k, x in counters.items():
            v.set(k, x)
        (tmp_path / "gpu0" / f"slot.{i}").write_bytes(bytes(buf))

    slot(0, 100, idle_gap_ns=1_000_000)
    slot(1, 200, filled_ns=250_000)
    slot(2, 300, filled_ns=250_000)
    probe = benchlib.FillProbe(tmp_path / "gpu0", str(libfikit))
    before = probe.read(100)
    slot(0, 100, idle_gap_ns=3_000_000)
    slot(1, 200, filled_ns=750_000)
    after = probe.read(100)
    dom.close()
    fill = benchlib.fill_between(before, after)
    assert fill is not None and fill["fill"] == pytest.approx(0.25)
    assert probe.read(999) is None


def test_clock_sampler_summarises_a_window() -> None:
    import types

    import benchlib

    seq = iter([1980.0, 1755.0] + [1980.0] * 1000)
    fake = types.SimpleNamespace(
        NVML_CLOCK_SM=1,
        nvmlDeviceGetClockInfo=lambda h, kind: next(seq),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=40),
    )
    c = benchlib.ClockSampler.off()
    c.nvml, c.handle, c.period_s = fake, object(), 0.01
    with c.window() as w:
        import time

        time.sleep(0.1)
    assert w["sm_mhz_min"] == 1755.0 and w["sm_mhz_max"] == 1980.0 and w["util_pct_mean"] == 40
    with benchlib.ClockSampler.off().window() as none:
        pass
    assert none == {}

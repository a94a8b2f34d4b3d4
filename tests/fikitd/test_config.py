"""fikit.toml: every key, and errors that name file, line, key, expected and found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from daemon_fixture import REPO

from fikitd import config

FULL = """\
[paths]
runtime_dir = "/r"
state_dir = "/s"
log_dir = "/l"

[mps]
mode = "attach"
pipe_dir = "/p"
log_dir = "/pl"
control = "/opt/bin/mps-control"

[scheduler]
mode = "strict"
budget_us = 200
idle_us = 400
unknown_us = 900
min_lp_share = 0.25
corun_sm_pct = 30

[access]
high_users = ["alice", "bob"]
high_groups = ["gpu-hp"]

[metrics]
enabled = true
listen = "[::1]:9000"
"""


def test_every_key_parses() -> None:
    c = config.parse(FULL, "f.toml")
    assert c.paths.runtime_dir == Path("/r") and c.paths.socket == Path("/r/fikitd.sock")
    assert c.paths.state_dir == Path("/s") and c.paths.log_dir == Path("/l")
    assert (c.mps.mode, c.mps.control) == ("attach", "/opt/bin/mps-control")
    assert c.mps_pipe_dir == Path("/p") and c.mps_log_dir == Path("/pl")
    s = c.scheduler
    assert (s.mode, s.budget_us, s.idle_us, s.unknown_us, s.min_lp_share, s.corun_sm_pct) == (
        "strict", 200, 400, 900, 0.25, 30)
    assert s.domain_fields()["min_lp_share_pm"] == 250
    assert c.access.high_users == ("alice", "bob") and c.access.high_groups == ("gpu-hp",)
    assert c.metrics.enabled and c.metrics.address == ("::1", 9000)


def test_defaults() -> None:
    c = config.parse("", "f.toml")
    assert c.paths.runtime_dir == Path("/run/fikit") and c.paths.state_dir == Path("/var/lib/fikit")
    assert c.mps.mode == "manage" and c.mps_pipe_dir == Path("/run/fikit/mps")
    assert c.mps_log_dir == Path("/var/log/fikit/mps")
    assert (c.scheduler.mode, c.scheduler.budget_us, c.scheduler.idle_us, c.scheduler.unknown_us) == (
        "fikit", 50, 500, 1000)
    assert c.scheduler.min_lp_share == 0.0 and c.scheduler.corun_sm_pct == 0
    sched = c.scheduler
    assert (sched.corun_max_pct, sched.corun_hp_tolerance, sched.corun_start_pct) == (70, 0.03, 0)
    assert c.metrics.listen == "127.0.0.1:9464" and c.metrics.enabled


def test_corun_share_is_auto_or_a_percentage() -> None:
    pinned = config.parse("[scheduler]\ncorun_sm_pct = 30\n", "f.toml").scheduler
    assert pinned.domain_fields()["corun_sm_pct"] == 30 and not pinned.corun_auto
    assert config.parse('[scheduler]\ncorun_sm_pct = "auto"\n', "f.toml").scheduler.corun_auto
    for bad in ('"half"', "101", "-1", "true", "50.5"):
        with pytest.raises(config.ConfigError) as e:
            config.parse(f"[scheduler]\ncorun_sm_pct = {bad}\n", "f.toml")
        assert "corun_sm_pct" in str(e.value) and '"auto" or an integer from 0 to 100' in str(e.value)
    with pytest.raises(config.ConfigError, match="corun_hp_tolerance"):
        config.parse("[scheduler]\ncorun_hp_tolerance = 0\n", "f.toml")


def test_quiet_stride_is_a_power_of_two_and_reaches_the_domain() -> None:
    sched = config.parse("[scheduler]\nquiet_stride = 64\nquiet_gap_us = 250\n", "f.toml").scheduler
    assert (sched.domain_fields()["quiet_stride"], sched.domain_fields()["quiet_gap_us"]) == (64, 250)
    assert config.parse("", "f.toml").scheduler.domain_fields()["quiet_stride"] == 32
    for bad in ("3", "0", "2048", "true", "8.0"):
        with pytest.raises(config.ConfigError) as e:
            config.parse(f"[scheduler]\nmode = \"fikit\"\nquiet_stride = {bad}\n", "f.toml")
        assert "quiet_stride" in str(e.value) and "a power of two from 1 to 1024" in str(e.value)
        assert "line 3" in str(e.value) or ":3" in str(e.value), str(e.value)
    with pytest.raises(config.ConfigError, match="quiet_gap_us"):
        config.parse("[scheduler]\nquiet_gap_us = 0\n", "f.toml")


def test_shipped_example_is_valid_and_has_every_key() -> None:
    text = (REPO / "etc" / "fikit.toml").read_text()
    config.parse(text, "etc/fikit.toml")
    for table, keys in config.SCHEMA.items():
        assert f"[{table}]" in text
        for key in keys:
            assert f"{key} =" in text, f"{table}.{key} missing from etc/fikit.toml"


@pytest.mark.parametrize(
    ("text", "line", "key", "found"),
    [
        ('[paths]\nruntime_dir = "relative"\n', 2, "paths.runtime_dir", "string 'relative'"),
        ("[paths]\nstate_dir = 3\n", 2, "paths.state_dir", "integer 3"),
        ('[mps]\nmode = "maybe"\n', 2, "mps.mode", "string 'maybe'"),
        ('[mps]\ncontrol = "bin/x"\n', 2, "mps.control", "string 'bin/x'"),
        ('\n[scheduler]\nmode = "fast"\n', 3, "scheduler.mode", "string 'fast'"),
        ('[scheduler]\n\nbudget_us = "150"\n', 3, "scheduler.budget_us", "string '150'"),
        ("[scheduler]\nidle_us = true\n", 2, "scheduler.idle_us", "boolean True"),
        ("[scheduler]\nunknown_us = 0\n", 2, "scheduler.unknown_us", "integer 0"),
        ("[scheduler]\nmin_lp_share = 1.5\n", 2, "scheduler.min_lp_share", "float 1.5"),
        ("[scheduler]\ncorun_sm_pct = 101\n", 2, "scheduler.corun_sm_pct", "integer 101"),
        ('[access]\nhigh_users = "alice"\n', 2, "access.high_users", "string 'alice'"),
        ('[access]\nhigh_groups = ["ok", "bad name"]\n', 2, "access.high_groups", "array"),
        ('[metrics]\nenabled = "yes"\n', 2, "metrics.enabled", "string 'yes'"),
        ('[metrics]\nlisten = "localhost"\n', 2, "metrics.listen", "string 'localhost'"),
        ('[metrics]\nlisten = "h:70000"\n', 2, "metrics.listen", "string 'h:70000'"),
        ("[scheduler]\nbudget = 3\n", 2, "scheduler.budget", "an unknown key"),
        ("[paths]\n[schedular]\nmode = 1\n", 2, "schedular", "unknown table [schedular]"),
        ('paths = "x"\n', 1, "paths", "string 'x'"),
    ],
)
def test_errors_name_file_line_key(text: str, line: int, key: str, found: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "/etc/fikit/fikit.toml")
    msg = str(err.value)
    assert msg.startswith(f"/etc/fikit/fikit.toml:{line}: {key}: expected "), msg
    assert found in msg


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse('[scheduler]\nbudget_us = -1\nmode = "x"\n[access]\nhigh_users = 1\n', "f")
    keys = [p.key for p in err.value.problems]
    assert keys == ["scheduler.budget_us", "scheduler.mode", "access.high_users"]
    assert [p.line for p in err.value.problems] == [2, 3, 5]


def test_malformed_toml() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse('[paths]\nruntime_dir = "/x"\nstate_dir = \n', "f.toml")
    assert str(err.value).startswith("f.toml:3: (syntax): expected valid TOML")


def test_dotted_keys_at_top_level_get_a_line() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse('\nscheduler.mode = "nope"\n', "f.toml")
    assert str(err.value).startswith("f.toml:2: scheduler.mode")


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(FULL)
    bad.write_text("[scheduler]\nbudget_us = -1\n")
    run = [sys.executable, "-m", "fikitd.main", "--check-config"]
    ok = subprocess.run([*run, str(good)], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    no = subprocess.run([*run, str(bad)], cwd=REPO, capture_output=True, text=True)
    assert no.returncode == 1 and f"{bad}:2: scheduler.budget_us" in no.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.toml")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 1 and "no such file" in missing.stderr

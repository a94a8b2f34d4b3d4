"""The daemon's configuration: ``fikit.toml``, every key checked.

An operator who mistypes a key must hear about it at start, with the file and line, rather
than find out later that the setting silently did nothing; so unknown keys are errors and
every message names the file, line, key, what was expected and what was found.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .protocol import SCHED_MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MPS_MODES = ("manage", "attach", "none")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}\$?$")


@dataclass(frozen=True)
class PathsConfig:
    runtime_dir: Path = paths.DEFAULT_RUNTIME_DIR
    state_dir: Path = paths.DEFAULT_STATE_DIR
    log_dir: Path = paths.DEFAULT_LOG_DIR

    @property
    def socket(self) -> Path:
        return paths.socket_path(self.runtime_dir)


@dataclass(frozen=True)
class MpsConfig:
    mode: str = "manage"
    pipe_dir: Path | None = None  # None: derived from the mode and [paths], see resolved_pipe_dir
    log_dir: Path | None = None
    control: str = "nvidia-cuda-mps-control"
    # A job whose MPS server died is stopped (SIGTERM, SIGKILL 10 s later) if it has not ended
    # this many seconds after fikitd noticed; 0: never stopped, only told.
    dead_server_grace_s: int = 30


@dataclass(frozen=True)
class SchedulerConfig:
    mode: str = "fikit"
    budget_us: int = 50
    idle_us: int = 500
    unknown_us: int = 1000
    min_lp_share: float = 0.0
    # HP first by default: on the H100 the "auto" share ran HP 1.8-2.5x slower beside LP in back-to-back
    # pairs (bench/results/2026-11-25-h100-cupti), gap filling 0.9-1.2x (bench/results/2026-11-26-h100).
    corun_sm_pct: int | str = 0
    corun_max_pct: int = 70
    corun_hp_tolerance: float = 0.03
    # A settled HP publishes its predictions once every quiet_stride launches of a burst, unless
    # a gap of quiet_gap_us or more shows inside its bursts (interpose/src/quiet.c says why).
    quiet_stride: int = 32
    quiet_gap_us: int = 100

    @property
    def corun_auto(self) -> bool:
        return self.corun_sm_pct == "auto"

    @property
    def corun_start_pct(self) -> int:
        """What a domain publishes first: the pinned share, or where "auto" starts (see share.py)."""
        return min(50, self.corun_max_pct) if isinstance(self.corun_sm_pct, str) else self.corun_sm_pct

    def domain_fields(self) -> dict[str, int | str]:
        """The values as the shared-memory domain stores them (the share in per mille)."""
        return {
            "mode": self.mode,
            "budget_us": self.budget_us,
            "idle_us": self.idle_us,
            "unknown_us": self.unknown_us,
            "min_lp_share_pm": round(self.min_lp_share * 1000),
            "corun_sm_pct": self.corun_start_pct,
            "quiet_stride": self.quiet_stride,
            "quiet_gap_us": self.quiet_gap_us,
        }


@dataclass(frozen=True)
class AccessConfig:
    high_users: tuple[str, ...] = ()
    high_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9464"

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    mps: MpsConfig = field(default_factory=MpsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: Path | None = None

    @property
    def mps_pipe_dir(self) -> Path:
        """A managed server gets its own pipe dir under the runtime dir; attach defaults to NVIDIA's."""
        if self.mps.pipe_dir is not None:
            return self.mps.pipe_dir
        if self.mps.mode == "attach":
            return Path("/tmp/nvidia-mps")
        return self.paths.runtime_dir / "mps"

    @property
    def mps_log_dir(self) -> Path:
        if self.mps.log_dir is not None:
            return self.mps.log_dir
        if self.mps.mode == "attach":
            return Path("/var/log/nvidia-mps")
        return self.paths.log_dir / "mps"


@dataclass(frozen=True)
class Problem:
    line: int | None
    key: str
    expected: str
    found: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.key}: expected {self.expected}, found {self.found}"


class ConfigError(Exception):
    """Every problem in one file, so an operator fixes them in one pass."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


# --- value checks: each returns the converted value or raises _Bad(expected) -------------------


class _Bad(Exception):
    def __init__(self, expected: str) -> None:
        self.expected = expected


Check = Callable[[Any], Any]


def _abs_path(v: Any) -> Path:
    if not isinstance(v, str) or not v.startswith("/") or "\0" in v:
        raise _Bad("an absolute path (a string starting with /)")
    return Path(v)


def _choice(options: tuple[str, ...]) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise _Bad("one of " + ", ".join(f'"{o}"' for o in options))
        return v

    return check


def _int_range(lo: int, hi: int) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Bad(f"an integer from {lo} to {hi}")
        return v

    return check


def _power_of_two(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024 or v & (v - 1):
        raise _Bad("a power of two from 1 to 1024")
    return v


def _pct_or_auto(v: Any) -> int | str:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100):
        return v  # type: ignore[no-any-return]
    raise _Bad('"auto" or an integer from 0 to 100')


def _tolerance(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) <= 1.0:
        raise _Bad("a number above 0.0, at most 1.0")
    return float(v)


def _share(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise _Bad("a number from 0.0 to 1.0")
    return float(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("true or false")
    return v


def _names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and _NAME_RE.match(x) for x in v):
        raise _Bad("a list of user or group names")
    return tuple(v)


def _program(v: Any) -> str:
    if not isinstance(v, str) or not v or "\0" in v or (not v.startswith("/") and "/" in v):
        raise _Bad("a program name on PATH or an absolute path")
    return v


def _listen(v: Any) -> str:
    expected = 'an address "host:port" (IPv6 in brackets), port 1 to 65535'
    if not isinstance(v, str):
        raise _Bad(expected)
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise _Bad(expected)
    if host.startswith("["):
        if not host.endswith("]"):
            raise _Bad(expected)
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _Bad(expected) from None
    elif not re.match(r"^[A-Za-z0-9.-]{1,253}$", host):
        raise _Bad(expected)
    return v


SCHEMA: dict[str, dict[str, Check]] = {
    "paths": {"runtime_dir": _abs_path, "state_dir": _abs_path, "log_dir": _abs_path},
    "mps": {"mode": _choice(MPS_MODES), "pipe_dir": _abs_path, "log_dir": _abs_path, "control": _program,
            "dead_server_grace_s": _int_range(0, 86400)},
    "scheduler": {
        "mode": _choice(SCHED_MODES),
        "budget_us": _int_range(0, 1_000_000),
        "idle_us": _int_range(0, 10_000_000),
        "unknown_us": _int_range(1, 10_000_000),
        "min_lp_share": _share,
        "corun_sm_pct": _pct_or_auto,
        "corun_max_pct": _int_range(0, 100),
        "corun_hp_tolerance": _tolerance,
        "quiet_stride": _power_of_two,
        "quiet_gap_us": _int_range(1, 10_000_000),
    },
    "access": {"high_users": _names, "high_groups": _names},
    "metrics": {"enabled": _bool, "listen": _listen},
}
_SECTIONS: dict[str, type[Any]] = {
    "paths": PathsConfig,
    "mps": MpsConfig,
    "scheduler": SchedulerConfig,
    "access": AccessConfig,
    "metrics": MetricsConfig,
}


def _describe(v: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    name = kind.get(type(v), type(v).__name__)
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """Where a key sits, by scanning the text: tomllib keeps no positions.

    Good enough for the flat files fikit uses: ``[table]`` headers then ``key = value`` lines.
    """
    current: str | None = None
    header_line: int | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]", line)
        if m and not line.startswith("[["):
            current = m.group(1).strip("\"' ")
            if key is None and current == table:
                return n
            header_line = n if current == table else header_line
            continue
        if key is None:
            continue
        km = re.match(r"^([A-Za-z0-9_\"'.-]+)\s*=", line)
        if not km:
            continue
        name = km.group(1).strip("\"'")
        dotted = f"{table}.{key}" if table else key
        if (current == table and name == key) or (current is None and name == dotted):
            return n
    return header_line


def parse(text: str, source: str = "<string>") -> Config:
    """Turn TOML text into a Config, or raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError(source, [Problem(line, "(syntax)", "valid TOML", str(exc))]) from None
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    for table, value in data.items():
        if table not in SCHEMA:
            problems.append(
                Problem(_line_of(text, table, None) or _line_of(text, None, table), table,
                        "one of the tables [" + "], [".join(SCHEMA) + "]", f"unknown table [{table}]")
            )
            continue
        if not isinstance(value, dict):
            problems.append(Problem(_line_of(text, None, table), table, "a table", _describe(value)))
            continue
        fields: dict[str, Any] = {}
        for key, raw in value.items():
            check = SCHEMA[table].get(key)
            # a key, or a sub-table header such as [paths.x]
            where = _line_of(text, table, key) or _line_of(text, f"{table}.{key}", None)
            if check is None:
                known = ", ".join(SCHEMA[table])
                problems.append(Problem(where, f"{table}.{key}", f"one of {known}", "an unknown key"))
                continue
            try:
                fields[key] = check(raw)
            except _Bad as bad:
                problems.append(Problem(where, f"{table}.{key}", bad.expected, _describe(raw)))
        sections[table] = _SECTIONS[table](**fields)
    if problems:
        raise ConfigError(source, problems)
    return Config(**sections)


def load(path: Path) -> Config:
    """Read and check a file; a missing default file means the defaults, a missing named one is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [Problem(None, "(file)", "a readable file", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem(None, "(file)", "a readable UTF-8 file", str(exc))]) from None
    cfg = parse(text, str(path))
    return Config(cfg.paths, cfg.mps, cfg.scheduler, cfg.access, cfg.metrics, source=path)

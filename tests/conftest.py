"""Shared fixtures for the interposition tests: build the fake driver, the clients and libfikit.so.

CI has no GPU, so every interposition test runs a real process against tests/fakecuda (a stand-in
libcuda.so.1 that simulates kernel time and counts every launch) with the real libfikit.so preloaded,
then compares what the library reports (FIKIT_STATS) with what the fake driver saw (FAKECUDA_COUNTS).
Everything is built once per session into a temporary directory, from this checkout, so that a test
run never depends on a stale build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakecuda"))

from fakecuda_harness import (
    CFLAGS,
    FAKE_SRC,
    INCLUDE,
    REPO,
    FakeBuild,
    Run,
    RunClient,
    check_build,
    compiler,
    load_by_pid,
)


@pytest.fixture(scope="session")
def fake_build(tmp_path_factory: pytest.TempPathFactory) -> FakeBuild:
    """The fake driver and both C clients, compiled with warnings as errors as CI would."""
    out = tmp_path_factory.mktemp("fakecuda")
    cc = compiler()
    lib = out / "libcuda.so.1"
    inc = f"-I{INCLUDE}"

    def start(what: str, args: list[str]) -> tuple[str, subprocess.Popen[str]]:
        return what, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # -Bsymbolic: the fake's cuGetProcAddress must hand out its own entry points, as the real driver
    # does, not the preloaded library's exports that would otherwise interpose on its references.
    check_build([start("fake libcuda.so.1",
                        [cc, *CFLAGS, "-fPIC", "-shared", inc, "-Wl,-soname,libcuda.so.1", "-Wl,-Bsymbolic",
                         "-o", str(lib), str(FAKE_SRC / "fakecuda.c"), "-lpthread"]),
                  start("client", [cc, *CFLAGS, inc, "-o", str(out / "client"), str(FAKE_SRC / "client.c"),
                                   "-ldl", "-lpthread"])])
    (out / "libcuda.so").symlink_to("libcuda.so.1")
    # The fake CUPTI reads the fake driver's simulated timeline: linked against it. Found by soname
    # (libcupti.so.13) through LD_LIBRARY_PATH, ahead of any real CUPTI of the machine.
    check_build([start("client_direct",
                        [cc, *CFLAGS, "-DCLIENT_DIRECT", inc, "-o", str(out / "client_direct"),
                         str(FAKE_SRC / "client.c"), f"-L{out}", "-lcuda", "-ldl", "-lpthread"]),
                  start("fake libcupti.so.13",
                        [cc, *CFLAGS, "-fPIC", "-shared", inc, f"-I{FAKE_SRC}", "-Wl,-soname,libcupti.so.13",
                         "-o", str(out / "libcupti.so.13"), str(FAKE_SRC / "fakecupti.c"), f"-L{out}",
                         "-lcuda", "-lpthread"])])
    return FakeBuild(out, out / "client", out / "client_direct", FAKE_SRC / "pyclient.py")


def _build_libfikit() -> Path:
    """libfikit.so from $FIKIT_LIBRARY, or built from this checkout with CMake (incrementally, into
    build/test), before any test module is imported: the daemon's and the shared-memory tests read
    the layout from it at import time."""
    given = os.environ.get("FIKIT_LIBRARY")
    if given:
        path = Path(given).resolve()
        if not path.is_file():
            raise pytest.UsageError(f"FIKIT_LIBRARY={given} is not a file")
        return path
    if not shutil.which("cmake"):
        raise pytest.UsageError("cmake not on PATH and FIKIT_LIBRARY not set: cannot build libfikit.so")
    build = REPO / "build" / "test"
    env = {**os.environ, "CC": compiler()}
    for args in (["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(build), "-j2"]):
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if p.returncode != 0:
            raise pytest.UsageError(f"{' '.join(args)} failed:\n{p.stdout}")
    so = build / "interpose" / "libfikit.so"
    if not so.is_file():
        raise pytest.UsageError(f"the build produced no {so}")
    return so


def _fikitctl_importable() -> None:
    """The package directory is cli/ but it is imported as fikitctl: a symlink in a temporary
    directory gives this checkout's cli/ that name, ahead of any installed copy, for this process
    and every child the tests start."""
    shim = Path(tempfile.mkdtemp(prefix="fikitctl-shim-"))
    os.chmod(shim, 0o755)
    (shim / "fikitctl").symlink_to(REPO / "cli")
    for p in (str(REPO), str(shim)):
        if p not in sys.path:
            sys.path.insert(0, p)
    extra = [p for p in [os.environ.get("PYTHONPATH")] if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO), *extra])


def pytest_configure(config: pytest.Config) -> None:
    _fikitctl_importable()
    lib = _build_libfikit()
    os.environ["FIKIT_LIBRARY"] = str(lib)
    os.environ["FIKIT_TEST_LIBRARY"] = str(lib)


@pytest.fixture(scope="session")
def libfikit() -> Path:
    """The libfikit.so every test uses (see pytest_configure)."""
    return Path(os.environ["FIKIT_TEST_LIBRARY"])


@pytest.fixture
def run_client(fake_build: FakeBuild, request: pytest.FixtureRequest,
               tmp_path: Path) -> Iterator[RunClient]:
    """Run a client under the fake driver, with libfikit.so preloaded unless preload=False.

    The environment is scrubbed of FIKIT_* and FAKECUDA_* so a developer's shell cannot change a
    result; what a test needs it passes in `env`.
    """
    counter = iter(range(1_000_000))

    def run(args: Sequence[str], env: Mapping[str, str] | None = None, preload: bool = True,
            client: str = "client", timeout: float = 60.0, check_rc: bool = True) -> Run:
        workdir = tmp_path / f"run{next(counter)}"
        workdir.mkdir()
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("FIKIT_", "FAKECUDA_")) and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
        base["LD_LIBRARY_PATH"] = str(fake_build.fake_dir)
        base["FIKIT_STATS"] = str(workdir / "stats.%p.json")
        base["FAKECUDA_COUNTS"] = str(workdir / "counts.%p.json")
        if preload:
            base["LD_PRELOAD"] = str(request.getfixturevalue("libfikit"))
        base.update(env or {})
        if client == "python":
            argv = [sys.executable, str(fake_build.pyclient), *args]
        elif client == "direct":
            argv = [str(fake_build.client_direct), *args]
        else:
            argv = [str(fake_build.client), *args]
        try:
            p = subprocess.run(argv, env=base, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                               errors="replace")
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"client {' '.join(args)} hung for {timeout} s; stderr so far:\n{e.stderr!r}")
        reports = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
        stats = load_by_pid(str(workdir / "stats.*.json"))
        truth = load_by_pid(str(workdir / "counts.*.json"))
        result = Run(list(args), p.returncode, p.stdout, p.stderr, reports, stats, truth, workdir)
        if check_rc:
            assert p.returncode == 0, result.describe()
        return result

    yield run



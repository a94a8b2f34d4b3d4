"""fikit_cuda.h must declare exactly what the real driver exports.

libfikit.so builds without a CUDA toolkit, from its own declarations of the driver types. If one drifts
from <cuda.h> (a new CUDA release, a typo) the wrapper would pass a launch's arguments wrongly, which is
silent corruption inside someone else's job. interpose/tests/cuda_abi_check.c turns every declaration
into a compile-time assertion against the real header; these tests compile it, and prove the assertions
bite by compiling deliberately broken copies of the header.

The same holds for fikit_cupti.h (profiling mode reads CUPTI's kernel activity records in place): it is
checked against the toolkit's <cupti.h> and against every other copy of CUPTI's headers installed (the
nvidia wheels torch brings, Triton's), record field offsets included.
"""

from __future__ import annotations

import re
import shutil
import site
import subprocess
from pathlib import Path

import pytest
from fakecuda_harness import INCLUDE, REPO, compiler

CUDA_INCLUDE = Path("/usr/local/cuda/include")
CHECK_SRC = REPO / "interpose" / "tests" / "cuda_abi_check.c"
HEADER = INCLUDE / "fikit_cuda.h"
CUPTI_HEADER = INCLUDE / "fikit_cupti.h"
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
# The toolkit's CUPTI headers: beside cuda.h (CUDA 13) or under extras/CUPTI (older layouts).
TOOLKIT_CUPTI = next((d for d in (CUDA_INCLUDE, CUDA_INCLUDE.parent / "extras" / "CUPTI" / "include")
                      if (d / "cupti.h").is_file()), None)

pytestmark = pytest.mark.skipif(not (CUDA_INCLUDE / "cuda.h").is_file(),
                                reason="no CUDA toolkit headers at /usr/local/cuda/include")


def _cupti_flags(cupti: Path | None) -> list[str]:
    """Check fikit_cupti.h too, against the CUPTI headers in `cupti` (the toolkit's fills any gap)."""
    return [] if cupti is None else ["-DFIKIT_ABI_CUPTI", f"-I{cupti}"]


def _compile(out: Path, *extra: str, include: Path = INCLUDE,
             cupti: Path | None = TOOLKIT_CUPTI) -> subprocess.CompletedProcess[str]:
    return subprocess.run([compiler(), *CFLAGS, f"-I{include}", *_cupti_flags(cupti), "-idirafter",
                           str(CUDA_INCLUDE), *extra, "-o", str(out), str(CHECK_SRC)],
                          capture_output=True, text=True)


def _installed_cupti() -> list[Path]:
    """Every installed copy of CUPTI's headers: the toolkit's, Python packages' (nvidia wheels, Triton)."""
    roots = [d for d in [TOOLKIT_CUPTI] if d is not None]
    for sp in sorted({*site.getsitepackages(), site.getusersitepackages()}):
        for pattern in ("nvidia/*/include", "triton/backends/nvidia/include"):
            roots += sorted(Path(sp).glob(pattern))
    out: list[Path] = []
    for d in roots:
        if (d / "cupti_activity.h").is_file() and d.resolve() not in {o.resolve() for o in out}:
            out.append(d)
    return out


def test_declarations_match_cuda_h(tmp_path: Path) -> None:
    p = _compile(tmp_path / "abi")
    assert p.returncode == 0, p.stderr


def _check_own(tmp_path: Path, cupti: Path | None) -> None:
    p = _compile(tmp_path / "abi", cupti=cupti)
    assert p.returncode == 0, p.stderr
    sizes = subprocess.run([str(tmp_path / "abi")], capture_output=True, text=True, check=True).stdout.split()
    own = subprocess.run([compiler(), *CFLAGS, f"-I{INCLUDE}", "-DFIKIT_ABI_OWN",
                          *(["-DFIKIT_ABI_CUPTI"] if cupti else []), *sizes, "-o", str(tmp_path / "own"),
                          str(CHECK_SRC)], capture_output=True, text=True)
    assert own.returncode == 0, own.stderr


def test_own_stand_in_types_match_cuda_h(tmp_path: Path) -> None:
    """The typedefs libfikit.so is really built with (not <cuda.h>'s) have the real sizes and layout."""
    _check_own(tmp_path, TOOLKIT_CUPTI)


@pytest.mark.parametrize("cupti", _installed_cupti() or [None], ids=str)
def test_cupti_declarations_match(tmp_path: Path, cupti: Path | None) -> None:
    """fikit_cupti.h (signatures, constants, kernel record field offsets and types) against one installed copy
    of CUPTI's headers, and fikit's own stand-in types against that copy's sizes."""
    if cupti is None:
        pytest.skip("no CUPTI headers installed")
    _check_own(tmp_path, cupti)


def test_every_typedef_is_checked() -> None:
    """A new fikit_pfn_* typedef without an assertion would be an unchecked hole."""
    declared = set(re.findall(r"typedef\s+CUresult\s*\(\*\s*fikit_pfn_(\w+)\)", HEADER.read_text()))
    cupti = set(re.findall(r"typedef\s+CUptiResult\s*\(\*\s*fikit_pfn_(\w+)\)", CUPTI_HEADER.read_text()))
    assert cupti, "no CUPTI fikit_pfn_ typedefs found: did fikit_cupti.h change shape?"
    declared |= cupti
    src = CHECK_SRC.read_text()
    checked = set(re.findall(r"^\s*X\((\w+)\)", src, re.M))
    checked |= set(re.findall(r"SAME_TYPE\(fikit_pfn_(\w+),", src))
    assert declared, "no fikit_pfn_ typedefs found: did the header change shape?"
    assert declared <= checked, f"typedefs without an ABI check: {sorted(declared - checked)}"


def test_negative_control_fails(tmp_path: Path) -> None:
    p = _compile(tmp_path / "abi", "-DFIKIT_ABI_NEGATIVE")
    assert p.returncode != 0
    assert "negative control" in p.stderr


BROKEN = {
    "dropped-argument": (
        HEADER,
        r"(fikit_pfn_cuLaunchKernelEx\)\(const CUlaunchConfig \*, CUfunction, void \*\*), void \*\*\)",
        r"\1)", "fikit_pfn_cuLaunchKernelEx"),
    "wrong-argument-type": (HEADER, r"(fikit_pfn_cuEventRecord\)\()CUevent, CUstream", r"\1CUstream, CUevent",
                            "fikit_pfn_cuEventRecord"),
    "wrong-constant": (HEADER, r"X\(CUDA_ERROR_NOT_READY, 600\)", "X(CUDA_ERROR_NOT_READY, 601)",
                       "CUDA_ERROR_NOT_READY"),
    "swapped-fields": (HEADER, r"X\(unsigned int, gridDimX\)(\s*\\\s*)X\(unsigned int, gridDimY\)",
                       r"X(unsigned int, gridDimY)\1X(unsigned int, gridDimX)", "gridDim"),
    "field-type": (HEADER, r"X\(unsigned int, numAttrs\)", "X(unsigned long, numAttrs)", "numAttrs"),
    "cupti-signature": (CUPTI_HEADER, r"(fikit_pfn_cuptiActivityFlushAll\)\()uint32_t", r"\1uint64_t",
                        "fikit_pfn_cuptiActivityFlushAll"),
    "cupti-constant": (CUPTI_HEADER, r"X\(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, 10\)",
                       "X(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, 11)",
                       "CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL"),
    # A wrong offset in the field list, and the struct laid out to match it: only <cupti.h> can tell.
    "cupti-record-offset": (CUPTI_HEADER, r"X\(uint32_t, graphId, 156\)([\s\S]*)_pad5\[44\]",
                            r"X(uint32_t, graphId, 152)\1_pad5[40]", "graphId is not at offset 152"),
    "cupti-record-type": (CUPTI_HEADER,
                          r"X\(int32_t, dynamicSharedMemory, 80\)([\s\S]*)int32_t dynamicSharedMemory;",
                          r"X(uint32_t, dynamicSharedMemory, 80)\1uint32_t dynamicSharedMemory;",
                          "dynamicSharedMemory type differs"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_drift_is_caught(tmp_path: Path, case: str) -> None:
    header, pattern, repl, expect = BROKEN[case]
    if header == CUPTI_HEADER and TOOLKIT_CUPTI is None:
        pytest.skip("no CUPTI headers in the toolkit")
    broken, n = re.subn(pattern, repl, header.read_text())
    assert n == 1, f"{case}: the header no longer has the text this test breaks"
    inc = tmp_path / "include"
    shutil.copytree(INCLUDE, inc)
    (inc / header.name).write_text(broken)
    p = _compile(tmp_path / "abi", include=inc)
    assert p.returncode != 0, f"{case}: a drifted header compiled"
    assert expect in p.stderr, p.stderr

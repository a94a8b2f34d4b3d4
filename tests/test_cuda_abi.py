"""fikit_cuda.h must declare exactly what the real driver exports.

libfikit.so builds without a CUDA toolkit, from its own declarations of the driver types. If one drifts
from <cuda.h> (a new CUDA release, a typo) the wrapper would pass a launch's arguments wrongly, which is
silent corruption inside someone else's job. interpose/tests/cuda_abi_check.c turns every declaration
into a compile-time assertion against the real header; these tests compile it, and prove the assertions
bite by compiling deliberately broken copies of the header.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fakecuda_harness import INCLUDE, REPO, compiler

CUDA_INCLUDE = Path("/usr/local/cuda/include")
CHECK_SRC = REPO / "interpose" / "tests" / "cuda_abi_check.c"
HEADER = INCLUDE / "fikit_cuda.h"
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]

pytestmark = pytest.mark.skipif(not (CUDA_INCLUDE / "cuda.h").is_file(),
                                reason="no CUDA toolkit headers at /usr/local/cuda/include")


def _compile(out: Path, *extra: str, include: Path = INCLUDE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([compiler(), *CFLAGS, f"-I{include}", f"-I{CUDA_INCLUDE}", *extra, "-o", str(out),
                           str(CHECK_SRC)], capture_output=True, text=True)


def test_declarations_match_cuda_h(tmp_path: Path) -> None:
    p = _compile(tmp_path / "abi")
    assert p.returncode == 0, p.stderr


def test_own_stand_in_types_match_cuda_h(tmp_path: Path) -> None:
    """The typedefs libfikit.so is really built with (not <cuda.h>'s) have the real sizes and layout."""
    p = _compile(tmp_path / "abi")
    assert p.returncode == 0, p.stderr
    sizes = subprocess.run([str(tmp_path / "abi")], capture_output=True, text=True, check=True).stdout.split()
    own = subprocess.run([compiler(), *CFLAGS, f"-I{INCLUDE}", "-DFIKIT_ABI_OWN", *sizes, "-o",
                          str(tmp_path / "own"), str(CHECK_SRC)], capture_output=True, text=True)
    assert own.returncode == 0, own.stderr


def test_every_typedef_is_checked() -> None:
    """A new fikit_pfn_* typedef without an assertion would be an unchecked hole."""
    declared = set(re.findall(r"typedef\s+CUresult\s*\(\*\s*fikit_pfn_(\w+)\)", HEADER.read_text()))
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
        r"(fikit_pfn_cuLaunchKernelEx\)\(const CUlaunchConfig \*, CUfunction, void \*\*), void \*\*\)",
        r"\1)", "fikit_pfn_cuLaunchKernelEx"),
    "wrong-argument-type": (r"(fikit_pfn_cuEventRecord\)\()CUevent, CUstream", r"\1CUstream, CUevent",
                            "fikit_pfn_cuEventRecord"),
    "wrong-constant": (r"X\(CUDA_ERROR_NOT_READY, 600\)", "X(CUDA_ERROR_NOT_READY, 601)",
                       "CUDA_ERROR_NOT_READY"),
    "swapped-fields": (r"X\(unsigned int, gridDimX\)(\s*\\\s*)X\(unsigned int, gridDimY\)",
                       r"X(unsigned int, gridDimY)\1X(unsigned int, gridDimX)", "gridDim"),
    "field-type": (r"X\(unsigned int, numAttrs\)", "X(unsigned long, numAttrs)", "numAttrs"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_drift_is_caught(tmp_path: Path, case: str) -> None:
    pattern, repl, expect = BROKEN[case]
    text = HEADER.read_text()
    broken, n = re.subn(pattern, repl, text)
    assert n == 1, f"{case}: the header no longer has the text this test breaks"
    inc = tmp_path / "include"
    inc.mkdir()
    (inc / "fikit_cuda.h").write_text(broken)
    shutil.copy(INCLUDE / "fikit_shm.h", inc)
    p = _compile(tmp_path / "abi", include=inc)
    assert p.returncode != 0, f"{case}: a drifted header compiled"
    assert expect in p.stderr, p.stderr

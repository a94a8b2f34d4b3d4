"""A small Triton kernel for the interposition proof (imported only on a GPU)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask)
    b = tl.load(b_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, a + b, mask=mask)


def add(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, block: int = 1024) -> None:
    n = a.numel()
    grid = (triton.cdiv(n, block),)
    add_kernel[grid](a, b, out, n, BLOCK=block)

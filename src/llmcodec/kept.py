"""How tensors that are not coded are stored: at 16 bits unless exactness is asked for.

Norms, biases and anything else kept uncoded are small next to the matrices but not free under a
whole-file budget: they are stored in the source's 16-bit type (bf16/fp16), and float32/float64
sources as fp16, or bf16 where a value is beyond fp16's range. Restore casts back to the source type.
"""

from __future__ import annotations

import math

import torch

FP16_MAX = 65504.0
WIDE = (torch.float32, torch.float64)


def storage_dtype(t: torch.Tensor, exact: bool = False) -> torch.dtype:
    """The dtype ``t`` is stored in: its own if ``exact``, not floating point or already 16 bits
    or narrower; else fp16 if every finite value fits, bf16 if they fit bf16, its own otherwise."""
    if exact or t.dtype not in WIDE or t.numel() == 0:
        return t.dtype
    # min and max without copies of a large tensor (an embedding kept uncoded); numpy's reductions
    # start no thread pool
    a = t.detach().cpu().numpy()
    lo, hi = float(a.min()), float(a.max())
    if math.isfinite(lo) and math.isfinite(hi):
        peak = max(-lo, hi)
    else:  # NaN or Inf somewhere: the largest finite magnitude
        finite = t[torch.isfinite(t)]
        peak = float(finite.abs().max()) if finite.numel() else 0.0
    if peak <= FP16_MAX:
        return torch.float16
    if peak <= float(torch.finfo(torch.bfloat16).max):
        return torch.bfloat16
    return t.dtype


def to_storage(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` as stored (``dtype`` from ``storage_dtype``)."""
    return t.detach().cpu().to(dtype).contiguous()


def from_storage(t: torch.Tensor, source_dtype: torch.dtype) -> torch.Tensor:
    """A stored tensor back in its source's dtype."""
    return t if t.dtype == source_dtype else t.to(source_dtype)

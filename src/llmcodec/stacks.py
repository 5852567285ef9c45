"""Tensors of three or more dimensions as stacks of 2-D matrices, and back.

A fused mixture-of-experts tensor (E, R, C), a convolution kernel (O, I, kh, kw) or a key/value
cache (layers, heads, T, d) is coded as the matrices along its leading axes: every matrix is a
``(shape[-2], shape[-1])`` slice, so expert ``e`` of ``gate_up_proj`` is member ``e``. ``split``
and ``join`` are exact inverses; the artifact records a stack's shape and member names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def count(shape: Sequence[int]) -> int:
    """How many matrices a tensor of ``shape`` (at least 2-D) splits into."""
    if len(shape) < 2:
        raise ValueError(f"a stack needs at least 2 dimensions, got shape {tuple(shape)}")
    return math.prod(shape[:-2])


def member_names(name: str, shape: Sequence[int]) -> list[str]:
    """The names the stack's matrices are stored under: ``name[0]``, ``name[1]``, ..."""
    return [f"{name}[{i}]" for i in range(count(shape))]


def member(t: torch.Tensor, i: int) -> torch.Tensor:
    """Matrix ``i`` of a stack (a view, no copy)."""
    return t.reshape(-1, t.shape[-2], t.shape[-1])[i]


def split(t: torch.Tensor) -> list[torch.Tensor]:
    """An N-D tensor (N >= 2) as its ``count(t.shape)`` matrices, in order (views)."""
    count(t.shape)
    return list(t.reshape(-1, t.shape[-2], t.shape[-1]).unbind(0))


def join(parts: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """The tensor of ``shape`` whose matrices are ``parts`` (inverse of ``split``)."""
    n = count(shape)
    if len(parts) != n or any(tuple(p.shape) != tuple(shape[-2:]) for p in parts):
        got = [tuple(p.shape) for p in parts[:3]]
        raise ValueError(f"a stack of shape {tuple(shape)} needs {n} matrices of {tuple(shape[-2:])}, got "
                         f"{len(parts)} ({got}...)")
    return torch.stack(list(parts)).reshape(tuple(shape))

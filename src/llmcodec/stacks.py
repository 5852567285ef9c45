"""Tensors of three or more dimensions as matrices, and back: exact reshapes, no arithmetic.

Two ways, each with its exact inverse:

- members (``split`` / ``join``): the matrices along the leading axes, each coded as a matrix of its
  own. A fused mixture-of-experts tensor (E, R, C), a convolution kernel (O, I, kh, kw) or a key/value
  cache (layers, heads, T, d) becomes ``count(shape)`` ``(shape[-2], shape[-1])`` slices, so expert
  ``e`` of ``gate_up_proj`` is member ``e``; the artifact records a stack's shape and member names.
- one tall matrix (``to_matrix`` / ``from_matrix``, for ``compress_tensors``): the stack axis moved to
  the front and every axis but the last made rows.
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


# one tall matrix


def normalize_axis(shape: tuple[int, ...], axis: int, name: str = "tensor") -> int:
    """``axis`` as a non-negative index into ``shape`` (only tensors of 3 or more dimensions stack)."""
    nd = len(shape)
    if nd < 3:
        return 0
    if not -nd <= axis < nd:
        raise ValueError(f"{name!r} has {nd} dimensions {tuple(shape)}: stack axis {axis} is out of range")
    return axis % nd


def matrix_shape(shape: tuple[int, ...], axis: int = 0) -> tuple[int, ...]:
    """The 2-D shape ``to_matrix`` gives (1-D and 0-D shapes are returned as they are)."""
    if len(shape) < 2:
        return tuple(shape)
    if len(shape) == 2:
        return tuple(shape)
    rest = [d for k, d in enumerate(shape) if k != axis]
    rows = shape[axis]
    for d in rest[:-1]:
        rows *= d
    return (rows, rest[-1])


def to_matrix(t: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Stack of matrices along ``axis`` -> one 2-D matrix (rows: the stack, then each matrix's rows)."""
    if t.ndim <= 2:
        return t
    return t.movedim(axis, 0).reshape(matrix_shape(tuple(t.shape), axis)).contiguous()


def from_matrix(m: torch.Tensor, shape: tuple[int, ...], axis: int = 0) -> torch.Tensor:
    """The inverse of ``to_matrix``: the 2-D ``m`` back to ``shape``."""
    if len(shape) <= 2:
        return m.reshape(shape)
    moved = (shape[axis], *[d for k, d in enumerate(shape) if k != axis])
    return m.reshape(moved).movedim(0, axis).contiguous()

"""N-D tensors as stacks of 2-D matrices, and back (exact reshapes, no arithmetic).

A tensor of shape ``(d0, ..., dn)`` is coded as the matrices formed by its last two axes once
the stack axis is moved to the front; every axis but the last becomes rows. ``to_matrix`` and
``from_matrix`` are each other's inverse for every shape and axis.
"""

from __future__ import annotations

import torch


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

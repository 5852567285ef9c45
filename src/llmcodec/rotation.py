"""Randomized orthogonal rotations of a weight matrix, undone exactly (up to float rounding) on restore.

``W' = R_rows @ W @ R_cols.T`` spreads every large weight and every codec error over many
weights (the "incoherence" of QuIP/QuaRot, here data-free): outlier rows and columns stop setting
the quantization range, and whatever structure the codec's error has in the coded domain becomes
noise-like after the inverse rotation. Each factor is orthonormal, so the squared error of the
restored matrix equals the squared error of the coded one.

A dimension ``n = m * 2**k`` (``m`` odd) is rotated by ``(Q_m kron H_{2**k}) diag(signs)``: a
normalized Walsh-Hadamard transform (applied in ``O(n log n)``) combined with a small random
orthogonal ``Q_m``. Everything is drawn from ``seed`` so the artifact stores one integer.
"""

from __future__ import annotations

import numpy as np

MAX_ODD = 1024  # an odd factor above this (e.g. a prime vocabulary size) is rotated in blocks instead


def _factor(n: int) -> tuple[int, int]:
    """n = odd * 2**k -> (odd, 2**k)."""
    p = n & -n
    return n // p, p


def _fwht(x: np.ndarray) -> np.ndarray:
    """Normalized Walsh-Hadamard transform along the last axis (length a power of two), in place."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a = y[..., 0, :].copy()
        y[..., 0, :] += y[..., 1, :]
        y[..., 1, :] = a - y[..., 1, :]
        h *= 2
    x *= 1.0 / np.sqrt(n)
    return x


def _parts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Random signs (n,), the odd-size orthogonal factor (m, m) and the power-of-two size. The
    factor is None when ``m`` is too large for a dense one: each power-of-two block is then
    rotated on its own."""
    rng = np.random.default_rng([seed, n])
    signs = rng.choice(np.array([-1.0, 1.0]), size=n)
    m, p = _factor(n)
    if m > MAX_ODD:
        return signs, None, p
    q, r = np.linalg.qr(rng.standard_normal((m, m)))
    return signs, q * np.sign(np.diag(r))[None, :], p  # a uniformly random orthogonal matrix


def _apply(x: np.ndarray, seed: int, inverse: bool) -> np.ndarray:
    """Rotate the last axis of ``x`` (float64, modified and returned)."""
    n = x.shape[-1]
    signs, q, p = _parts(n, seed)
    lead = x.shape[:-1]
    m = n // p
    if not inverse:
        x *= signs
    if q is not None:
        # (Q kron H) v: view v as (m, p), apply H along p and Q along m
        y = _fwht(x.reshape(*lead, m, p))
        y = np.einsum("ij,...jp->...ip", q.T if inverse else q, y)
        x = np.ascontiguousarray(y).reshape(*lead, n)
    else:
        x = _fwht(x.reshape(*lead, m, p)).reshape(*lead, n)  # H is its own inverse
    if inverse:
        x *= signs
    return x


def rotate(w: np.ndarray, seed: int) -> np.ndarray:
    """``R_rows @ w @ R_cols.T`` in float64 (a new array)."""
    x = np.array(w, dtype=np.float64)
    x = _apply(x, seed, inverse=False)  # columns (last axis)
    x = _apply(np.ascontiguousarray(x.T), seed + 1, inverse=False).T
    return np.ascontiguousarray(x)


def unrotate(w: np.ndarray, seed: int) -> np.ndarray:
    """The exact inverse of :func:`rotate`, as float32."""
    x = np.array(w, dtype=np.float64)
    x = _apply(np.ascontiguousarray(x.T), seed + 1, inverse=True).T
    x = _apply(np.ascontiguousarray(x), seed, inverse=True)
    return x.astype(np.float32)

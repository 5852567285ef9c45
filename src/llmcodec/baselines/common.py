"""What every peer shares: the result type, the header field size, the matrix check, the Gaussian bound."""

from __future__ import annotations

from typing import Protocol

import numpy as np

Result = tuple[np.ndarray, int]  # (w_hat float32, total bits stored)

HEADER_BITS = 32  # one 32-bit field (a length, an alphabet offset, a step) in a small header


class MatrixQuantizer(Protocol):
    """A calibration-free quantizer of one 2-D float matrix."""

    @property
    def label(self) -> str: ...

    def __call__(self, w: np.ndarray) -> Result: ...


def check_matrix(w: np.ndarray) -> np.ndarray:
    """``w`` as a float32 matrix; a ValueError for an empty, non-2-D or non-finite one."""
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {w.shape}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise ValueError("matrix contains NaN or Inf")
    return w


def gaussian_rd_relative_error(bpw: float | np.ndarray) -> float | np.ndarray:
    """Distortion-rate bound of a memoryless Gaussian source: D(R) = sigma^2 2^(-2R), so the relative
    RMS error is 2^(-R). No real quantizer of Gaussian-like weights can do better at R bits/weight."""
    return np.power(2.0, -np.asarray(bpw, dtype=np.float64))

"""8-bit logarithmic codes for positive side information (per-row scales, per-column multipliers).

fp16 per row and per column cost SmolLM2-135M 0.069 bits per weight with offsets, more than a
tenth of the whole saving between 3 and 2.5 bits per weight. A scale only needs its ratio to the
others to within a per cent or so: a value on the grid ``2^(n / CODES_PER_OCTAVE)`` is stored as
the byte ``n - lo`` plus one integer ``lo`` per tensor. Snapping moves a value by at most 1.1%
(half a grid step), which adds about 0.004% of squared error to a least-squares scale (the error
grows with the square of the mis-scaling), and 256 codes span 8 octaves, far more than the rows
of a weight matrix spread.

Pure functions; values on the grid round-trip through ``to_codes``/``from_codes`` exactly.
"""

from __future__ import annotations

import numpy as np

CODES_PER_OCTAVE = 32
SPAN = 255  # codes 0..255
LO_BITS = 16  # the per-tensor integer ``lo`` is counted as 16 bits


def _exponents(x: np.ndarray, up: bool) -> np.ndarray:
    """Grid exponents of ``x``: nearest, or with ``up`` the first at or above (a value already on
    the grid, whose log is an integer up to float error, keeps its own)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not (np.isfinite(x).all() and (x > 0).all()):
        raise ValueError("log-coded side information must be positive and finite")
    e = CODES_PER_OCTAVE * np.log2(x)
    return np.ceil(e - 1e-4) if up else np.rint(e)  # float32 grid values are off by ~3e-6 here


def snap(x: np.ndarray, up: bool = False) -> np.ndarray:
    """``x`` moved to the nearest grid point (``up``: the next one at or above), float32, with every
    value within ``SPAN`` grid steps of the largest: smaller ones are raised to that floor, which
    for a quantizer scale only makes a row coarser, never out of range."""
    n = _exponents(x, up)
    n = np.maximum(n, n.max() - SPAN)
    return np.exp2(n / CODES_PER_OCTAVE).astype(np.float32)


def to_codes(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(uint8 codes, lo) of values already on the grid (``snap``); ValueError if they are not."""
    n = _exponents(x, False)
    lo = int(n.max()) - SPAN
    codes = np.clip(n - lo, 0, SPAN).astype(np.uint8)
    if not np.array_equal(from_codes(codes, lo), np.asarray(x, dtype=np.float32)):
        raise ValueError("side information is not on the 8-bit logarithmic grid (sideinfo.snap)")
    return codes, lo


def from_codes(codes: np.ndarray, lo: int) -> np.ndarray:
    """The float32 values of ``codes``."""
    return np.exp2((np.asarray(codes, dtype=np.float64) + lo) / CODES_PER_OCTAVE).astype(np.float32)


def bits(count: int) -> int:
    """Bits stored for ``count`` log-coded values: a byte each plus ``lo``."""
    return 8 * count + LO_BITS


def log_coded(values: np.ndarray) -> bool:
    """Whether multipliers are stored as log codes: fp16 ones are kept as fp16 (``--side fp16``),
    all others lie on the grid (``importance.column_scales(..., log8=True)``)."""
    return values.dtype != np.float16

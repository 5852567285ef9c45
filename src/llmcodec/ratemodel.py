"""The rate of a coefficient-domain stream, predicted without coding it.

In the coefficient domain (coefdomain.py) the codec quantizes the matrix's own coefficients, one
weight each, with the step of its QP, and codes the levels with an adaptive entropy coder. The
zero-order entropy of those levels, taken with a dead-zone quantizer (``step``, rounding offset
``dead_zone``) from a histogram of the coefficients' magnitudes, then follows the codec's rate
from tensor to tensor and QP to QP up to a factor common to all of them, which rate control
measures on the tensors it codes first. The histogram is taken once, when a matrix is scanned.

Pure functions on numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN = 0.25  # histogram bin width, in the units of the coefficients the codec quantizes
MAX_BINS = 1 << 17  # magnitudes beyond the last bin are counted in it


@dataclass(frozen=True)
class RateModel:
    """A codec's quantizer as the rate model sees it: the step at QP 0 in coefficient units, how
    many QP steps double it, the dead zone's rounding offset (0.5: round to nearest), and the
    codec's bits per bit of entropy (``scale``: its usual factor, which rate control corrects)."""

    step0: float
    qp_per_octave: float
    dead_zone: float
    scale: float = 1.0

    def step(self, qp: int) -> float:
        return self.step0 * 2.0 ** (qp / self.qp_per_octave)

    def bits(self, counts: np.ndarray, qp: int) -> float:
        """The predicted bitstream bits of the coefficients ``counts`` counts, coded at ``qp``."""
        return self.scale * entropy_bits(counts, self.step(qp), self.dead_zone)


def magnitude_counts(x: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Counts of ``|x|`` in bins of width ``BIN`` (the last bin takes everything beyond it), added
    to ``counts`` if given (which grows as needed)."""
    idx = np.abs(np.asarray(x, dtype=np.float64).ravel())
    idx *= 1.0 / BIN
    np.minimum(idx, MAX_BINS - 1, out=idx)
    new = np.bincount(idx.astype(np.intp))
    if counts is None:
        return new
    if len(new) > len(counts):
        new[: len(counts)] += counts
        return new
    counts = counts.copy()
    counts[: len(new)] += new
    return counts


def entropy_bits(counts: np.ndarray, step: float, dead_zone: float) -> float:
    """Bits to code every counted coefficient at ``step``: the zero-order entropy of the levels
    ``floor(|x| / step + dead_zone)`` (each bin at its centre) plus a sign bit per nonzero level."""
    if step <= 0:
        raise ValueError(f"the quantizer step must be positive, got {step}")
    counts = np.asarray(counts, dtype=np.float64)
    centres = (np.arange(len(counts)) + 0.5) * BIN
    levels = np.floor(centres / step + dead_zone).astype(np.intp)
    p = np.bincount(levels, weights=counts)
    n = float(p.sum())
    if n <= 0:
        return 0.0
    nz = p[p > 0]
    return float(n * np.log2(n) - np.sum(nz * np.log2(nz)) + (n - p[0]))

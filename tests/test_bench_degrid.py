"""benchmarks/experiments/degrid.py: moving Q4_1-gridded weights off their grid."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))

from degrid import degrid  # noqa: E402


def q4_1(w: np.ndarray) -> np.ndarray:
    """Round-trip through Q4_1: min/max affine to 16 levels per block of 32 along each row."""
    b = w.reshape(w.shape[0], -1, 32)
    lo, hi = b.min(axis=2, keepdims=True), b.max(axis=2, keepdims=True)
    d = (hi - lo) / 15
    return (np.rint((b - lo) / d) * d + lo).reshape(w.shape).astype(np.float32)


def test_each_weight_stays_in_the_interval_its_level_came_from_and_leaves_the_grid():
    rng = np.random.default_rng(0)
    w = q4_1(rng.standard_normal((8, 96)).astype(np.float32))
    out = degrid(w, np.random.default_rng(1))
    b, o = w.reshape(8, 3, 32).astype(np.float64), out.reshape(8, 3, 32).astype(np.float64)
    lo, hi = b.min(axis=2, keepdims=True), b.max(axis=2, keepdims=True)
    d = (hi - lo) / 15
    assert np.all(np.abs(o - b) <= d / 2 * (1 + 1e-5))
    assert np.all((o >= lo - 1e-6) & (o <= hi + 1e-6))  # the extremes move inwards only
    # off the grid: rounding again to the same grid gives the input back, but the values differ
    assert np.allclose(np.rint((o - lo) / d) * d + lo, b, atol=1e-6)
    assert len(np.unique(out[0, :32])) > 16
    # the draws spread over the whole interval: error about d / sqrt(12)
    assert np.sqrt(np.mean(((o - b) / d) ** 2)) == pytest.approx(12**-0.5, rel=0.15)


def test_a_matrix_off_any_4_bit_grid_is_refused():
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="not on a 4-bit grid"):
        degrid(w, np.random.default_rng(0), "m")
    with pytest.raises(ValueError, match="whole blocks"):
        degrid(w[:, :40], np.random.default_rng(0), "m")

"""The error-by-weight-size table of benchmarks/experiments/error_by_size.py."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))

from error_by_size import EDGES, error_by_size  # noqa: E402


def test_bins_weights_by_size_relative_to_their_row():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)) * np.array([[1.0], [10.0]] * 32)  # rows of different scale
    assert error_by_size(w, w) == pytest.approx([0.0] * (len(EDGES) - 1))
    # restoring zeros: each bin's error is the RMS size of its weights, which lies inside the bin
    zeros = error_by_size(w, np.zeros_like(w))
    for (lo, hi), e in zip(zip(EDGES[:-1], EDGES[1:], strict=True), zeros, strict=True):
        assert lo <= e <= hi
    # an error of 0.1 row RMS on the smallest weights only shows in the first bin
    rms = np.sqrt(np.mean(np.square(w), axis=1, keepdims=True))
    small = np.abs(w) / rms < EDGES[1]
    errs = error_by_size(w, np.where(small, w + 0.1 * rms, w))
    assert errs[0] == pytest.approx(0.1) and errs[1:] == pytest.approx([0.0] * (len(EDGES) - 2))

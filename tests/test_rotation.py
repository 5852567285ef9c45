"""Rotations are orthonormal and exactly undone."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcodec.rotation import rotate, unrotate


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), seed=st.integers(0, 2**32 - 2))
def test_rotation_is_orthonormal_and_inverted(rows, cols, seed):
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    r = rotate(w, seed)
    assert r.shape == w.shape
    assert np.linalg.norm(r) == pytest.approx(np.linalg.norm(w), rel=1e-6)
    np.testing.assert_allclose(unrotate(r, seed), w, atol=1e-5)
    # the seed matters; tiny power-of-two sides have only a few sign patterns (2x1: 8), which two
    # seeds can share, so check where collisions are negligible
    if rows + cols >= 24:
        assert not np.allclose(unrotate(r, seed + 7), w, atol=1e-3)


def test_rotation_spreads_an_outlier_and_handles_large_odd_factors():
    w = np.random.default_rng(0).standard_normal((192, 576)).astype(np.float32)
    w[5, 7] = 200.0
    r = rotate(w, 3)
    assert np.abs(r).max() < 0.1 * 200.0  # the outlier is shared among many weights
    odd = np.random.default_rng(1).standard_normal((4, 2 * 1031)).astype(np.float32)  # odd part above MAX_ODD
    np.testing.assert_allclose(unrotate(rotate(odd, 1), 1), odd, atol=1e-5)

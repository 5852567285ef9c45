"""Error feedback through the inverse Hessian (feedback.py): the update against brute-force least
squares, and with the codec in the loop against coding without feedback."""

from __future__ import annotations

import numpy as np
import pytest

from llmcodec import feedback as fb


def _layer(rows: int, cols: int, samples: int, seed: int = 0):
    """Weights and a Hessian of correlated inputs (a few strong directions, as in LLM activations)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((cols, cols)) * (rng.random(cols) ** 3)[None, :]
    x = rng.standard_normal((samples, cols)) @ mix + 0.1 * rng.standard_normal((samples, cols))
    return rng.standard_normal((rows, cols)), x.T @ x


def _damped(h: np.ndarray) -> np.ndarray:
    return h + fb.DAMP * np.mean(np.diag(h)) * np.eye(len(h))


def test_feedback_matches_brute_force_least_squares():
    """Each column is rounded after the columns not yet rounded were re-solved by least squares
    (given every column rounded so far); the blocked update must give the same result."""
    w, h = _layer(5, 12, 40)
    hd = _damped(h)
    step = 0.7
    got = fb.feedback(w, fb.inverse_factor(h), step, block=5)
    for i in range(w.shape[0]):
        v = w[i].copy()
        for j in range(w.shape[1]):
            v[j] = step * np.rint(v[j] / step)
            done, free = np.arange(j + 1), np.arange(j + 1, w.shape[1])
            if free.size:
                d = w[i, done] - v[done]
                v[free] = w[i, free] + np.linalg.solve(hd[np.ix_(free, free)], hd[np.ix_(free, done)] @ d)
        np.testing.assert_allclose(got[i], v, atol=1e-9)


def test_block_update_matches_brute_force():
    """Strips fixed all at once (as a codec fixes them): the later columns are the least-squares
    solution given every fixed column."""
    w, h = _layer(4, 10, 30, seed=1)
    hd = _damped(h)
    u = fb.inverse_factor(h)
    rng = np.random.default_rng(2)
    cur = w.copy()
    fixed = np.empty_like(w)
    for b0, b1 in ((0, 3), (3, 7)):
        fixed[:, b0:b1] = cur[:, b0:b1] + 0.3 * rng.standard_normal((4, b1 - b0))
        cur[:, b1:] = fb.block_update(cur[:, b1:], cur[:, b0:b1] - fixed[:, b0:b1], u, b0, b1)
        done, free = np.arange(b1), np.arange(b1, 10)
        want = w[:, free] + np.linalg.solve(hd[np.ix_(free, free)], hd[np.ix_(free, done)] @ (w[:, done] - fixed[:, done]).T).T
        np.testing.assert_allclose(cur[:, b1:], want, atol=1e-9)


def test_feedback_lowers_output_error_of_the_quantizer():
    w, h = _layer(32, 96, 400, seed=3)
    step = 0.5
    rtn = fb.round_to_step(w, step)
    gptq = fb.feedback(w, fb.inverse_factor(h), step)
    assert np.allclose(gptq, fb.round_to_step(gptq, step))  # on the lattice
    assert fb.output_error(w, gptq, h) < 0.8 * fb.output_error(w, rtn, h)


def test_dead_columns_and_bad_hessians():
    w, h = _layer(3, 6, 20)
    h[2, :] = h[:, 2] = 0.0
    u = fb.inverse_factor(h)
    assert np.all(np.isfinite(u)) and u[2, 3:].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="square"):
        fb.inverse_factor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        fb.inverse_factor(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="step"):
        fb.feedback(w, u, 0.0)

"""The high-rate step-shape penalty of benchmarks/experiments/spread.py."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))

from spread import penalty  # noqa: E402

from llmcodec.baselines import empirical_entropy_bits  # noqa: E402


def test_one_step_everywhere_costs_nothing_and_unequal_steps_cost_am_over_gm():
    ws = [np.ones((4, 8)), np.ones((4, 8))]
    assert penalty(ws, lambda w: np.ones((1, 1))) == pytest.approx(1.0)
    assert penalty(ws, lambda w: np.full((1, 1), float(w[0, 0]))) == pytest.approx(1.0)
    # steps 1 and 2 on equal halves: sqrt(mean(1, 4) / geomean(1, 4)) = sqrt(2.5 / 2)
    ws = [np.ones((4, 8)), 2 * np.ones((4, 8))]
    assert penalty(ws, lambda w: np.full((1, 1), float(w[0, 0]))) == pytest.approx(np.sqrt(1.25))


def test_the_prediction_matches_a_real_scalar_quantizer_at_high_rate():
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((200, 200)), 3 * rng.standard_normal((200, 200))]
    rms = [float(np.sqrt(np.mean(w**2))) for w in ws]

    def code(steps):  # (bits, squared error) of rounding each matrix to its step
        qs = [np.round(w / s) for w, s in zip(ws, steps, strict=True)]
        bits = sum(empirical_entropy_bits(q.astype(np.int64)) for q in qs)
        err = sum(float(np.square(q * s - w).sum()) for q, w, s in zip(qs, ws, steps, strict=True))
        return bits, err

    rel_bits, rel_err = code([0.05 * r for r in rms])  # steps proportional to each matrix's RMS
    lo, hi = 1e-3, 1.0  # the one shared step that spends the same bits
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if code([mid, mid])[0] > rel_bits else (lo, mid)
    _, shared_err = code([hi, hi])
    predicted = penalty(ws, lambda w: np.full((1, 1), float(np.sqrt(np.mean(w**2)))))
    assert predicted == pytest.approx(np.sqrt((1 + 9) / 2 / 3), rel=0.02)
    assert np.sqrt(rel_err / shared_err) == pytest.approx(predicted, rel=0.02)

"""The step-shape family of benchmarks/rd/tradeoff.py."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "rd"))

from common import global_rel_error  # noqa: E402
from tradeoff import Shape, quantize, row_steps  # noqa: E402


def _matrices():
    rng = np.random.default_rng(1)
    scales = np.array([[0.1], [1.0], [3.0], [0.5]] * 16)  # rows of different RMS
    return [rng.standard_normal((64, 96)) * scales, 4.0 * rng.standard_normal((32, 64))]


def test_row_steps_interpolate_between_row_rms_and_one_step():
    x = _matrices()[0]
    rms = np.sqrt(np.mean(np.square(x), axis=1, keepdims=True))
    assert row_steps(x, 1, 1) == pytest.approx(rms)
    assert row_steps(x, 0, 0) == pytest.approx(np.ones_like(rms))
    half = row_steps(x, 0.5, 1)
    assert half / half[0] == pytest.approx(np.sqrt(rms / rms[0]))


def test_quantize_meets_the_budget_and_one_step_has_the_least_error():
    ws = _matrices()
    errors = {}
    for shape in (Shape(0, 1, 1, side=False), Shape(0, 0, 0, side=False), Shape(0, 0, 1, side=False)):
        restored, bpw = quantize(ws, shape, 3.0)
        assert 2.99 <= bpw <= 3.0
        names = [str(i) for i in range(len(ws))]
        errors[shape.label] = global_rel_error(
            {n: torch.from_numpy(w) for n, w in zip(names, ws, strict=True)},
            {n: torch.from_numpy(r) for n, r in zip(names, restored, strict=True)}, names)
    # one step for every weight minimizes squared error at a given entropy (high-rate theory)
    assert errors["(0, 0, 0), no side info"] < min(errors["(0, 1, 1), no side info"], errors["(0, 0, 1), no side info"])
    # side information is paid from the same budget
    _, bpw = quantize(ws, Shape(1, 1, 1), 3.0)
    assert bpw <= 3.0

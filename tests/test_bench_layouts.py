"""benchmarks/experiments/layouts.py: each layout puts every weight in one block position and back."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))

from llmcodec.coefdomain import place  # noqa: E402


@pytest.mark.parametrize("layout", ["left-16", "left-20", "top-16", "scan-half"])
def test_layouts_round_trip_and_fill_only_their_positions(layout):
    import layouts

    pos = layouts.positions(layout)
    assert len(set(pos)) == len(pos) and all(0 <= y < 32 and 0 <= x < 32 for y, x in pos)
    w = np.random.default_rng(8).normal(size=(70, 90)).astype(np.float32)
    x = layouts.arrange(w, layout)
    mask = np.zeros((32, 32), bool)
    mask[tuple(zip(*pos, strict=True))] = True
    assert not x.reshape(-1, 32, x.shape[1] // 32, 32).transpose(0, 2, 1, 3)[..., ~mask].any()
    assert np.array_equal(layouts.restore(x, layout, w.shape), w)
    if layout == "left-16":  # what the library's -half profiles do
        assert np.array_equal(x, place(w, 32, 16)[:, : x.shape[1]])
    if layout == "scan-half":  # VVC's first 4x4 groups in scan order: (0,0), (1,0), (0,1), (2,0)
        assert pos[:3] == [(0, 0), (1, 0), (0, 1)] and pos[16] == (4, 0)


def test_gain_reads_bits_at_equal_error_off_the_full_curve():
    import layouts

    full = [(2.0, -2.0), (3.0, -3.0)]  # one bit halves the error
    assert np.isclose(layouts.gain(full, 2.5, -2.6), 0.1)
    assert np.isclose(layouts.gain(full, 3.5, -3.4), -0.1)  # extrapolated past the end

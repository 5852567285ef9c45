"""benchmarks/peers/gptq.py: GPTQ against brute-force least squares and round-to-nearest."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))

from gptq import GPTQSettings, gptq, grid, quantize_column, rtn, stored_bits  # noqa: E402


def _inputs(n: int, cols: int, seed: int) -> torch.Tensor:
    """Correlated inputs (as activations are): random mixing of independent columns."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g,
                                                                                 dtype=torch.float64)


def _obq_brute_force(w: torch.Tensor, x: torch.Tensor, bits: int) -> torch.Tensor:
    """Columns quantized left to right on each row's fixed grid; after each, the columns not yet
    quantized are re-solved by least squares so that X w is matched as well as possible."""
    scale, zero = grid(w, bits)
    q = torch.zeros_like(w)
    target = x @ w.T  # n x rows
    for r in range(w.shape[0]):
        cur = w[r].clone()
        for j in range(w.shape[1]):
            q[r, j] = quantize_column(cur[j : j + 1], scale[r : r + 1], zero[r : r + 1], bits)
            if j + 1 < w.shape[1]:
                rest = target[:, r] - x[:, : j + 1] @ q[r, : j + 1]
                cur[j + 1 :] = torch.linalg.lstsq(x[:, j + 1 :], rest[:, None]).solution[:, 0]
    return q


def test_matches_the_exact_obq_steps_on_a_tiny_layer():
    x = _inputs(64, 12, seed=1)
    w = torch.randn(5, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    h = 2 * x.T @ x / len(x)
    s = GPTQSettings(bits=3, group=None, damp=0.0)
    got = gptq(w, h, s).w_hat.double()
    want = _obq_brute_force(w, x, 3)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_output_error_no_worse_than_round_to_nearest(bits):
    x = _inputs(512, 256, seed=3).float()
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(4)) * 0.05
    h = 2 * x.T.double() @ x.double() / len(x)
    s = GPTQSettings(bits=bits, group=128, block=128)
    err_g = torch.linalg.norm(x @ (w - gptq(w, h, s).w_hat).T)
    err_r = torch.linalg.norm(x @ (w - rtn(w, s)).T)
    assert err_g < 0.8 * err_r  # well below, not only no worse


def test_lazy_batches_do_not_change_the_result():
    x = _inputs(256, 64, seed=5)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    h = 2 * x.T @ x / len(x)
    a = gptq(w, h, GPTQSettings(bits=3, group=16, block=16)).w_hat
    b = gptq(w, h, GPTQSettings(bits=3, group=16, block=64)).w_hat
    assert torch.allclose(a, b, atol=1e-6)


def test_each_value_is_on_its_group_grid_and_bits_are_counted():
    x = _inputs(128, 32, seed=7)
    w = torch.randn(4, 32, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    s = GPTQSettings(bits=2, group=16, block=16)
    res = gptq(w, 2 * x.T @ x / len(x), s)
    for c in (0, 16):
        for r in range(4):
            assert len(torch.unique(res.w_hat[r, c : c + 16])) <= 4
    assert res.bits == stored_bits((4, 32), s) == 4 * 32 * 2 + 4 * 2 * (16 + 2)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        gptq(torch.zeros(3, 4), torch.eye(5))

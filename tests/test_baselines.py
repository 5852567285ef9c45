"""Calibration-free peers: error falls with bits, side info counted, ECSQ hits its rate, coders round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from llmcodec import baselines as B
from llmcodec.quant import relative_error


@pytest.fixture(scope="module")
def w() -> np.ndarray:
    rng = np.random.default_rng(7)
    # Rows of different scale and a few outliers, like real weights.
    m = rng.standard_normal((96, 256)) * rng.uniform(0.3, 3.0, (96, 1))
    m[rng.integers(0, 96, 20), rng.integers(0, 256, 20)] *= 8
    return m.astype(np.float32)


def _errors(w, quantizers) -> list[float]:
    out = []
    for qz in quantizers:
        w_hat, bits = qz(w)
        assert w_hat.shape == w.shape and w_hat.dtype == np.float32
        out.append(relative_error(w, w_hat))
    return out


@pytest.mark.parametrize("group", [32, 64, 128, None])
def test_rtn_error_falls_with_bits_and_counts_side_info(w, group):
    errs = _errors(w, [B.RTN(b, group) for b in (2, 3, 4)])
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] < 0.7 and errs[2] < 0.2
    _, bits = B.RTN(3, group)(w)
    groups = w.shape[0] * (1 if group is None else -(-w.shape[1] // group))
    assert bits == 3 * w.size + 32 * groups


def test_hqq_error_falls_with_bits_and_beats_or_matches_rtn(w):
    errs = _errors(w, [B.HQQ(b, 64) for b in (2, 3, 4)])
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.15
    _, bits = B.HQQ(3, 64)(w)
    assert bits == 3 * w.size + 32 * (w.size // 64)  # fp16 scale + fp16 zero per group of 64
    # HQQ optimizes scale/zero against the error it makes: not worse than plain min/max RTN.
    assert relative_error(w, B.HQQ(2, 64)(w)[0]) <= 1.02 * relative_error(w, B.RTN(2, 64)(w)[0])


def test_hqq_rejects_indivisible_size():
    with pytest.raises(ValueError, match="multiple of the group size"):
        B.HQQ(4, 64)(np.ones((3, 10), dtype=np.float32))


@pytest.mark.parametrize("coder", ["range", "zstd"])
@pytest.mark.parametrize("scope", ["tensor", "row"])
def test_ecsq_hits_target_rate_and_error_falls(w, coder, scope):
    errs = []
    for bpw in (2.0, 3.0, 4.0):
        w_hat, bits = B.ECSQ(bpw, coder=coder, scope=scope)(w)
        assert 0.95 * bpw <= bits / w.size <= bpw
        errs.append(relative_error(w, w_hat))
        # Never better than the Shannon bound for a Gaussian (these rows are Gaussian-like).
        assert errs[-1] > B.gaussian_rd_relative_error(bits / w.size) * 0.9
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.1


@pytest.mark.parametrize("coder", ["range", "zstd"])
def test_entropy_coders_decode_to_the_same_integers(w, coder):
    sym = B.uniform_symbols(w, 0.05, "tensor")
    c = B.CODERS[coder]()
    coded = c.encode(sym.q)
    assert np.array_equal(c.decode(coded, sym.q.size), sym.q.ravel())
    # Bits cover the stream; the range coder lands within a few words of entropy + table.
    assert coded.bits >= 8 * len(coded.stream)
    assert coded.bits >= B.empirical_entropy_bits(sym.q)
    if coder == "range":
        assert coded.bits >= 8 * len(coded.stream) + coded.counts.size  # the model table is counted
        assert coded.bits <= c.estimate_bits(sym.q) + 64


def test_ecsq_bits_include_payload_and_table(w):
    qz = B.ECSQ(2.5)
    sym, coded = qz.code(w)
    alphabet = int(sym.q.max() - sym.q.min()) + 1
    assert coded.counts.size == alphabet
    assert coded.bits >= 8 * len(coded.stream) + alphabet
    assert sym.side_bits >= 32  # the step
    assert coded.bits + sym.side_bits == qz(w)[1]


def test_shared_step_meets_total_budget_and_spends_it_unevenly():
    rng = np.random.default_rng(3)
    ws = [(rng.standard_normal((64, 128)) * s).astype(np.float32) for s in (0.2, 1.0, 4.0)]
    res = B.ecsq_shared_step(ws, 3.0)
    n = sum(w.size for w in ws)
    assert 0.95 * 3.0 <= sum(b for _, b in res) / n <= 3.0
    per = [b / w.size for (_, b), w in zip(res, ws, strict=True)]
    assert per[0] < per[1] < per[2]  # one step: larger weights take more bits
    total_err = sum(float(((wh - w) ** 2).sum()) for (wh, _), w in zip(res, ws, strict=True))
    per_tensor = [B.ECSQ(3.0)(w)[0] for w in ws]
    assert total_err < sum(float(((wh - w) ** 2).sum()) for wh, w in zip(per_tensor, ws, strict=True))


def test_gaussian_bound():
    assert B.gaussian_rd_relative_error(0) == 1.0
    assert np.isclose(B.gaussian_rd_relative_error(3.0), 0.125)


def test_registry_and_bad_input():
    assert isinstance(B.make("rtn", bits=3, group=64), B.RTN)
    with pytest.raises(ValueError, match="unknown peer method"):
        B.make("gptq")
    with pytest.raises(ValueError, match="unknown entropy coder"):
        B.ECSQ(2.0, coder="lz4")
    with pytest.raises(ValueError, match="2-D"):
        B.RTN(4)(np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        B.ECSQ(2.0)(np.full((4, 4), np.nan, dtype=np.float32))

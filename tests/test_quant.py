import numpy as np
import pytest
import torch

from llmcodec.quant import QuantSpec, dequantize, quantize, relative_error, rtn


@pytest.mark.parametrize("bits,group", [(10, None), (8, None), (4, 32), (3, 128), (2, 64), (10, 100)])
def test_error_within_half_step(bits, group):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((64, 300)) * 0.05).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=bits, group=group))
    assert qz.q.max() <= (1 << bits) - 1
    w_hat = dequantize(qz)
    cols = w.shape[1]
    step = np.repeat(qz.scale.astype(np.float32), group or cols, axis=1)[:, :cols]
    # half a step, plus float32 arithmetic slack
    assert np.all(np.abs(w - w_hat) <= 0.5 * step * (1 + 1e-3) + 1e-7)


def test_side_info_is_fp16_and_counted():
    w = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=4, group=128))
    assert qz.scale.dtype == np.float16 and qz.offset.dtype == np.float16
    assert qz.scale.shape == (16, 2)
    _, bpw = rtn(w, 4, 128)
    assert bpw == pytest.approx(4 + 32 / 128)


def test_constant_rows_restore_exactly():
    w = np.full((8, 64), 0.25, dtype=np.float32)
    w[3] = -1.5
    qz = quantize(w, QuantSpec(bits=10))
    assert np.array_equal(dequantize(qz), w)


def test_bf16_input_round_trips():
    t = torch.randn(32, 64, dtype=torch.bfloat16)
    w = t.to(torch.float32).numpy()
    w_hat = dequantize(quantize(w, QuantSpec(bits=12)))
    back = torch.from_numpy(w_hat).to(torch.bfloat16)
    # 12-bit steps are far finer than bf16's 8-bit mantissa for these values: nearly all exact.
    assert (back == t).float().mean() > 0.9
    assert relative_error(w, w_hat) < 1e-3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(bad):
    w = np.zeros((4, 4), np.float32)
    w[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize(w, QuantSpec())


def test_bad_shapes_refused():
    with pytest.raises(ValueError, match="2-D"):
        quantize(np.zeros(5, np.float32), QuantSpec())
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(bits=0)


def test_shared_scale_gives_equal_steps_and_keeps_the_bound():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((32, 100)) * rng.uniform(0.1, 2.0, (32, 1))).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=8, shared_scale=True))
    assert np.unique(qz.scale).size == 1
    assert qz.q.max() <= 255
    assert np.all(np.abs(w - dequantize(qz)) <= 0.5 * float(qz.scale[0, 0]) * (1 + 1e-3) + 1e-7)
    # the widest row uses the whole range; narrower rows use less of it
    ranges = qz.q.max(axis=1).astype(int) - qz.q.min(axis=1)
    assert ranges.max() >= 254 and ranges.min() < 200


@pytest.mark.parametrize("spec", [QuantSpec(bits=10), QuantSpec(bits=10, group=64), QuantSpec(bits=10, block=32)])
def test_refit_lowers_the_error_of_a_lossy_decode(spec):
    from llmcodec.quant import refit

    rng = np.random.default_rng(7)
    w = (rng.laplace(size=(96, 200)) * rng.uniform(0.01, 0.1, (96, 1))).astype(np.float32)
    qz = quantize(w, spec)
    # a decode that zeroes small values and moves the rest, as a coarse codec does
    q = qz.q.astype(np.float64) - 512 if spec.block else qz.q.astype(np.float64)
    noisy = np.rint(q + rng.normal(0, 25, q.shape))
    if spec.block:
        noisy = np.where(np.abs(noisy) < 20, 0, noisy) + 512
    q_hat = np.clip(noisy, 0, 1023).astype(np.uint16)
    before = relative_error(w, dequantize(qz, q_hat))
    fitted = refit(qz, q_hat, w)
    assert fitted.scale.shape == qz.scale.shape and fitted.scale.dtype == np.float16
    # least squares on the decoded values: lower error, clearly so where a dead zone shrank them
    assert relative_error(w, dequantize(fitted, q_hat)) < (0.97 if spec.block else 0.999) * before
    # on the exact integers it changes next to nothing
    assert relative_error(w, dequantize(refit(qz, qz.q, w))) <= relative_error(w, dequantize(qz)) * 1.01 + 1e-4


def _dead_zone_codec(qz, step, dz):
    """What a transform codec with a dead-zone quantizer would decode: coefficients rounded with
    ``floor(|x| / step + 0.5 - dz)``, back to integer samples."""
    from llmcodec.coefdomain import block_dct, block_idct

    mid = 1 << (qz.spec.bits - 1)
    u = block_dct(qz.q.astype(np.float64) - mid, qz.spec.block)
    lv = np.sign(u) * np.floor(np.abs(u) / step + 0.5 - dz)
    return np.clip(np.rint(block_idct(lv * step, qz.spec.block)) + mid, 0, qz.spec.levels).astype(np.uint16)


def test_reconstruction_table_undoes_a_dead_zone():
    from dataclasses import replace

    from llmcodec.quant import apply_recon, fit_recon

    rng = np.random.default_rng(7)
    w = (rng.laplace(size=(96, 160)) * 0.02).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=10, block=32))
    q_hat = _dead_zone_codec(qz, step=40.0, dz=0.2)
    rc = fit_recon(qz, q_hat, w)
    assert rc is not None and rc.step == pytest.approx(40.0, rel=1e-3)
    assert rc.offsets[0] > 0.05  # weights that reach level 1 sit above it on average
    plain = relative_error(w, dequantize(qz, q_hat))
    fixed = relative_error(w, dequantize(replace(qz, recon=rc), q_hat))
    assert fixed < 0.97 * plain
    # level 0 and values off the table stay; a level moves by its offset
    d = rc.step
    out = apply_recon(np.array([0.0, d, -2 * d, 30 * d]), rc)
    assert out[0] == 0 and out[1] == pytest.approx(d * (1 + rc.offsets[0])) and out[3] == 30 * d
    assert out[2] == pytest.approx(-d * (2 + rc.offsets[1]))


def test_reconstruction_table_needs_a_lattice():
    from llmcodec.quant import fit_recon

    rng = np.random.default_rng(8)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=10, block=32))
    noisy = np.clip(qz.q.astype(np.int64) + rng.integers(-40, 41, qz.q.shape), 0, 1023).astype(np.uint16)
    assert fit_recon(qz, noisy, w) is None  # no lattice: no table
    assert fit_recon(quantize(w, QuantSpec(bits=10)), qz.q[:64, :64], w) is None  # sample domain: none


def test_reconstruction_table_survives_a_step_far_below_the_values():
    """A corrupt file's tiny step makes levels past int64; they must stay past the table, not wrap."""
    from llmcodec.quant import Recon, apply_recon

    u = np.array([[1e3, -2e4, 0.0]])
    out = apply_recon(u, Recon(step=1e-22, offsets=(0.25, -0.25)))
    np.testing.assert_allclose(out, u)


@pytest.mark.parametrize("group,compact,cols", [(None, True, 16), (64, False, None)])
def test_known_side_information_and_whole_units_give_the_same_results(group, compact, cols):
    """Quantizing again with a scan's scale and offset, and the table, refit and dequantization from
    one whole-matrix transform, give exactly what the band-by-band passes give."""
    from dataclasses import replace

    from llmcodec.quant import fit_recon, raw_units, refit, side_of, unit_values

    rng = np.random.default_rng(11)
    w = (rng.laplace(size=(200, 160)) * 0.02).astype(np.float32)
    spec = QuantSpec(bits=10, group=group, block=32, compact=compact, block_cols=cols)
    qz = quantize(w, spec)
    again = quantize(w, spec, known=side_of(qz))
    assert np.array_equal(again.q, qz.q) and np.array_equal(again.scale, qz.scale)
    with pytest.raises(ValueError, match="side information"):
        quantize(w[:100], spec, known=side_of(qz))
    q_hat = _dead_zone_codec(qz, step=40.0, dz=0.2)
    units = raw_units(qz, q_hat)
    rc, rc_units = fit_recon(qz, q_hat, w), fit_recon(qz, q_hat, w, units)
    assert rc is not None and rc == rc_units
    qr = replace(qz, recon=rc)
    values = unit_values(qr, units)
    a, b = refit(qr, q_hat, w), refit(qr, q_hat, w, values)
    assert np.array_equal(a.scale, b.scale) and np.array_equal(a.offset, b.offset)
    assert np.array_equal(dequantize(a, q_hat), dequantize(a, q_hat, values))


def test_side_without_levels_is_what_quantizing_chooses():
    """``levels=False`` gives the scale and offset a full quantization chooses, without the levels."""
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((96, 80)) + 0.3).astype(np.float32)
    spec = QuantSpec(block=32, block_cols=16, compact=True)
    steps = np.linspace(0.5, 2.0, 96)
    full, side = quantize(w, spec, row_step=steps), quantize(w, spec, row_step=steps, levels=False)
    assert np.array_equal(full.scale, side.scale) and np.array_equal(full.offset, side.offset)
    assert side.q.size == 0 and side.shape == w.shape and side.side_bits == full.side_bits
    with pytest.raises(ValueError, match="coefficient domain"):
        quantize(w, QuantSpec(), levels=False)

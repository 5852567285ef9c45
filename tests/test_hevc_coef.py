"""HEVC in the coefficient domain: x265 and kvazaar, forced to one 32x32 DCT per block, give back
each weight's own quantized level, as VVC's coefficient-domain profiles do (test_coefdomain.py)."""

import numpy as np
import pytest

from llmcodec.codecs.registry import get_codec
from llmcodec.coder import decode_matrix, decode_tensor, encode_prepared, prepare
from llmcodec.compress import CompressSettings, compress_matrices
from llmcodec.quant import _lattice_step, _normalized, _raw_units, relative_error


def _decoded_levels(codec_name: str, profile_name: str, qp: int, seed: int = 0):
    """Decoded coefficients and the true ones (the weights over their scale), in units of the
    lattice step found in the decoded coefficients, for a Gaussian 256x256 matrix."""
    codec = get_codec(codec_name)
    profile = codec.profile(profile_name)
    w = np.random.default_rng(seed).standard_normal((256, 256)).astype(np.float32)
    p = prepare("w", w, codec, profile, None, compact=True)
    q = decode_matrix(encode_prepared(p, codec, profile, qp), p.layout, codec, profile, p.quantized.spec.block)
    u = _raw_units(p.quantized, q, 0, w.shape[0])
    step = _lattice_step(np.abs(u).ravel())
    assert step is not None, f"{codec_name}:{profile_name} at QP {qp}: no lattice in the decoded coefficients"
    true = _normalized(w, p.quantized, p.quantized.scale.astype(np.float64), 0, w.shape[0])
    return u / step, true / step


@pytest.mark.parametrize(("codec", "qp"), [("x265", 22), ("x265", 32), ("kvazaar", 22), ("kvazaar", 32)])
def test_decoded_transform_gives_back_each_weights_level(codec, qp):
    """Every block's decoded coefficients lie on the quantizer's lattice, and each is within a step of
    its own weight: the codec quantized the weights themselves (RDOQ may round down by more than half a
    step, never by a whole one)."""
    got, true = _decoded_levels(codec, "default", qp)
    frac = got - np.rint(got)
    per_block = np.sqrt(np.square(frac).reshape(8, 32, 8, 32).mean(axis=(1, 3)))
    assert (per_block < 0.1).all()
    err = np.rint(got) - true
    assert np.abs(err).max() < 1.0
    assert 0.25 < np.sqrt(np.mean(np.square(err))) < 0.4  # about rounding's 0.29, not more


@pytest.mark.parametrize("codec", ["x265", "kvazaar"])
def test_coefficient_domain_error_is_per_weight_sample_domain_is_not(codec):
    """Same matrix, about the same rate: the coefficient domain's error is flat and light-tailed like
    rounding's (kurtosis near 1.8), the sample domain's spread over each block is Gaussian-like (3)."""
    w = np.random.default_rng(4).laplace(size=(192, 256)).astype(np.float32)
    c = get_codec(codec)
    kurt = {}
    for prof in ("default", "ai-medium"):
        (ct,) = compress_matrices([("w", w, "float32")], CompressSettings(codec=codec, qp=26, profile=prof))
        e = (decode_tensor(ct, c, c.profile(prof)) - w).astype(np.float64)
        kurt[prof] = float((e**4).mean() / (e**2).mean() ** 2)
        assert np.isclose(relative_error(w, w + e), ct.rel_error, rtol=1e-5)
    assert kurt["default"] < 2.6 < 2.8 < kurt["ai-medium"], kurt


@pytest.mark.parametrize("codec", ["x265", "kvazaar"])
def test_hevc_defaults_code_coefficients_and_lossless_takes_the_sample_domain(codec):
    c = get_codec(codec)
    assert c.profile(None).coef_block == 32 and c.profile_for(None, 2.5).coef_block == 32
    s = CompressSettings(codec=codec, lossless=True)
    assert s.codec_profile()[1].coef_block is None
    w = np.random.default_rng(1).standard_normal((64, 96)).astype(np.float32)
    (ct,) = compress_matrices([("w", w, "float32")], s)
    assert ct.qp is None and ct.spec.block is None


def test_hevc_rate_control_lands_on_the_budget_with_a_reconstruction_table():
    rng = np.random.default_rng(2)
    mats = [(f"m{i}", (rng.standard_normal((128, 192)) * rng.uniform(0.5, 2)).astype(np.float32), "float32")
            for i in range(8)]
    cts = compress_matrices(mats, CompressSettings(codec="x265", bpw=3.0))
    bpw = sum(ct.bits for ct in cts) / sum(ct.numel for ct in cts)
    assert 3.0 * 0.985 <= bpw <= 3.0
    assert all(ct.recon is not None and ct.spec.block == 32 for ct in cts)

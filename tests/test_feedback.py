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
        d = (w[:, done] - fixed[:, done]).T
        want = w[:, free] + np.linalg.solve(hd[np.ix_(free, free)], hd[np.ix_(free, done)] @ d).T
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


def test_feedback_with_a_step_per_row_is_feedback_on_scaled_rows():
    w, h = _layer(6, 20, 50, seed=6)
    s = np.linspace(0.5, 2.0, 6)[:, None]
    f = fb.inverse_factor(h)
    np.testing.assert_allclose(fb.feedback(w, f, 0.3 * s), s * fb.feedback(w / s, f, 0.3), atol=1e-12)


def test_vvc_coef_step_is_the_codecs_lattice():
    from llmcodec.codecs import get_codec
    from llmcodec.coder import decode_matrix, prepare
    from llmcodec.quant import _lattice_step, _raw_units

    codec = get_codec("vvc")
    profile = codec.profile("default")
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    p = prepare("w", w, codec, profile, None, compact=True)
    for qp in (23, 30):
        q = decode_matrix(codec.encode(p.frames, qp, profile), p.layout, codec, profile, profile.coef_block)
        step = _lattice_step(np.abs(_raw_units(p.quantized, q, 0, 64)).ravel())
        assert step == pytest.approx(fb.vvc_coef_step(qp), rel=0.01)


def _coded(w, qp, c, factor):
    from llmcodec.coder import decode_tensor
    from llmcodec.jobs import JobSpec, encode_job, finish_job

    spec = JobSpec("vvc", fb.FEEDBACK_PROFILE, None, 0.125)
    stream = encode_job(spec, "w", w, qp, False, c, factor)
    ct = finish_job(spec, "w", w, "float32", qp, stream, c)
    codec, profile = spec.resolve()
    return decode_tensor(ct, codec, profile), 8 * len(stream)


def test_codec_in_the_loop_lowers_held_out_output_error_at_equal_qp():
    from llmcodec.importance import balance_importance, column_scales

    rng = np.random.default_rng(4)
    rows, cols = 64, 384
    mix = rng.standard_normal((24, cols))  # inputs near a low-dimensional subspace, as in LLM layers

    def hessian(n):
        x = rng.standard_normal((n, 24)) @ mix + 0.3 * rng.standard_normal((n, cols))
        return x.T @ x

    h_fit, h_eval = hessian(3000), hessian(3000)
    w = (0.05 * rng.standard_normal((rows, cols))).astype(np.float32)
    c = column_scales(balance_importance(w))
    factor = fb.inverse_factor(fb.column_hessian(h_fit, c)).astype(np.float32)
    plain, bits = _coded(w, 30, c, None)
    fed, bits_fb = _coded(w, 30, c, factor)
    assert fb.output_error(w, fed, h_eval) < 0.8 * fb.output_error(w, plain, h_eval)
    assert bits_fb < 1.15 * bits  # about the same rate at that QP


def test_error_feedback_is_optional_and_data_aware(tiny_llama):
    from llmcodec.api import compress_source
    from llmcodec.cli import build_parser, settings_from_args
    from llmcodec.compress import CompressSettings, compress_matrices
    from llmcodec.modelio import load

    assert CompressSettings().error_feedback is False
    with pytest.raises(ValueError, match="calibration text"):
        CompressSettings(error_feedback=True)
    args = build_parser().parse_args(["compress", "m", "o.llmc", "--calibration", "ptb-train", "--error-feedback"])
    assert settings_from_args(args).error_feedback
    w = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError, match="only with error feedback"):
        compress_matrices([("w", w, "float32")], CompressSettings(qp=30), factors=[np.eye(64)])
    s = CompressSettings(calibration="ptb-train", calibration_tokens=512, qp=30, error_feedback=True)
    art = compress_source(load(tiny_llama), s)
    assert art.settings["error_feedback"] is True and s.codec_profile()[1].name == fb.FEEDBACK_PROFILE
    plain = compress_source(load(tiny_llama), CompressSettings(
        calibration="ptb-train", calibration_tokens=512, qp=30, profile=fb.FEEDBACK_PROFILE))
    linear = [n for n in art.coded if n.endswith("_proj.weight")]
    assert all(art.coded[n].bitstream != plain.coded[n].bitstream for n in linear)
    emb = [n for n in art.coded if "embed" in n]  # no Hessian for a lookup table: coded as without
    assert emb and all(art.coded[n].bitstream == plain.coded[n].bitstream for n in emb)
    with pytest.raises(ValueError, match="sign-bit"):
        compress_matrices([("w", w, "float32")], CompressSettings(qp=30, calibration="x", error_feedback=True,
                                                                  profile="default"),
                          loss_weights=[1.0], factors=[np.eye(64)])

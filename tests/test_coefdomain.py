"""Coefficient-domain coding: the block DCT pair, the quantizer's map, layouts of whole blocks, and
what the VVC profile that forces one 32x32 transform does with it."""

import numpy as np
import pytest

from llmcodec.coefdomain import (
    block_dct,
    block_idct,
    core_matrix,
    gather,
    padded_shape,
    place,
    placed_idct,
    spread,
    take,
    taken_dct,
)
from llmcodec.frames import from_frames, plan_layout, to_frames
from llmcodec.quant import COEF_HEADROOM, QuantSpec, dequantize, quantize, relative_error


def test_core_matrix_is_the_codecs_integer_dct():
    a = core_matrix(32) * 64 * np.sqrt(32)
    assert np.array_equal(a[0], np.full(32, 64.0))
    assert list(a[1, :4]) == [90, 90, 88, 85] and list(a[2, :4]) == [90, 87, 80, 70]
    assert list(a[31, :4]) == [4, -13, 22, -31]
    assert np.array_equal(core_matrix(8) * 64 * np.sqrt(8), a[::4, :8])  # the sizes nest
    k, i = np.arange(32)[:, None], np.arange(32)[None, :]
    ortho = np.sqrt(2 / 32) * np.cos(np.pi * (2 * i + 1) * k / 64)
    ortho[0] /= np.sqrt(2)
    assert np.abs(core_matrix(32) - ortho).max() < 0.01
    with pytest.raises(ValueError, match="sizes 4, 8, 16 and 32"):
        core_matrix(64)


def test_block_maps_match_the_codecs_transforms_block_by_block():
    rng = np.random.default_rng(1)
    a = core_matrix(32)
    x = rng.normal(size=(64, 96))
    y = block_idct(x, 32)
    # the codec's forward transform A y A^T of each block gives x back
    blk = y[32:64, 64:96]
    assert np.allclose(a @ blk @ a.T, x[32:64, 64:96], atol=1e-9)
    # and its inverse transform A^T l A of levels l is undone by block_dct
    lv = rng.integers(-5, 6, size=(32, 32)).astype(float)
    assert np.allclose(block_dct(a.T @ lv @ a, 32), lv, atol=1e-9)
    # changing one coefficient changes only the samples of its own block
    x2 = x.copy()
    x2[40, 70] += 5.0
    diff = np.abs(block_idct(x2, 32) - y) > 1e-12
    assert diff[32:64, 64:96].all() and not diff[:32].any() and not diff[:, :64].any()
    with pytest.raises(ValueError, match="whole 32x32 blocks"):
        block_dct(np.zeros((40, 64)), 32)
    assert padded_shape(100, 70, 32) == (128, 96)


def test_checkerboard_round_trip():
    q = np.arange(64 * 96, dtype=np.uint16).reshape(64, 96)
    s = spread(q, 32, 512)
    assert s.shape == (128, 192) and np.array_equal(gather(s, 32), q)
    assert (s[32:64] == 512).all() and (s[:, 32:64] == 512).all() and np.array_equal(s[:32, :32], q[:32, :32])


@pytest.mark.parametrize("shape", [(64, 64), (100, 70), (576, 1536), (33, 40)])
def test_coefficient_quantizer_map_is_nearly_exact_and_fills_the_range(shape):
    rng = np.random.default_rng(2)
    w = (rng.laplace(size=shape) * rng.uniform(0.01, 0.1, (shape[0], 1)) + 0.003).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=10, block=32))
    assert qz.q.shape == padded_shape(*shape, 32) and qz.shape == shape
    assert qz.scale.shape == qz.offset.shape == (shape[0], 1)
    # the only loss without a codec is rounding the samples to integers
    assert relative_error(w, dequantize(qz)) < 0.02
    dev = np.abs(qz.q.astype(np.int64) - 512).max()
    assert 0.6 * 512 < dev <= COEF_HEADROOM * 512 + 1


def test_coefficient_quantizer_groups():
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(64, 200)) * np.repeat(rng.uniform(0.01, 1.0, (64, 4)), 64, axis=1)[:, :200]).astype(
        np.float32
    )
    qz = quantize(w, QuantSpec(bits=10, group=64, block=32))
    assert qz.scale.shape == (64, 4) and relative_error(w, dequantize(qz)) < 0.02


def test_coefficient_quantizer_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        QuantSpec(bits=10, block=1)
    w = np.ones((64, 64), np.float32)
    w[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize(w, QuantSpec(bits=10, block=32))
    zero = quantize(np.zeros((40, 40), np.float32), QuantSpec(bits=10, block=32))
    assert np.array_equal(dequantize(zero), np.zeros((40, 40), np.float32))


def test_layout_tiles_are_whole_blocks():
    lay = plan_layout(4352 + 64, 8192 + 32, max_w=8192, max_h=4352, tile=32)
    assert lay.tile_h % 32 == 0 and lay.tile_w % 32 == 0
    assert lay.tiles_y * lay.tile_h >= lay.rows > (lay.tiles_y - 1) * lay.tile_h
    assert lay.tiles_x * lay.tile_w >= lay.cols > (lay.tiles_x - 1) * lay.tile_w
    q = np.random.default_rng(3).integers(0, 1024, (lay.rows, lay.cols), dtype=np.uint16)
    assert np.array_equal(from_frames(to_frames(q, lay), lay), q)
    with pytest.raises(ValueError, match="luma"):
        plan_layout(64, 64, packing="yuv420", tile=32)


def test_vvc_codes_each_weight_in_the_coefficient_domain():
    """Same QP, same matrix: the coefficient-domain profile's error is bounded per weight (a flat,
    light-tailed distribution like rounding's), the sample-domain profile's is Gaussian-like."""
    from llmcodec.compress import CompressSettings, compress_matrices

    w = np.random.default_rng(4).laplace(size=(192, 256)).astype(np.float32)
    kurt = {}
    for prof in ("ai-faster-coef", "ai-faster-dq"):
        (ct,) = compress_matrices([("w", w, "float32")], CompressSettings(qp=30, profile=prof, compand=1.0))
        from llmcodec.codecs.registry import get_codec
        from llmcodec.coder import decode_tensor

        codec = get_codec("vvc")
        e = (decode_tensor(ct, codec, codec.profile(prof)) - w).astype(np.float64)
        kurt[prof] = float((e**4).mean() / (e**2).mean() ** 2)
        assert np.isclose(relative_error(w, w + e), ct.rel_error, rtol=1e-5)
    assert kurt["ai-faster-coef"] < 2.8 < 3.0 < kurt["ai-faster-dq"] + 0.3


def test_lossless_refuses_a_coefficient_domain_profile():
    from llmcodec.compress import CompressSettings, compress_matrices

    with pytest.raises(ValueError, match="cannot be lossless"):
        compress_matrices([("w", np.ones((64, 64), np.float32), "float32")],
                          CompressSettings(codec="vvc", profile="ai-faster-coef", lossless=True))


def test_half_filled_blocks_place_weights_in_the_left_columns_only():
    x = np.random.default_rng(6).normal(size=(70, 50))
    y = place(x, 32, 16)
    assert y.shape == padded_shape(70, 50, 32, 16) == (96, 128)
    assert (y.reshape(96, 4, 32)[:, :, 16:] == 0).all()
    assert np.array_equal(y[:32, :16], x[:32, :16]) and np.array_equal(y[:32, 32:48], x[:32, 16:32])
    assert np.array_equal(take(y, 32, 16, 70, 50), x)
    assert np.array_equal(take(place(x, 32), 32, None, 70, 50), x)  # full blocks: plain padding
    w = (x * 0.02).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=10, block=32, block_cols=16))
    assert qz.q.shape == (96, 128) and relative_error(w, dequantize(qz)) < 0.02
    # the codec's transform of the samples is zero in each block's unused columns, up to the
    # rounding of the samples to integers (RMS about 0.3)
    u = block_dct(qz.q.astype(np.float64) - 512, 32).reshape(96, 4, 32)
    assert np.sqrt(np.mean(np.square(u[:, :, 16:]))) < 0.5 and np.abs(u[:, :, :16]).max() > 100
    # the same step as full blocks (the allocation between matrices must not depend on the layout),
    # with the peak inside the wider headroom
    for compact in (False, True):
        full = quantize(w, QuantSpec(bits=10, block=32, compact=compact))
        half = quantize(w, QuantSpec(bits=10, block=32, compact=compact, block_cols=16))
        assert np.array_equal(full.scale, half.scale)
        assert np.abs(half.q.astype(np.int64) - 512).max() <= 0.9 * 512 + 1
    for bad in (dict(block=32, block_cols=33), dict(block_cols=16), dict(block=32, block_cols=0)):
        with pytest.raises(ValueError, match="block_cols"):
            QuantSpec(bits=10, **bad)


def test_half_filled_blocks_code_weights_in_fewer_bits_at_high_rate(tmp_path):
    """VVC's context-coded bin budget is per transform block: half-empty blocks give each weight twice
    as much, which at 3-4 bits per weight is fewer bits for the same error (coefdomain.place). The
    half profile's artifact restores through save and load exactly as decoded."""
    import torch

    import llmcodec
    from llmcodec.compress import CompressSettings, compress_matrices

    w = np.random.default_rng(7).normal(size=(256, 512)).astype(np.float32)
    score = {}
    for prof in ("ai-faster-coef-dq", "ai-faster-coef-dq-half"):
        (ct,) = compress_matrices([("w", w, "float32")], CompressSettings(qp=22, profile=prof))
        rate = 8 * len(ct.bitstream) / w.size
        score[prof] = rate + np.log2(ct.rel_error)  # bits at equal error, 1 bit per halving
        assert 3.0 < rate < 5.0
    assert score["ai-faster-coef-dq-half"] < score["ai-faster-coef-dq"] - 0.02, score
    s = CompressSettings(qp=22, profile="ai-faster-coef-dq-half")
    art = llmcodec.compress_state_dict({"w": torch.from_numpy(w)}, s)
    llmcodec.save(art, tmp_path / "m.llmc")
    back = llmcodec.load_state_dict(tmp_path / "m.llmc")["w"].numpy()
    ct = art.coded["w"]
    assert ct.spec.block_cols == 16 and np.isclose(relative_error(w, back), ct.rel_error, rtol=1e-4)


def _off_lattice_blocks(profile_name: str) -> float:
    """Share of 32x32 blocks whose decoded coefficients are not on the quantizer's lattice, for a
    Gaussian matrix at QP 26 (libvvenc's intra block copy predicted 4.7% of its blocks from other
    blocks with the medium preset, which moves their coefficients off the lattice)."""
    from llmcodec.codecs.registry import get_codec
    from llmcodec.coder import decode_matrix, encode_prepared, prepare
    from llmcodec.quant import _lattice_step, _raw_units

    codec = get_codec("vvc")
    profile = codec.profile(profile_name)
    w = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    p = prepare("w", w, codec, profile, None, compact=True)
    q = decode_matrix(encode_prepared(p, codec, profile, 26), p.layout, codec, profile, p.quantized.spec.block)
    u = _raw_units(p.quantized, q, 0, w.shape[0])
    step = _lattice_step(np.abs(u).ravel())
    assert step is not None
    frac = u / step - np.rint(u / step)
    per_block = np.sqrt(np.square(frac).reshape(8, 32, 8, 32).mean(axis=(1, 3)))
    return float((per_block > 0.1).mean())


@pytest.mark.parametrize(
    "profile", ["default", "ai-faster-coef-dq", "ai-medium-coef-dq-noibc", "ai-medium-coef-rdoq-noibc"]
)
def test_profiles_without_block_copy_keep_every_block_on_the_lattice(profile):
    """The coefficient domain's premise: every block's decoded coefficients are the weights' own
    quantized levels (sample rounding aside), so each weight's error is its own rounding error."""
    assert _off_lattice_blocks(profile) == 0.0


def test_intra_block_copy_breaks_the_lattice():
    """Why the -noibc profiles exist: with libvvenc's medium preset as is, some blocks are predicted
    from other blocks of weights. If a libvvenc update stops doing this, the -noibc variants are
    no longer needed."""
    assert _off_lattice_blocks("ai-medium-coef-dq") > 0.0


@pytest.mark.parametrize("shape", [(70, 100), (64, 96), (192, 576), (33, 17)])
@pytest.mark.parametrize("used", [None, 16, 8])
def test_transforms_that_skip_the_empty_columns_match_the_full_ones(shape, used):
    x = np.random.default_rng(0).standard_normal(shape) * 40
    full = block_idct(place(x, 32, used), 32)
    fast = placed_idct(x, 32, used)
    assert fast.shape == full.shape
    np.testing.assert_allclose(fast, full, rtol=0, atol=1e-9)
    s = np.rint(full)
    np.testing.assert_allclose(taken_dct(s.copy(), 32, used, *shape), take(block_dct(s, 32), 32, used, *shape),
                               rtol=0, atol=1e-9)

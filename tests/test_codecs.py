"""Every codec back end and profile: round trips on small matrices through the real FFmpeg."""

from __future__ import annotations

import numpy as np
import pytest

from llmcodec.cli import main
from llmcodec.codecs import CODECS, CodecError, get_codec
from llmcodec.codecs.base import FFmpegCodec, Profile
from llmcodec.codecs.image import j2k_lambda, jxl_distance
from llmcodec.coder import decode_matrix, encode_prepared, prepare
from llmcodec.compress import CompressSettings, compress_matrices
from llmcodec.quant import dequantize, relative_error


def _matrix(rows: int = 96, cols: int = 136, seed: int = 0) -> np.ndarray:
    # Column scales vary like input channels of a real layer, so the codec sees some structure.
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols)) * np.linspace(0.5, 2.0, cols)).astype(np.float32)


def _round_trip(codec: FFmpegCodec, profile: Profile, w: np.ndarray, qp: int | None):
    p = prepare("w", w, codec, profile, None)
    stream = encode_prepared(p, codec, profile, qp)
    q = decode_matrix(stream, p.layout, codec, profile, p.quantized.spec.block)
    return p, len(stream), q, relative_error(w, dequantize(p.quantized, q))


def _test_qps(codec: FFmpegCodec) -> tuple[int, int]:
    lo, hi = codec.qp_range
    return lo + (hi - lo) // 3, lo + (hi - lo) // 2


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip_error_falls_with_qp(name):
    codec = get_codec(name)
    codec.check_available()
    profile = codec.profile(None)
    w = _matrix()
    fine, coarse = _test_qps(codec)
    p_fine, bytes_fine, q_fine, err_fine = _round_trip(codec, profile, w, fine)
    _, bytes_coarse, _, err_coarse = _round_trip(codec, profile, w, coarse)
    assert q_fine.shape == p_fine.quantized.q.shape and q_fine.dtype == np.uint16
    # (VVC's default codes in the coefficient domain, where QP 31 is about 2.3 bits per weight)
    assert err_fine < 0.3, f"{name} at QP {fine}: relative error {err_fine:.3f}"
    assert err_fine < err_coarse < 1.0
    assert bytes_fine > bytes_coarse


@pytest.mark.parametrize("name", sorted(CODECS))
def test_lossless_is_exact_or_refused(name):
    codec = get_codec(name)
    profile = codec.profile(None)
    w = _matrix(72, 80, seed=1)
    if not codec.lossless:
        p = prepare("w", w, codec, profile, None)
        with pytest.raises(ValueError, match="no lossless mode"):
            encode_prepared(p, codec, profile, None)
        return
    p, _, q, _ = _round_trip(codec, profile, w, None)
    np.testing.assert_array_equal(q, p.quantized.q)


PROFILES = [(n, p) for n in sorted(CODECS) for p in sorted(CODECS[n].profiles) if not p.endswith(("slow", "slower"))]


@pytest.mark.parametrize(("name", "profile_name"), PROFILES)
def test_every_profile_round_trips(name, profile_name):
    codec = get_codec(name)
    profile = codec.profile(profile_name)
    assert codec.pix_fmt(profile) in codec.pix_fmts
    w = _matrix(200, 64, seed=2)
    # (libvvenc refuses small 4:2:0 frames full of chroma detail at QPs below ~21; its range starts above.)
    p, _, q, err = _round_trip(codec, profile, w, _test_qps(codec)[0])
    # inter profiles give B-frames coarser QPs, hence the loose bound
    assert err < 0.45, f"{name}:{profile_name}: relative error {err:.3f}"
    if profile.max_frame_h:
        assert p.layout.n_frames > 1 and p.layout.frame_h <= profile.max_frame_h
    # the quantizer follows the pixel format's depth
    assert p.quantized.spec.bits == codec.sample_bits(profile)
    assert q.max() <= p.quantized.spec.levels


def test_bit_depth_follows_pixel_format():
    x265 = get_codec("x265")
    assert x265.sample_bits(x265.profile("ai-medium")) == 10
    assert x265.sample_bits(x265.profile("ai-medium-8bit")) == 8
    assert x265.sample_bits(x265.profile("ai-medium-12bit")) == 12
    assert get_codec("kvazaar").sample_bits(get_codec("kvazaar").profile(None)) == 8


def test_inter_profile_lossless_over_several_frames():
    codec = get_codec("x265")
    profile = codec.profile("ra-medium-h128")
    w = _matrix(300, 64, seed=3)
    p, _, q, _ = _round_trip(codec, profile, w, None)
    assert p.layout.n_frames == 3
    np.testing.assert_array_equal(q, p.quantized.q)


def test_frame_height_cap_below_minimum_is_clamped():
    codec = get_codec("x264")
    layout = codec.plan(300, 64, Profile("tiny", max_frame_h=16))
    assert layout.frame_h == codec.min_size and layout.n_frames == 5


def test_quality_indices_are_monotone():
    d = [jxl_distance(q) for q in range(*get_codec("jxl").qp_range)]
    lam = [j2k_lambda(q) for q in range(*get_codec("j2k").qp_range)]
    assert all(a < b for a, b in zip(d, d[1:], strict=False)) and d[-1] <= 15  # libjxl's limit
    assert all(a < b for a, b in zip(lam, lam[1:], strict=False))


class _Missing(FFmpegCodec):
    name = "missing"
    encoder = "libdoesnotexist"
    fmt = "h264"
    pix_fmts = ("gray",)
    qp_range = (0, 51)
    profiles = {"default": Profile("default")}


def test_missing_encoder_is_a_clear_error(monkeypatch):
    with pytest.raises(CodecError, match="libdoesnotexist"):
        _Missing().check_available()
    monkeypatch.setitem(CODECS, "missing", _Missing)
    with pytest.raises(CodecError, match="needs the FFmpeg encoder 'libdoesnotexist'"):
        compress_matrices([("w", _matrix(), "float32")], CompressSettings(codec="missing", qp=20))


def test_missing_decoder_is_a_clear_error():
    class NoDecoder(_Missing):
        encoder = "libx264"
        decoder = "nodecoderhere"

    with pytest.raises(CodecError, match="nodecoderhere"):
        NoDecoder().check_available()


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="ai-fast"):
        get_codec("x265").profile("warp-speed")


@pytest.mark.parametrize("name", sorted(CODECS))
def test_cli_compress_with_every_codec(name, tiny_llama, tmp_path, capsys):
    codec = get_codec(name)
    profile = next(p for p in sorted(codec.profiles) if p != "default")
    out = tmp_path / f"{name}.llmc"
    args = ["compress", str(tiny_llama), str(out), "--codec", name, "--profile", profile, "--quiet"]
    args += ["--qp", str(_test_qps(codec)[0]), "--only", r"layers\.0\.(self_attn\.q_proj|mlp\.down_proj)"]
    assert main(args) == 0
    assert f"codec {name}" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "layers.0.mlp.down_proj.weight" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(16, 16), (33, 17), (8, 300)])
def test_vvc_coefficient_profiles_take_qps_below_the_sample_domains_floor(shape):
    """QP 0-12 only in the coefficient domain (libvvenc fails there on some small sample-domain frames):
    a finer QP gives less error and more bits, on small and odd frames, for both default profiles."""
    codec = get_codec("vvc")
    assert codec.qp_limits(codec.profile("ai-faster")) == codec.qp_range == (13, 63)
    w = _matrix(*shape, seed=3)
    for name in ("default", "default-dq"):
        profile = codec.profile(name)
        assert codec.qp_limits(profile) == (0, 63)
        _, bytes_0, _, err_0 = _round_trip(codec, profile, w, 0)
        _, bytes_13, _, err_13 = _round_trip(codec, profile, w, 13)
        assert err_0 < 0.6 * err_13 and bytes_0 > bytes_13
    sample = codec.profile("ai-faster")
    with pytest.raises(ValueError, match="outside vvc's range"):
        encode_prepared(prepare("w", w, codec, sample, None), codec, sample, 12)

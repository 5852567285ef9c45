"""8-bit logarithmic side information: the grid, the quantizer's compact mode and the artifact."""

import hashlib
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import llmcodec
from llmcodec import artifact, sideinfo
from llmcodec.artifact_format import digest
from llmcodec.quant import QuantSpec, dequantize, quantize, refit, relative_error


def test_grid_round_trips_exactly_and_moves_values_by_at_most_half_a_step():
    x = np.random.default_rng(0).lognormal(-3, 0.5, 500)  # spans under 8 octaves
    g = sideinfo.snap(x)
    assert g.dtype == np.float32
    assert np.max(np.abs(np.log2(g / x))) <= 0.5 / sideinfo.CODES_PER_OCTAVE + 1e-6
    codes, lo = sideinfo.to_codes(g)
    assert codes.dtype == np.uint8 and np.array_equal(sideinfo.from_codes(codes, lo), g)
    up = sideinfo.snap(x, up=True)
    assert np.all(up >= x * (1 - 1e-5)) and np.array_equal(sideinfo.snap(up, up=True), up)
    assert sideinfo.bits(g) == 8 * sideinfo.pack(codes).size + 16


def test_grid_spans_255_steps_raising_values_below_the_floor():
    x = np.array([1.0, 2.0**-9, 2.0**-20])
    g = sideinfo.snap(x)
    assert g[0] == 1.0 and g[1] == g[2] == np.float32(2.0 ** (-255 / 32))
    codes, _ = sideinfo.to_codes(g)
    assert codes.tolist() == [255, 0, 0]


@pytest.mark.parametrize("bad", [np.array([1.0, 0.0]), np.array([1.0, -2.0]), np.array([np.inf]), np.array([])])
def test_grid_refuses_non_positive_values(bad):
    with pytest.raises(ValueError, match="positive and finite"):
        sideinfo.snap(bad)


def test_to_codes_refuses_values_off_the_grid():
    with pytest.raises(ValueError, match="not on the 8-bit"):
        sideinfo.to_codes(np.array([1.0, 1.01]))


def test_compact_needs_the_coefficient_domain():
    with pytest.raises(ValueError, match="coefficient domain"):
        QuantSpec(bits=10, compact=True)


def test_compact_quantizer_drops_offsets_of_ordinary_weights_and_keeps_biased_ones():
    rng = np.random.default_rng(1)
    spec = QuantSpec(bits=10, block=32, compact=True)
    w = (rng.standard_normal((64, 96)) * rng.uniform(0.01, 0.1, (64, 1))).astype(np.float32)
    qz = quantize(w, spec)
    assert not np.any(qz.offset) and qz.scale.dtype == np.float32
    assert np.array_equal(sideinfo.snap(qz.scale), qz.scale)  # on the grid
    assert qz.side_bits == sideinfo.bits(qz.scale, packed=False) == 8 * 64 + 16  # QuantSpec: a byte a code
    # the same weights at each row's mean of 2 RMS: the means pay for themselves (16 bits a row)
    biased = w + 2 * np.sqrt(np.mean(np.square(w), axis=1, keepdims=True))
    qb = quantize(biased, spec)
    assert np.any(qb.offset) and qb.side_bits == sideinfo.bits(qb.scale, packed=False) + 16 * 64
    for m, x in ((qz, w), (qb, biased)):
        assert relative_error(x, dequantize(m)) < 1e-2  # exact samples restore the matrix
    const = quantize(np.full((32, 64), 0.25, np.float32), spec)
    assert np.allclose(dequantize(const), 0.25)


def test_compact_refit_stays_on_the_grid_and_lowers_a_lossy_error():
    rng = np.random.default_rng(7)
    spec = QuantSpec(bits=10, block=32, compact=True)
    w = (rng.laplace(size=(96, 200)) * rng.uniform(0.01, 0.1, (96, 1))).astype(np.float32)
    qz = quantize(w, spec)
    noisy = np.rint(qz.q.astype(np.float64) - 512 + rng.normal(0, 25, qz.q.shape))
    q_hat = np.clip(np.where(np.abs(noisy) < 20, 0, noisy) + 512, 0, 1023).astype(np.uint16)
    fitted = refit(qz, q_hat, w)
    assert not np.any(fitted.offset) and np.array_equal(sideinfo.snap(fitted.scale), fitted.scale)
    assert relative_error(w, dequantize(fitted, q_hat)) < 0.97 * relative_error(w, dequantize(qz, q_hat))


def _state(rng):
    return {
        "l.0.w": torch.from_numpy((rng.standard_normal((64, 96)) * 0.02).astype(np.float32)),
        "l.1.w": torch.from_numpy((rng.standard_normal((48, 64)) * 0.02 + 0.05).astype(np.float32)),  # biased rows
    }


@pytest.mark.parametrize("side", ["packed", "log8", "fp16"])
def test_artifact_stores_what_the_side_format_says(tmp_path, side):
    state = _state(np.random.default_rng(2))
    art = llmcodec.compress_state_dict(state, llmcodec.CompressSettings(qp=30, side=side))
    path = tmp_path / "a.llmc"
    llmcodec.save(art, path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        header = json.loads(f.metadata()["llmcodec"])
        dtypes = {k: f.get_tensor(k).dtype for k in keys}
    back = artifact.read(path)
    for name, c in art.coded.items():
        e = header["tensors"][name]
        b = back.coded[name]
        assert np.array_equal(b.scale, c.scale) and np.array_equal(b.offset, c.offset)
        assert np.array_equal(b.col_scale, c.col_scale) and b.side_bits == c.side_bits
        if side != "fp16":
            assert e["quant"].get("packed", False) == (side == "packed")
            assert e["quant"]["compact"] and dtypes[f"{name}::scale"] == torch.uint8
            assert dtypes[f"{name}::colscale"] == torch.uint8 and "col_lo" in e
            assert (f"{name}::offset" in keys) == bool(np.any(c.offset))
        else:
            assert "compact" not in e["quant"] and dtypes[f"{name}::scale"] == torch.float16
            assert dtypes[f"{name}::colscale"] == torch.float16 and f"{name}::offset" in keys
    if side != "fp16":
        assert not np.any(art.coded["l.0.w"].offset) and np.any(art.coded["l.1.w"].offset)
    restored = llmcodec.load_state_dict(path)
    for name, t in state.items():
        assert (restored[name] - t).norm() / t.norm() < 0.3


def test_log8_side_information_is_smaller_and_no_worse():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((256, 192)) * 0.02).astype(np.float32)
    res, cts = {}, {}
    for side in ("packed", "log8", "fp16"):
        ct = llmcodec.compress_tensor(torch.from_numpy(w), llmcodec.CompressSettings(qp=30, side=side))
        res[side] = (ct.side_bits - (0 if ct.recon is None else ct.recon.bits), ct.rel_error)
        cts[side] = ct
    # no columns weighted for a lone tensor, no offsets
    assert res["log8"][0] == 8 * 256 + 16 == sideinfo.bits(cts["log8"].scale, packed=False)
    assert res["packed"][0] == sideinfo.bits(cts["packed"].scale) < 4.5 * 256  # rows of one RMS: few bits a code
    assert res["fp16"][0] == 32 * 256
    assert res["log8"][1] < res["fp16"][1] * 1.02
    # packing is lossless: the same codes, bitstream and error
    assert cts["packed"].bitstream == cts["log8"].bitstream and res["packed"][1] == res["log8"][1]
    assert np.array_equal(cts["packed"].scale, cts["log8"].scale)


@pytest.mark.parametrize("compact", [True, False])
def test_refit_of_a_nearly_zeroed_decode_stays_sane(compact):
    # a coarse QP can zero nearly everything; least squares on one stray level must not give a
    # scale that (through the log grid's common span) ruins the other rows (seen on MiniLM at QP 45)
    from llmcodec.quant import REFIT_RANGE

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    qz = quantize(w, QuantSpec(bits=10, block=32, compact=compact))
    q_hat = np.full(qz.q.shape, 512, np.uint16)
    q_hat[3, 5] = 513  # one stray sample: that row's coefficients are tiny
    fitted = refit(qz, q_hat, w)
    ratio = fitted.scale.astype(np.float64) / qz.scale.astype(np.float64)
    assert ratio.min() >= REFIT_RANGE[0] * 0.98 and ratio.max() <= REFIT_RANGE[1] * 1.02
    assert relative_error(w, dequantize(fitted, q_hat)) <= 1.0 + 1e-6


@settings(max_examples=200, deadline=None)
@given(codes=st.lists(st.integers(0, 255), max_size=300), centre=st.integers(0, 255), spread=st.integers(0, 128))
def test_packed_codes_round_trip_at_the_size_counted(codes, centre, spread):
    c = np.array(codes + [min(255, max(0, centre + (i % (2 * spread + 1)) - spread)) for i in range(50)], np.uint8)
    p = sideinfo.pack(c)
    assert p.dtype == np.uint8 and 8 * p.size == sideinfo.packed_bits(c)
    assert np.array_equal(sideinfo.unpack(p, c.size), c)
    # never more than a byte a code plus the 12-bit head, padded to a byte
    assert p.size <= c.size + 2


def test_packing_saves_bits_on_clustered_codes():
    rng = np.random.default_rng(4)
    c = np.clip(np.rint(230 + rng.normal(0, 6, 1000)), 0, 255).astype(np.uint8)  # ~4.6 bits of entropy
    assert 8 * sideinfo.pack(c).size < 5.5 * c.size
    wide = rng.integers(0, 256, 1000).astype(np.uint8)  # no cluster: a byte a code, not more
    assert sideinfo.pack(wide).size == 1000 + 2


@pytest.mark.parametrize("cut", ["short", "long", "head"])
def test_unpack_refuses_a_stream_of_other_length(cut):
    c = np.full(100, 200, np.uint8)
    c[::7] = 190
    p = sideinfo.pack(c)
    bad = {"short": p[:-1], "long": np.concatenate([p, np.zeros(1, np.uint8)]), "head": p[:1]}[cut]
    with pytest.raises(ValueError, match="packed side information"):
        sideinfo.unpack(bad, 100)
    with pytest.raises(ValueError, match="packed side information"):
        sideinfo.unpack(p, 116)  # more codes than the padding can hold


def _save_signed(tensors, header, path):
    text = json.dumps(header, sort_keys=True)
    sha = hashlib.sha256(text.encode()).hexdigest()
    save_file(tensors, str(path), metadata={"llmcodec": text, "llmcodec.sha256": sha})


def _as_format_7(path, out):
    """The same artifact as format 7 wrote it: a byte per log code (no packing)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["llmcodec"])
    header["format_version"] = 7
    for name, e in header["tensors"].items():
        if e["kind"] != "coded":
            continue
        assert e["quant"].pop("packed") and "col_lo" in e
        for key, sha, shape in (("scale", "scale", (e["shape"][0], 1)), ("colscale", "col_scale", (e["shape"][1],))):
            codes = sideinfo.unpack(tensors[f"{name}::{key}"].numpy(), int(np.prod(shape))).reshape(shape)
            tensors[f"{name}::{key}"] = torch.from_numpy(codes)
            e["sha256"][sha] = digest(codes)
    _save_signed(tensors, header, out)


def test_format_7_files_with_a_byte_per_code_still_read(tmp_path):
    state = _state(np.random.default_rng(5))
    art = llmcodec.compress_state_dict(state, llmcodec.CompressSettings(qp=30))
    path, old = tmp_path / "a.llmc", tmp_path / "old.llmc"
    llmcodec.save(art, path)
    _as_format_7(path, old)
    assert artifact.read_header(old)["format_version"] == 7
    new, back = artifact.read(path), artifact.read(old)
    for name, c in art.coded.items():
        for b in (new.coded[name], back.coded[name]):
            assert np.array_equal(b.scale, c.scale) and np.array_equal(b.col_scale, c.col_scale)


def test_a_damaged_packed_stream_is_a_clear_error(tmp_path):
    state = _state(np.random.default_rng(6))
    art = llmcodec.compress_state_dict(state, llmcodec.CompressSettings(qp=30))
    path, bad = tmp_path / "a.llmc", tmp_path / "bad.llmc"
    llmcodec.save(art, path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["llmcodec"])
    key = "l.0.w::colscale"
    tensors[key] = torch.cat([tensors[key], torch.zeros(1, dtype=torch.uint8)])  # one byte too many
    header["tensors"]["l.0.w"]["sha256"]["col_scale"] = digest(tensors[key])
    _save_signed(tensors, header, bad)
    with pytest.raises(artifact.ArtifactError, match="column scales.*data after its last code.*corrupt"):
        artifact.read(bad)

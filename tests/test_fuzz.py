"""Property-based tests: damaged or crafted artifacts never crash the reader or yield different tensors;
integer matrices of any shape, dtype and bit depth survive the frame layout and raw pixel packing exactly."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import llmcodec
from llmcodec import artifact
from llmcodec.artifact import ArtifactError
from llmcodec.codecs.base import PIX_FMTS, CodecError, bit_depth, pack_raw, unpack_raw
from llmcodec.frames import from_frames, plan_layout, to_frames

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small artifact with every kind of entry: coded (fp32, bf16, grouped), raw, tied, a file."""
    rng = np.random.default_rng(0)
    w = torch.from_numpy((rng.standard_normal((64, 72)) * 0.02).astype(np.float32))
    state = {
        "a.w": w,
        "b.w": torch.from_numpy((rng.standard_normal((40, 64)) * 0.02).astype(np.float32)).to(torch.bfloat16),
        "norm": torch.linspace(-1, 1, 24),
        "ids": torch.arange(5),
        "tied.w": w,
    }
    art = llmcodec.compress_state_dict(
        state, llmcodec.CompressSettings(qp=35, group=32), config={"model_type": "x"}, files={"tok.json": b"{}"}
    )
    path = tmp_path_factory.mktemp("fuzz") / "small.llmc"
    llmcodec.save(art, path)
    return path, path.read_bytes(), artifact.read(path)


def _same(a: artifact.Artifact, b: artifact.Artifact) -> bool:
    if (a.order, a.aliases, a.files, a.config, a.codec, a.settings) != (
        b.order, b.aliases, b.files, b.config, b.codec, b.settings
    ):
        return False
    if set(a.coded) != set(b.coded) or set(a.raw) != set(b.raw):
        return False
    for n, x in a.coded.items():
        y = b.coded[n]
        if (x.shape, x.dtype, x.qp, x.layout, x.spec, x.bitstream, x.rel_error) != (
            y.shape, y.dtype, y.qp, y.layout, y.spec, y.bitstream, y.rel_error
        ):
            return False
        if not (np.array_equal(x.scale, y.scale) and np.array_equal(x.offset, y.offset)):
            return False
        if x.scale.dtype != y.scale.dtype:
            return False
    return all(a.raw[n].dtype == b.raw[n].dtype and torch.equal(a.raw[n], b.raw[n]) for n in a.raw)


def _read_or_error(path, original: artifact.Artifact) -> None:
    """The only outcomes allowed: ArtifactError, or exactly the original contents."""
    try:
        back = artifact.read(path)
    except ArtifactError:
        return
    assert _same(back, original), "damaged file read back as different contents"


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3))
def test_byte_flips_give_artifact_error_or_the_same_contents(small, tmp_path, flips):
    path, data, original = small
    bad = bytearray(data)
    for where, xor in flips:
        bad[int(where * len(bad))] ^= xor
    p = tmp_path / "flipped.llmc"
    p.write_bytes(bytes(bad))
    _read_or_error(p, original)


@FUZZ
@given(where=st.integers(0, 10**9), flip=st.integers(1, 255))
def test_header_region_flips(small, tmp_path, where, flip):
    """Half the file is the JSON header; aim single flips at it (and at the 8-byte size) specifically."""
    path, data, original = small
    hsize = int.from_bytes(data[:8], "little")
    bad = bytearray(data)
    bad[where % (8 + hsize)] ^= flip
    p = tmp_path / "hflip.llmc"
    p.write_bytes(bytes(bad))
    _read_or_error(p, original)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10**9))
def test_truncation_always_gives_artifact_error(small, tmp_path, cut):
    path, data, _ = small
    p = tmp_path / "cut.llmc"
    p.write_bytes(data[: cut % len(data)])
    with pytest.raises(ArtifactError):
        artifact.read(p)


def test_oversized_header_declaration_is_refused_before_reading(small, tmp_path):
    _, data, _ = small
    for n in (2**63, 10**12, len(data)):
        p = tmp_path / "huge.llmc"
        p.write_bytes(n.to_bytes(8, "little") + data[8:])
        with pytest.raises(ArtifactError, match="corrupt header|truncated"):
            artifact.read_header(p)


def test_header_checksum_required_from_format_2(pieces, tmp_path):
    tensors, header = pieces
    text = json.dumps(header)
    p = tmp_path / "nosum.llmc"
    save_file(tensors, str(p), metadata={"llmcodec": text})  # checksum key dropped
    with pytest.raises(ArtifactError, match="no checksum"):
        artifact.read(p)
    v1 = json.dumps({**header, "format_version": 1})  # files from before header checksums still read
    save_file(tensors, str(p), metadata={"llmcodec": v1})
    assert artifact.read(p).order == list(header["tensors"])
    edited = json.dumps({**header, "llmcodec_version": "9.9"})  # any edit without a new checksum
    sha = hashlib.sha256(text.encode()).hexdigest()
    save_file(tensors, str(p), metadata={"llmcodec": edited, "llmcodec.sha256": sha})
    with pytest.raises(ArtifactError, match="checksum mismatch in the llmcodec header"):
        artifact.read(p)


# -- crafted headers: a consistent checksum, a malicious or nonsensical field ------------------------------


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
SPECIAL = st.sampled_from([0, -1, 1, 2, 3, 7, 64, 2**31, 2**40, "..", "../evil", "float16", "uint8", "yuv420", None])


@pytest.fixture(scope="module")
def pieces(small):
    path, _, _ = small
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["llmcodec"])
    return tensors, header


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crafted_header_fields_give_artifact_error_never_a_crash(pieces, tmp_path, data):
    tensors, header = pieces
    paths = [p for p in _paths(header) if p and p[0] in ("tensors", "model", "codec")]
    target = data.draw(st.sampled_from(paths))
    value = data.draw(SPECIAL | JSON_VALUES)
    crafted = copy.deepcopy(header)
    node = crafted
    for k in target[:-1]:
        node = node[k]
    node[target[-1]] = value
    text = json.dumps(crafted)
    p = tmp_path / "crafted.llmc"
    meta = {"llmcodec": text, "llmcodec.sha256": hashlib.sha256(text.encode()).hexdigest()}
    save_file(tensors, str(p), metadata=meta)
    try:
        art = artifact.read(p)
    except ArtifactError:
        return
    # Accepted: then it must also restore (or fail cleanly), with every tensor the shape the header says.
    try:
        state = llmcodec.api.restore_state_dict(art, workers=1)
    except (CodecError, ArtifactError, ValueError) as e:
        assert not isinstance(e, (IndexError, KeyError)), e
        return
    for name, c in art.coded.items():
        assert tuple(state[name].shape) == c.shape and str(state[name].dtype) == f"torch.{c.dtype}"
    for f in art.files:
        assert "/" not in f and f not in (".", "..")


def test_numbers_beyond_float_range_in_the_header_are_refused(pieces, tmp_path):
    # JSON ints have no bound: one in a number field was a TypeError (np.isfinite), not an ArtifactError
    tensors, header = pieces
    name = next(n for n, e in header["tensors"].items() if e["kind"] == "coded")
    for value in (10**400, -(10**400)):
        crafted = copy.deepcopy(header)
        crafted["tensors"][name]["rel_error"] = value
        text = json.dumps(crafted)
        p = tmp_path / "big.llmc"
        sha = hashlib.sha256(text.encode()).hexdigest()
        save_file(tensors, str(p), metadata={"llmcodec": text, "llmcodec.sha256": sha})
        with pytest.raises(ArtifactError, match="rel_error"):
            artifact.read(p)


# -- frames and raw pixel packing: exact for any shape, dtype and bit depth ------------------------------


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 300),
    pix_fmt=st.sampled_from(sorted(PIX_FMTS)),
    packing=st.sampled_from(["luma", "yuv420"]),
    bits=st.integers(1, 16),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.int64]),
    max_side=st.sampled_from([64, 96, 256]),
    seed=st.integers(0, 9),
)
def test_layout_and_pixel_packing_round_trip(rows, cols, pix_fmt, packing, bits, dtype, max_side, seed):
    depth = bit_depth(pix_fmt)
    bits = min(bits, depth, np.iinfo(dtype).bits)
    if packing == "yuv420" and PIX_FMTS[pix_fmt][1] != (2, 2):
        packing = "luma"  # yuv420 packing needs 4:2:0 chroma planes
    q = np.random.default_rng(seed).integers(0, 1 << bits, size=(rows, cols)).astype(dtype)
    layout = plan_layout(rows, cols, max_w=max_side, max_h=max_side, packing=packing)
    frames = to_frames(q, layout)
    raw = pack_raw(frames, pix_fmt)
    planes = 3 if packing == "yuv420" else 1
    back = unpack_raw(raw, pix_fmt, layout.n_frames, layout.frame_h, layout.frame_w, planes)
    out = from_frames(back, layout)
    assert out.shape == q.shape and np.array_equal(out.astype(np.int64), q.astype(np.int64))
    with pytest.raises(CodecError, match="decoder returned"):
        unpack_raw(raw[:-1], pix_fmt, layout.n_frames, layout.frame_h, layout.frame_w, planes)


# -- several header fields at once, and the decoder on crafted streams ---------------------------------------


def _restore_or_clean_error(path, reference: dict | None = None) -> None:
    """Read and restore ``path``: an ArtifactError/CodecError, or every tensor the shape and dtype the
    header says (and, given ``reference``, exactly those tensors)."""
    try:
        art = artifact.read(path)
        state = llmcodec.api.restore_state_dict(art, workers=1)
    except (ArtifactError, CodecError):
        return
    for name, c in art.coded.items():
        assert tuple(state[name].shape) == c.shape and str(state[name].dtype) == f"torch.{c.dtype}"
    if reference is not None:
        assert set(state) == set(reference)
        for n, t in state.items():
            assert torch.equal(t.view(torch.uint8) if t.dtype == torch.bool else t, reference[n]), n


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _set(header: dict, target: tuple, value) -> None:
    node = header
    for k in target[:-1]:
        node = node[k]
    node[target[-1]] = value


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_several_crafted_header_fields_at_once(pieces, tmp_path, data):
    tensors, header = pieces
    paths = [p for p in _paths(header) if p and p[0] in ("tensors", "model", "codec")]
    crafted = copy.deepcopy(header)
    for _ in range(data.draw(st.integers(2, 5))):
        live = [p for p in _paths(crafted) if p and p[0] in ("tensors", "model", "codec")] or paths
        target = data.draw(st.sampled_from(live))
        try:
            _set(crafted, target, data.draw(SPECIAL | JSON_VALUES))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or retyped the path
    text = json.dumps(crafted)
    p = tmp_path / "crafted.llmc"
    save_file(tensors, str(p), metadata={"llmcodec": text, "llmcodec.sha256": _hex(text)})
    _restore_or_clean_error(p)


CONSISTENT_EDITS = [
    # (what, function of a coded entry) -- each keeps the entry self-consistent in the ways a careless check
    # would look at, so that the decoder runs on it
    ("rows", lambda e: e["shape"].__setitem__(0, e["shape"][0] // 2)),
    ("frames", lambda e: e["layout"].__setitem__("tiles_y", e["layout"]["tiles_y"] + 1)),
    ("frame height", lambda e: e["layout"].__setitem__("frame_h", e["layout"]["frame_h"] + 8)),
    ("bits", lambda e: e["quant"].__setitem__("bits", 8)),
    ("qp", lambda e: e.__setitem__("qp", None)),
    ("block", lambda e: e["quant"].__setitem__("block", 16)),
    ("digest", lambda e: e["sha256"].__setitem__("decoded", "0" * 64)),
]


@pytest.fixture(scope="module")
def reference_state(small):
    path, _, art = small
    return {n: (t.view(torch.uint8) if t.dtype == torch.bool else t)
            for n, t in llmcodec.api.restore_state_dict(art, workers=1).items()}


def _stream_of(tensors: dict, name: str) -> bytes:
    return tensors[f"{name}::bitstream"].numpy().tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decoder_on_crafted_streams(pieces, reference_state, tmp_path, data):
    """Streams an attacker can make (with checksums to match): random bytes, cut, flipped, another
    tensor's, two joined, a stream of many frames; with or without several header edits. Decoding
    must fail cleanly or give exactly the original tensors (the digest of the decoded integers)."""
    tensors, header = pieces
    tensors = dict(tensors)
    crafted = copy.deepcopy(header)
    coded = sorted(n for n, e in header["tensors"].items() if e["kind"] == "coded")
    name = data.draw(st.sampled_from(coded))
    own, other = _stream_of(tensors, name), _stream_of(tensors, data.draw(st.sampled_from(coded)))
    kind = data.draw(st.sampled_from(["same", "random", "cut", "flip", "other", "joined", "repeat"]))
    if kind == "random":
        stream = data.draw(st.binary(min_size=1, max_size=4096))
    elif kind == "cut":
        stream = own[: data.draw(st.integers(1, max(1, len(own) - 1)))]
    elif kind == "flip":
        b = bytearray(own)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= data.draw(st.integers(1, 255))
        stream = bytes(b)
    elif kind == "other":
        stream = other
    elif kind == "joined":
        stream = own + other
    elif kind == "repeat":
        stream = own * data.draw(st.integers(2, 6))
    else:
        stream = own
    tensors[f"{name}::bitstream"] = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
    crafted["tensors"][name]["sha256"]["bitstream"] = hashlib.sha256(stream).hexdigest()
    for _what, edit in data.draw(st.lists(st.sampled_from(CONSISTENT_EDITS), max_size=3, unique_by=lambda x: x[0])):
        edit(crafted["tensors"][name])
    text = json.dumps(crafted)
    p = tmp_path / "stream.llmc"
    save_file(tensors, str(p), metadata={"llmcodec": text, "llmcodec.sha256": _hex(text)})
    _restore_or_clean_error(p, reference_state)

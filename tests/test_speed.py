"""Batched decoding (one decoder process for several tensors) gives exactly what one process per
tensor gives, and a bad stream in a batch is still reported by its tensor's name."""

from dataclasses import replace

import numpy as np
import pytest

from llmcodec.api import decode_batches
from llmcodec.codecs import get_codec
from llmcodec.codecs.base import CodecError
from llmcodec.coder import decode_tensor, decode_tensors
from llmcodec.compress import CompressSettings, compress_matrices


@pytest.fixture(scope="module")
def coded():
    rng = np.random.default_rng(0)
    mats = [
        (f"m{i}", (rng.standard_normal((64 + 96 * i, 128 + 64 * (i % 3))) * 0.02).astype(np.float32), "float32")
        for i in range(4)
    ]
    return compress_matrices(mats, CompressSettings(qp=30))


def test_batched_decode_equals_one_process_per_tensor(coded):
    codec = get_codec("vvc")
    profile = codec.profile("default")
    assert len({(ct.layout.frame_h, ct.layout.frame_w) for ct in coded}) > 1  # frames of several sizes
    one = [decode_tensor(ct, codec, profile) for ct in coded]
    batch = decode_tensors(coded, codec, profile)
    assert all(np.array_equal(a, b) for a, b in zip(one, batch, strict=True))


def test_a_bad_stream_in_a_batch_is_named(coded):
    codec = get_codec("vvc")
    profile = codec.profile("default")
    bad = list(coded)
    bad[2] = replace(bad[2], bitstream=bad[2].bitstream[: len(bad[2].bitstream) // 3])
    with pytest.raises(CodecError, match="'m2'"):
        decode_tensors(bad, codec, profile)


def test_decode_batches_keep_order_and_bounds(coded):
    by_name = {ct.name: ct for ct in coded}
    sizes = [ct.layout.frame_h * ct.layout.frame_w * ct.layout.n_frames for ct in coded]
    assert decode_batches(by_name, max_tensors=3) == [["m0", "m1", "m2"], ["m3"]]
    small = decode_batches(by_name, max_samples=min(sizes) - 1)  # each tensor alone, none dropped
    assert small == [[n] for n in by_name]
    for batch in decode_batches(by_name, max_samples=sizes[0] + sizes[1]):
        assert len(batch) == 1 or sum(sizes[int(n[1:])] for n in batch) <= sizes[0] + sizes[1]


def test_monochrome_coefficient_domain_decodes_the_same_integers_in_fewer_bytes():
    """The default VVC profile codes luma only; with constant 4:2:0 chroma planes instead, the decoded
    integers are the same and the stream is larger (chroma modes are signalled per coding unit)."""
    from llmcodec.codecs.vvc import MONOCHROME
    from llmcodec.coder import decode_matrix, prepare

    codec = get_codec("vvc")
    mono = codec.profile("default")
    assert MONOCHROME in mono.options and codec.decoded_pix_fmt(mono) == "gray10le"
    color = replace(mono, options=tuple(o for o in mono.options if o != MONOCHROME))
    w = (np.random.default_rng(2).standard_normal((256, 384)) * 0.02).astype(np.float32)
    p = prepare("w", w, codec, mono, None, compact=True, packed=True)
    streams = {name: codec.encode(p.frames, 30, prof) for name, prof in (("mono", mono), ("color", color))}
    q_mono = decode_matrix(streams["mono"], p.layout, codec, mono, mono.coef_block)
    q_color = decode_matrix(streams["color"], p.layout, codec, color, color.coef_block)
    assert np.array_equal(q_mono, q_color)
    assert len(streams["mono"]) < len(streams["color"])

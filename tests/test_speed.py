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


def test_finish_batches_cut_runs_by_weights():
    from llmcodec.compress import finish_batches

    assert finish_batches([10, 20, 30, 100, 5, 5], limit=60) == [[0, 1, 2], [3], [4, 5]]
    assert finish_batches([70, 70], limit=60) == [[0], [1]]  # a large matrix alone, none dropped
    assert finish_batches([], limit=60) == []


def _decoder_runs(monkeypatch) -> list[str]:
    import llmcodec.codecs.base as base

    seen: list[str] = []
    real = base.run_ffmpeg

    def counting(args, data, timeout, what, *a, **kw):
        seen.append(what)
        return real(args, data, timeout, what, *a, **kw)

    monkeypatch.setattr(base, "run_ffmpeg", counting)
    return seen


def test_small_matrices_are_checked_by_one_decoder_process_with_the_same_result(coded, monkeypatch):
    """compress_matrices decodes its small matrices' streams together; the coded tensors are those
    of one decoder process per tensor (finish_job)."""
    from llmcodec.compress import JobSpec, finish_job, finish_many_job

    rng = np.random.default_rng(0)
    mats = [  # the fixture's matrices, regenerated
        (f"m{i}", (rng.standard_normal((64 + 96 * i, 128 + 64 * (i % 3))) * 0.02).astype(np.float32), "float32")
        for i in range(4)
    ]
    spec = JobSpec("vvc", "default", None, 0.1)
    seen = _decoder_runs(monkeypatch)
    many = finish_many_job(spec, [m[0] for m in mats], [m[1].shape for m in mats], [m[1].copy for m in mats],
                           ["float32"] * 4, [ct.qp for ct in coded], [ct.bitstream for ct in coded], [None] * 4)
    assert sum("decoder" in w for w in seen) == 1
    seen.clear()
    one = [finish_job(spec, n, w, dt, ct.qp, ct.bitstream) for (n, w, dt), ct in zip(mats, coded, strict=True)]
    assert sum("decoder" in w for w in seen) == 4
    for a, b, c in zip(many, one, coded, strict=True):
        assert a.decoded_sha256 == b.decoded_sha256 == c.decoded_sha256
        assert a.rel_error == b.rel_error == c.rel_error
        assert np.array_equal(a.scale, b.scale) and a.recon == b.recon


def test_a_bad_stream_among_batched_checks_is_named(coded):
    from llmcodec.compress import JobSpec, finish_many_job

    rng = np.random.default_rng(0)
    mats = [(rng.standard_normal((64 + 96 * i, 128 + 64 * (i % 3))) * 0.02).astype(np.float32) for i in range(4)]
    streams = [ct.bitstream for ct in coded]
    streams[1] = streams[1][: len(streams[1]) // 3]
    with pytest.raises(CodecError, match="'m1'"):
        finish_many_job(JobSpec("vvc", "default", None, 0.1), [f"m{i}" for i in range(4)], [m.shape for m in mats],
                        [m.copy for m in mats], ["float32"] * 4, [ct.qp for ct in coded], streams, [None] * 4)


def test_frame_layout_is_the_layout_prepare_gives():
    from llmcodec.coder import frame_layout, prepare

    codec = get_codec("vvc")
    for name in ("default", "default-dq", "ai-faster"):
        profile = codec.profile(name)
        for shape in ((64, 128), (100, 37), (576, 1536), (4400, 70)):
            w = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
            assert frame_layout(*shape, codec, profile) == prepare("w", w, codec, profile, None).layout


def test_compress_matrices_checks_small_matrices_in_fewer_decoder_processes(monkeypatch):
    rng = np.random.default_rng(1)
    mats = [(f"s{i}", (rng.standard_normal((64, 128)) * 0.02).astype(np.float32), "float32") for i in range(5)]
    seen = _decoder_runs(monkeypatch)
    out = compress_matrices(mats, CompressSettings(qp=30, workers=1))
    assert [ct.name for ct in out] == [m[0] for m in mats]
    assert sum("decoder" in w for w in seen) == 1


def test_splitter_hands_on_each_piece_once_in_order():
    from llmcodec.codecs.base import Splitter

    data = bytes(range(256)) * 3
    sizes = [5, 300, 1, 462]
    for reuse in (False, True):
        got = []
        sink = Splitter(sizes, lambda k, buf, got=got: got.append((k, bytes(buf))), reuse)
        pos = 0
        while (view := sink.space()) is not None:
            n = min(7, len(view))  # reads of any size, across the pieces' borders
            view[:n] = data[pos : pos + n]
            sink.filled(n)
            pos += n
        assert sink.complete and pos == sum(sizes)
        cuts = np.cumsum([0, *sizes])
        assert got == [(k, data[cuts[k] : cuts[k + 1]]) for k in range(len(sizes))]


def test_streamed_batch_gives_each_tensor_as_it_is_decoded(coded):
    codec = get_codec("vvc")
    profile = codec.profile("default")
    one = [decode_tensor(ct, codec, profile) for ct in coded]
    seen = []
    assert decode_tensors(coded, codec, profile, lambda k, w: seen.append((k, w))) == []
    assert [k for k, _ in seen] == list(range(len(coded)))
    assert all(np.array_equal(one[k], w) for k, w in seen)


def test_a_digest_mismatch_in_a_batch_is_named_and_not_retried(coded):
    codec = get_codec("vvc")
    profile = codec.profile("default")
    bad = list(coded)
    bad[1] = replace(bad[1], decoded_sha256="0" * 64)
    with pytest.raises(CodecError, match="'m1'.*digest mismatch"):
        decode_tensors(bad, codec, profile)


def test_a_truncated_batch_output_is_an_error():
    """A decoder that writes fewer bytes than the streams' layouts need fails the batch."""
    codec = get_codec("vvc")
    profile = codec.profile("default")
    rng = np.random.default_rng(1)
    mats = [(f"t{i}", (rng.standard_normal((64, 128)) * 0.02).astype(np.float32), "float32") for i in range(2)]
    cts = compress_matrices(mats, CompressSettings(qp=30))
    lay = cts[1].layout
    short = replace(lay, tiles_y=lay.tiles_y + 1, rows=lay.rows + lay.tile_h)  # the header asks for a frame more
    with pytest.raises(CodecError, match="bytes where 2 streams need"):
        codec.decode_each([ct.bitstream for ct in cts], [cts[0].layout, short], profile, lambda k, f: None)

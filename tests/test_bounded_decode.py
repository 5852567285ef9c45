"""Class 1 and 3 of issue #33: decoder output is read in chunks and stopped at the declared size,
every size and time a header can influence is capped by fixed limits, and every FFmpeg call
(probe, version, encode, decode) has a timeout and a clear message."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pytest
from helpers_security import (
    fake_ffmpeg,
    load_pieces,
    make_artifact,
    save_pieces,
    set_bitstream,
    small_state,
    use_ffmpeg,
)
from safetensors.torch import save_file

import llmcodec
from llmcodec import artifact, limits
from llmcodec.artifact import ArtifactError
from llmcodec.cli import main
from llmcodec.codecs import base
from llmcodec.codecs.base import CodecError
from llmcodec.codecs.vvc import VVC
from llmcodec.frames import FrameLayout
from llmcodec.sysinfo import ffmpeg_version

pytestmark = pytest.mark.usefixtures("fresh_ffmpeg_cache")  # tests point llmcodec at fake FFmpegs


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary folders llmcodec makes land here, so a test can see what is left behind."""
    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_endless_decoder_output_is_cut_at_the_declared_size(tmp_path, monkeypatch, private_tmp):
    # A decoder that never stops writing: reading must stop at the layout's size, not at memory's end.
    use_ffmpeg(monkeypatch, fake_ffmpeg(tmp_path / "bin", "exec cat /dev/zero"))
    codec = VVC()
    lay = FrameLayout(64, 64, 1, 1, 64, 64, 64, 64)
    t0 = time.monotonic()
    # 64x64 10-bit grey: the default VVC profile's streams are luma only (vvc.MONOCHROME)
    with pytest.raises(CodecError, match=r"wrote more than the 8192 bytes .*does not match its header"):
        codec.decode(b"stream", lay, codec.profile(None))
    assert time.monotonic() - t0 < 10
    assert list(private_tmp.iterdir()) == []


def test_stream_with_more_frames_than_declared_fails_verify_cleanly(tmp_path, private_tmp, capsys):
    # A real bitstream of 12 frames put where the header declares one frame.
    path = make_artifact(tmp_path / "a.llmc")
    tensors, header = load_pieces(path)
    codec = VVC()
    frames = [[np.full((64, 64), 512 + 10 * i, np.uint16)] for i in range(12)]
    set_bitstream(tensors, header, "m0.weight", codec.encode(frames, 30, codec.profile(None)))
    crafted = save_pieces(tmp_path / "crafted.llmc", tensors, header)
    assert main(["verify", str(crafted), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "m0.weight" in err and "wrote more than" in err and "Traceback" not in err
    with pytest.raises(CodecError, match="wrote more than"):
        llmcodec.load_state_dict(crafted)
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize("samples", [0, 10**6, 2**40, 2**62, 2**200])
def test_decode_and_encode_times_are_capped_by_fixed_limits(samples):
    codec = VVC()
    assert 0 < codec.decode_timeout(samples) <= limits.MAX_DECODE_SECONDS
    assert 0 < codec._timeout(samples) <= limits.MAX_ENCODE_SECONDS


def test_huge_declared_shapes_are_refused_by_the_limits(tmp_path):
    path = make_artifact(tmp_path / "a.llmc")
    tensors, header = load_pieces(path)
    e = header["tensors"]["m0.weight"]
    e["quant"] = {"bits": 10, "group": None, "shared_scale": False}  # the sample domain: layout = shape
    for k in ("recon", "col_lo"):
        e.pop(k)
    # 2^17 x 2^16 = 2^33 elements, laid out consistently: over MAX_TENSOR_ELEMENTS
    rows, cols = 2**17, 2**16
    e["shape"] = [rows, cols]
    e["layout"] = {"rows": rows, "cols": cols, "tiles_y": 32, "tiles_x": 8, "tile_h": 4096, "tile_w": 8192,
                   "frame_h": 4096, "frame_w": 8192, "packing": "luma"}
    with pytest.raises(ArtifactError, match="more than 4294967296 elements"):
        artifact.read(save_pieces(tmp_path / "big.llmc", tensors, header))
    # one row per tile, frames padded to 4000+ rows: few elements, an enormous decode
    rows, cols = 2**20, 64
    e["shape"] = [rows, cols]
    e["layout"] = {"rows": rows, "cols": cols, "tiles_y": rows, "tiles_x": 1, "tile_h": 1, "tile_w": 64,
                   "frame_h": 4000, "frame_w": 64, "packing": "luma"}
    with pytest.raises(ArtifactError, match="frames of more than"):
        artifact.read(save_pieces(tmp_path / "tall.llmc", tensors, header))


def test_total_coded_weights_are_capped(tmp_path, monkeypatch):
    path = make_artifact(tmp_path / "a.llmc", small_state(n=3))
    monkeypatch.setattr(limits, "MAX_TOTAL_ELEMENTS", 2 * 64 * 64)
    with pytest.raises(ArtifactError, match="12288 coded weights, over the 8192 limit"):
        artifact.read(path)


def test_decoder_output_memory_error_is_a_codec_error(monkeypatch, tmp_path):
    use_ffmpeg(monkeypatch, fake_ffmpeg(tmp_path / "bin", "exec head -c 8192 /dev/zero"))

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(base, "unpack_raw", no_memory)
    codec = VVC()
    lay = FrameLayout(64, 64, 1, 1, 64, 64, 64, 64)
    with pytest.raises(CodecError, match="not enough memory"):
        codec.decode(b"x", lay, codec.profile(None))


# -- class 3: every FFmpeg call has a timeout ------------------------------------------------------------


@pytest.fixture
def hung_ffmpeg(tmp_path, monkeypatch):
    use_ffmpeg(monkeypatch, fake_ffmpeg(tmp_path / "bin", "exec sleep 60", answer_probes=False))
    monkeypatch.setattr(limits, "PROBE_SECONDS", 0.5)
    monkeypatch.setattr(limits, "MAX_DECODE_SECONDS", 0.5)
    monkeypatch.setattr(limits, "MAX_ENCODE_SECONDS", 0.5)


def test_capability_probe_and_version_query_time_out(hung_ffmpeg):
    t0 = time.monotonic()
    with pytest.raises(CodecError, match=r"codec 'vvc' needs FFmpeg.*did not answer within 0.5 s"):
        VVC().check_available()
    with pytest.raises(CodecError, match=r"version query.*did not answer within 0.5 s"):
        ffmpeg_version()
    assert time.monotonic() - t0 < 10


def test_hung_encode_and_decode_time_out(hung_ffmpeg):
    codec = VVC()
    with pytest.raises(CodecError, match="encoder.*timed out after 0 s|encoder.*timed out after 1 s"):
        codec.encode([[np.zeros((64, 64), np.uint16)]], 30, codec.profile(None))
    with pytest.raises(CodecError, match="decoder timed out"):
        codec.decode(b"x", FrameLayout(64, 64, 1, 1, 64, 64, 64, 64), codec.profile(None))


def test_verify_and_compress_do_not_hang_on_a_silent_ffmpeg(tmp_path, monkeypatch, capsys):
    good = make_artifact(tmp_path / "a.llmc")
    src = tmp_path / "model"
    src.mkdir()
    save_file(small_state(), str(src / "model.safetensors"))
    use_ffmpeg(monkeypatch, fake_ffmpeg(tmp_path / "bin", "exec sleep 60", answer_probes=False))
    monkeypatch.setattr(limits, "PROBE_SECONDS", 0.5)
    t0 = time.monotonic()
    assert main(["verify", str(good), "--quiet"]) == 1
    assert "did not answer within 0.5 s" in capsys.readouterr().err
    assert main(["compress", str(src), str(tmp_path / "o.llmc"), "--qp", "30", "--quiet"]) == 2
    assert "did not answer within 0.5 s" in capsys.readouterr().err
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "o.llmc").exists()


def test_ffmpeg_that_cannot_run_is_a_codec_error(tmp_path, monkeypatch):
    exe = tmp_path / "ffmpeg"
    exe.write_text("not a program")  # not executable
    use_ffmpeg(monkeypatch, exe)
    with pytest.raises(CodecError, match="cannot be run|needs FFmpeg"):
        VVC().check_available()


def test_packed_side_information_count_is_bounded_by_its_bytes(tmp_path):
    # a header may declare many rows; the packed codes must be there before anything is sized by it
    path = make_artifact(tmp_path / "a.llmc")
    tensors, header = load_pieces(path)
    e = header["tensors"]["m0.weight"]
    assert e["quant"].get("packed")
    rows = 2**20
    e["shape"] = [rows, 64]
    lay = e["layout"]
    e["layout"] = {**lay, "rows": 2 * rows, "tiles_y": 2 * rows // lay["tile_h"]}
    with pytest.raises(ArtifactError, match="cannot hold 1048576 codes"):
        artifact.read(save_pieces(tmp_path / "c.llmc", tensors, header))

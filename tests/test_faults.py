"""Faults and bad input: broken codecs, hung encoders, missing FFmpeg, interrupted writes, odd tensors."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import llmcodec
from llmcodec import artifact
from llmcodec.cli import main
from llmcodec.codecs import base, registry
from llmcodec.codecs.base import CodecError
from llmcodec.codecs.vvc import VVC
from llmcodec.compress import CompressSettings, compress_matrices

RNG = np.random.default_rng(0)


def _w(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.02).astype(np.float32)


def _use_codec(monkeypatch, cls) -> str:
    monkeypatch.setitem(registry.CODECS, cls.name, cls)
    return cls.name


# -- a codec that misbehaves is caught right after encoding, naming the tensor ----------------------


class GarbageVVC(VVC):
    """Decodes to noise of the right size."""

    name = "garbage-vvc"

    def decode(self, data, layout, profile):
        frames = super().decode(data, layout, profile)
        rng = np.random.default_rng(1)
        return [[rng.integers(0, 1024, p.shape, dtype=np.uint16) for p in planes] for planes in frames]


class ShiftedVVC(VVC):
    """Decodes to the right frames in the wrong order (as a mixed-up tile order would)."""

    name = "shifted-vvc"

    def decode(self, data, layout, profile):
        frames = super().decode(data, layout, profile)
        return frames[1:] + frames[:1]


class WrongSizeVVC(VVC):
    """Decodes frames 8 columns too narrow."""

    name = "wrongsize-vvc"

    def decode(self, data, layout, profile):
        return [[p[:, :-8] for p in planes] for planes in super().decode(data, layout, profile)]


class ShortReadVVC(VVC):
    """The decoder process returns fewer bytes than the frames need."""

    name = "short-vvc"

    def decode(self, data, layout, profile):
        return base.unpack_raw(b"\0" * 1000, self.pix_fmt(profile), layout.n_frames, layout.frame_h, layout.frame_w, 1)


class CrashVVC(VVC):
    """The encoder exits with an error (an option it does not know)."""

    name = "crash-vvc"

    def encoder_options(self, qp, profile):
        return [*super().encoder_options(qp, profile), "-no_such_option_xyz", "1"]


class SmallFrameVVC(VVC):
    """Largest frame 64x64, so ordinary matrices need several frames (tiling)."""

    name = "small-vvc"
    max_w = 64
    max_h = 64


@pytest.mark.parametrize(
    "cls,msg",
    [
        (GarbageVVC, "not what was encoded"),
        (WrongSizeVVC, "frame of shape"),
        (ShortReadVVC, "decoder returned 1000 bytes"),
        (CrashVVC, "failed \\(exit"),
    ],
)
def test_broken_codec_caught_after_encoding(monkeypatch, cls, msg):
    name = _use_codec(monkeypatch, cls)
    with pytest.raises(CodecError, match=msg) as e:
        compress_matrices([("layers.3.w", _w(64, 96), "float32")], CompressSettings(codec=name, qp=30))
    if cls is not CrashVVC:
        assert "'layers.3.w'" in str(e.value)


class DroppedFrameVVC(VVC):
    """Decodes one frame too few."""

    name = "dropped-vvc"
    max_h = 64

    def decode(self, data, layout, profile):
        return super().decode(data, layout, profile)[:-1]


def test_missing_frame_caught(monkeypatch):
    name = _use_codec(monkeypatch, DroppedFrameVVC)
    with pytest.raises(CodecError, match=r"'big.w'.*expected \d+ frames, got \d+"):
        compress_matrices([("big.w", _w(128, 64), "float32")], CompressSettings(codec=name, qp=30))


def test_swapped_tiles_caught(monkeypatch):
    name = _use_codec(monkeypatch, type("ShiftedSmall", (ShiftedVVC,), {"name": "shifted-small", "max_h": 64}))
    with pytest.raises(CodecError, match="'big.w'.*not what was encoded"):
        compress_matrices([("big.w", _w(192, 64), "float32")], CompressSettings(codec=name, qp=30))


@pytest.mark.parametrize("qp", [20, 45, 63])
def test_plausibility_bound_passes_real_codec(qp):
    """The garbage bound must not reject what the real codec does, up to its worst QP."""
    out = compress_matrices([("m", _w(64, 64, 3), "float32")], CompressSettings(qp=qp))
    assert 0 < out[0].rel_error < 1.5


# -- hung or killed encoders; FFmpeg missing -----------------------------------------------------------


def _fake_ffmpeg(tmp_path, body: str) -> str:
    exe = tmp_path / "fake-ffmpeg"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


class QuickTimeoutVVC(VVC):
    name = "quick-vvc"

    def _timeout(self, samples):
        return 1.0


def test_hung_encoder_times_out_with_stderr(monkeypatch, tmp_path):
    exe = _fake_ffmpeg(tmp_path, 'echo "x265 [warning]: stuck in lookahead" >&2\nexec sleep 60')
    monkeypatch.setattr(base, "ffmpeg_exe", lambda: exe)
    codec = QuickTimeoutVVC()
    frames = [[np.zeros((64, 64), np.uint16)]]
    with pytest.raises(CodecError, match="timed out after 1 s.*stuck in lookahead"):
        codec.encode(frames, 30, codec.profile(None))


def test_killed_encoder_reports_exit(monkeypatch, tmp_path):
    exe = _fake_ffmpeg(tmp_path, 'echo "out of memory" >&2\nkill -9 $$')
    monkeypatch.setattr(base, "ffmpeg_exe", lambda: exe)
    codec = VVC()
    with pytest.raises(CodecError, match="failed \\(exit -9\\): out of memory"):
        codec.encode([[np.zeros((64, 64), np.uint16)]], 30, codec.profile(None))


def test_encoder_stdout_chatter_stays_out_of_the_bitstream(tmp_path, monkeypatch):
    # Like libvvenc: the library prints warnings on stdout while FFmpeg writes the stream.
    exe = _fake_ffmpeg(tmp_path, 'echo "Configuration warning: GOPSize reset"\nfor a; do last="$a"; done\n'
                       'printf STREAM > "$last"')
    monkeypatch.setattr(base, "ffmpeg_exe", lambda: exe)
    assert base.run_ffmpeg(["-f", "vvc", "pipe:1"], b"", 10, "enc", to_file=True) == b"STREAM"
    codec = VVC()
    assert codec.encode([[np.zeros((64, 64), np.uint16)]], 30, codec.profile(None)) == b"STREAM"


def test_timeout_scales_with_tensor_size(monkeypatch):
    seen = []

    def fake_run(args, data, timeout, what, to_file=False, **kw):
        seen.append(timeout)
        return b"x"

    monkeypatch.setattr(base, "run_ffmpeg", fake_run)
    codec = VVC()
    for h, w, n in ((64, 64, 1), (1024, 4096, 1), (1024, 4096, 4)):
        codec.encode([[np.zeros((h, w), np.uint16)]] * n, 30, codec.profile(None))
    assert seen[0] < seen[1] < seen[2]
    assert seen[2] >= 4 * VVC.seconds_per_msample * 1024 * 4096 / 1e6 * 0.99


@pytest.fixture
def no_ffmpeg(monkeypatch):
    import imageio_ffmpeg

    def missing():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    base.ffmpeg_exe.cache_clear()
    base.ffmpeg_capabilities.cache_clear()
    yield
    base.ffmpeg_exe.cache_clear()
    base.ffmpeg_capabilities.cache_clear()


def test_ffmpeg_missing_names_codec_and_fix(no_ffmpeg, tmp_path, capsys):
    with pytest.raises(CodecError, match="codec 'vvc' needs FFmpeg.*imageio-ffmpeg"):
        VVC().check_available()
    src = tmp_path / "m"
    src.mkdir()
    save_file({"w": torch.from_numpy(_w(64, 64))}, str(src / "model.safetensors"))
    assert main(["compress", str(src), str(tmp_path / "o.llmc"), "--qp", "30", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "llmcodec: error: codec 'vvc' needs FFmpeg" in err and "imageio-ffmpeg" in err
    assert not (tmp_path / "o.llmc").exists()


def test_ffmpeg_lacking_encoder_names_codec_and_fix(monkeypatch):
    monkeypatch.setattr(base, "ffmpeg_capabilities", lambda: (frozenset({"libx264"}), frozenset({"vvc"})))
    with pytest.raises(CodecError, match="codec 'vvc' needs the FFmpeg encoder 'libvvenc'.*pip install"):
        VVC().check_available()
    monkeypatch.setattr(base, "ffmpeg_capabilities", lambda: (frozenset({"libvvenc"}), frozenset()))
    with pytest.raises(CodecError, match="decoder 'vvc'.*pip install"):
        VVC().check_available()


# -- interrupted writes and runs leave nothing that looks finished ---------------------------------------


def _small_art():
    state = {"a.w": torch.from_numpy(_w(64, 64)), "a.b": torch.zeros(64)}
    return llmcodec.compress_state_dict(state, CompressSettings(qp=30))


def test_failed_write_leaves_no_file(monkeypatch, tmp_path):
    art = _small_art()

    def disk_full(filename, tensors, metadata):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact, "write_safetensors", disk_full)
    with pytest.raises(OSError, match="No space"):
        llmcodec.save(art, tmp_path / "out.llmc")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_previous_file(monkeypatch, tmp_path):
    art = _small_art()
    out = tmp_path / "out.llmc"
    llmcodec.save(art, out)
    before = out.read_bytes()

    def interrupted(filename, tensors, metadata):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "write_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        llmcodec.save(art, out)
    assert [p.name for p in tmp_path.iterdir()] == ["out.llmc"] and out.read_bytes() == before


class InterruptVVC(VVC):
    """Ctrl-C arrives while the third matrix is being encoded."""

    name = "interrupt-vvc"
    calls = 0

    def encode(self, frames, qp, profile):
        type(self).calls += 1
        if type(self).calls == 3:
            raise KeyboardInterrupt
        return super().encode(frames, qp, profile)


def test_ctrl_c_during_compression_leaves_no_output(monkeypatch, tmp_path, capsys):
    name = _use_codec(monkeypatch, InterruptVVC)
    src = tmp_path / "m"
    src.mkdir()
    save_file({f"l{i}.w": torch.from_numpy(_w(64, 64, i)) for i in range(4)}, str(src / "model.safetensors"))
    out = tmp_path / "o" / "out.llmc"
    rc = main(["compress", str(src), str(out), "--codec", name, "--qp", "30", "--quiet", "--workers", "1"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    # Nothing that looks finished: no artifact, no temporary file (a --resume work folder may stay).
    assert not out.exists()
    assert not out.parent.exists() or [p for p in out.parent.iterdir() if p.is_file()] == []


# -- bad and unusual input -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_refused_naming_tensor_unless_kept(bad):
    w = torch.from_numpy(_w(64, 64))
    w[5, 7] = bad
    state = {"ok.w": torch.from_numpy(_w(64, 64, 1)), "bad.w": w}
    with pytest.raises(ValueError, match="'bad.w' contains NaN or Inf.*--keep-nonfinite"):
        llmcodec.compress_state_dict(state, CompressSettings(qp=30))
    art = llmcodec.compress_state_dict(state, CompressSettings(qp=30, keep_nonfinite=True))
    assert set(art.coded) == {"ok.w"} and set(art.raw) == {"bad.w"}
    assert torch.equal(art.raw["bad.w"].nan_to_num(0.5), w.nan_to_num(0.5))


def test_keep_nonfinite_cli(tmp_path, capsys):
    src = tmp_path / "m"
    src.mkdir()
    w = torch.from_numpy(_w(64, 64))
    w[0, 0] = float("nan")
    save_file({"x.w": w, "y.w": torch.from_numpy(_w(64, 64, 2))}, str(src / "model.safetensors"))
    out = tmp_path / "o.llmc"
    assert main(["compress", str(src), str(out), "--qp", "30", "--quiet"]) == 2
    assert "'x.w' contains NaN" in capsys.readouterr().err and not out.exists()
    assert main(["compress", str(src), str(out), "--qp", "30", "--quiet", "--keep-nonfinite"]) == 0
    state = llmcodec.load_state_dict(out)
    assert torch.isnan(state["x.w"][0, 0]) and torch.equal(state["x.w"][1:], w[1:])


@pytest.mark.parametrize("value", [0.0, 0.25, -3.5])
def test_constant_matrix_restores_exactly(value):
    w = torch.full((64, 80), value)
    ct = llmcodec.compress_tensor(w, CompressSettings(qp=40, compand=1.0))
    assert ct.rel_error == 0.0
    assert torch.equal(llmcodec.decompress_tensor(ct), w)
    # companded, the stored fp16 offset holds |value|^p, so the value comes back to fp16 precision
    ct = llmcodec.compress_tensor(w, CompressSettings(qp=40, compand=0.8))
    assert ct.compand is not None and ct.rel_error < 1e-3
    assert torch.allclose(llmcodec.decompress_tensor(ct), w, rtol=1e-3, atol=0)


def test_tiny_odd_and_tiled_matrices(monkeypatch):
    settings = CompressSettings(qp=20, min_dim=16)
    state = {
        "tiny.w": torch.from_numpy(_w(16, 20, 1)),  # far below the 64x64 smallest frame
        "odd.w": torch.from_numpy(_w(37, 101, 2)),
        "vec": torch.from_numpy(_w(1, 50, 3)[0]),  # 1-D: kept exactly
        "conv": torch.from_numpy(_w(4, 30, 4)).reshape(4, 3, 10),  # 3-D of 3 x 10 matrices: kept
        "thin.w": torch.from_numpy(_w(8, 300, 5)),  # under min_dim: kept
    }
    art = llmcodec.compress_state_dict(state, settings)
    assert set(art.coded) == {"tiny.w", "odd.w"} and set(art.raw) == {"vec", "conv", "thin.w"}
    name = _use_codec(monkeypatch, SmallFrameVVC)
    # 2 x 2 tiles in the sample domain (libvvenc intermittently returned an empty stream for 12
    # frames of 64x64); in the coefficient domain 128x128 padded blocks on a checkerboard, 4 x 4 tiles
    big = torch.from_numpy(_w(100, 120, 6))
    for profile, tiles, bound in (("ai-faster-dq", 2 * 2, 0.05), ("ai-faster-coef", 4 * 4, 0.1)):
        ct = llmcodec.compress_tensor(big, CompressSettings(codec=name, qp=20, profile=profile), name="big.w")
        assert ct.layout.n_frames == tiles and ct.layout.frame_w <= 64 and ct.layout.frame_h <= 64
        back = llmcodec.decompress_tensor(ct, codec=name, profile=profile)
        assert back.shape == big.shape and ((back - big).norm() / big.norm()) < bound
    restored = llmcodec.api.restore_state_dict(art)
    for n, t in state.items():
        assert restored[n].shape == t.shape
        if n in art.raw:  # float32 kept as fp16, restored as float32
            assert restored[n].dtype == t.dtype and torch.equal(restored[n], t.half().float())
        else:  # the default (coefficient-domain) profile at QP 20: about 4 bits per weight
            assert ((restored[n] - t).norm() / t.norm()) < 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_source_dtypes_round_trip(dtype):
    w = torch.from_numpy(_w(64, 96, 7)).to(dtype)
    ct = llmcodec.compress_tensor(w, CompressSettings(qp=20))
    back = llmcodec.decompress_tensor(ct)
    assert back.dtype == dtype and ct.dtype == str(dtype).removeprefix("torch.")
    # The error after restoring to the source dtype is the one measured at compression (in float32)
    # plus at most the dtype's own rounding (bf16: 8 significant bits, ~0.3 % relative), added in quadrature.
    err = float((back.float() - w.float()).norm() / w.float().norm())
    assert 0 < ct.rel_error < 0.1 and abs(err - ct.rel_error) < 0.003
    raw = torch.from_numpy(_w(4, 7, 8)[0]).to(dtype)  # kept exactly, bit for bit, with exact_kept
    art = llmcodec.compress_state_dict({"w": w, "b": raw}, CompressSettings(qp=20, exact_kept=True))
    assert torch.equal(llmcodec.api.restore_state_dict(art)["b"], raw)
    art = llmcodec.compress_state_dict({"w": w, "b": raw}, CompressSettings(qp=20))  # else at 16 bits
    b = llmcodec.api.restore_state_dict(art)["b"]
    assert b.dtype == dtype and torch.equal(b, raw.half().to(dtype) if dtype == torch.float32 else raw)


def test_tied_weights_coded_once(tmp_path):
    emb = torch.from_numpy(_w(64, 96, 8))
    state = {"model.embed.w": emb, "layers.0.w": torch.from_numpy(_w(64, 96, 9)), "lm_head.w": emb}
    art = llmcodec.compress_state_dict(state, CompressSettings(qp=30, include_embeddings=True))
    assert set(art.coded) == {"model.embed.w", "layers.0.w"} and art.aliases == {"lm_head.w": "model.embed.w"}
    llmcodec.save(art, tmp_path / "t.llmc")
    back = llmcodec.load_state_dict(tmp_path / "t.llmc")
    assert list(back) == list(state) and torch.equal(back["lm_head.w"], back["model.embed.w"])
    # equal values in separate storage are separate tensors, not ties
    art2 = llmcodec.compress_state_dict({"a.w": emb, "b.w": emb.clone()}, CompressSettings(qp=30))
    assert art2.aliases == {} and set(art2.coded) == {"a.w", "b.w"}
    # a transposed view shares storage, offset and (square) shape, but is a different tensor
    sq = torch.from_numpy(_w(64, 64, 10))
    art3 = llmcodec.compress_state_dict({"a.w": sq, "b.w": sq.T}, CompressSettings(qp=20))
    assert art3.aliases == {}
    back = llmcodec.api.restore_state_dict(art3)
    assert ((back["b.w"] - sq.T).norm() / sq.norm()) < 0.1


def test_unreachable_bpw_says_what_is_reachable(tmp_path, capsys):
    src = tmp_path / "m"
    src.mkdir()
    save_file({"w": torch.from_numpy(_w(64, 64))}, str(src / "model.safetensors"))
    for bpw, why in (("0.2", "below the side information"), ("0.3", "out of reach")):
        # over the coded matrix alone: the whole file of so small a model is mostly its header
        argv = ["compress", str(src), str(tmp_path / "o.llmc"), "--bpw", bpw, "--budget", "coded", "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        # says so, and names the nearest reachable rate as a number
        assert re.search(rf"{bpw} bits per weight is {why}.*\(?\d+\.\d+ bits per weight", err), err
        assert not (tmp_path / "o.llmc").exists()


def test_no_stray_files_after_a_good_run(tmp_path):
    art = _small_art()
    llmcodec.save(art, tmp_path / "a.llmc")
    assert sorted(os.listdir(tmp_path)) == ["a.llmc"]


def test_real_ctrl_c_stops_promptly_and_leaves_no_output(tmp_path):
    """SIGINT to the process group (what a terminal's Ctrl-C does) while encoders run."""
    import signal
    import subprocess
    import sys
    import time

    real = base.ffmpeg_exe()
    marker = tmp_path / "encoding"
    exe = _fake_ffmpeg(
        tmp_path,
        f'case "$*" in *-encoders*|*-decoders*|*-version*) exec "{real}" "$@";; esac\n'
        f'touch "{marker}"\nexec sleep 60',
    )
    src = tmp_path / "m"
    src.mkdir()
    save_file({f"l{i}.w": torch.from_numpy(_w(64, 64, i)) for i in range(6)}, str(src / "model.safetensors"))
    out = tmp_path / "out" / "o.llmc"
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": exe}
    cmd = [sys.executable, "-m", "llmcodec.cli", "compress", str(src), str(out), "--qp", "30", "--quiet"]
    # As in a terminal, Ctrl-C must reach the process: a shell running tests in the background
    # (``cmd &`` without job control) hands its children SIGINT ignored, which they would inherit.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        t0 = time.time()
        while not marker.exists() and proc.poll() is None and time.time() - t0 < 60:
            time.sleep(0.1)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "encoder never started"
        os.killpg(proc.pid, signal.SIGINT)
        t1 = time.time()
        rc = proc.wait(timeout=30)
        assert time.time() - t1 < 15  # stops without waiting for the remaining encodes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr.read()
    assert rc == 130 and "interrupted" in err, err
    assert not out.exists() and not [p for p in tmp_path.rglob("*.tmp")]


def test_empty_encoder_output_is_retried_then_refused(monkeypatch):
    import llmcodec.codecs.base as base
    from llmcodec.codecs import get_codec

    codec = get_codec("vvc")
    profile = codec.profile(None)
    frames = [[np.zeros((64, 64), np.uint16)]]
    calls = []

    def flaky(args, data, timeout, what, to_file=False, **kw):
        calls.append(1)
        return b"" if len(calls) < 3 else b"stream"

    monkeypatch.setattr(base, "run_ffmpeg", flaky)
    assert codec.encode(frames, 30, profile) == b"stream" and len(calls) == 3
    monkeypatch.setattr(base, "run_ffmpeg", lambda *a, **k: b"")
    with pytest.raises(base.CodecError, match="empty bitstream 4 times"):
        codec.encode(frames, 30, profile)


def test_encoder_started_after_the_interrupt_is_stopped(monkeypatch, tmp_path):
    """A worker that starts FFmpeg after a Ctrl-C went out (the signal never reached it) is stopped
    through its job's stop event instead of running to the end."""
    import threading
    import time

    from llmcodec.executors import LocalExecutor

    exe = _fake_ffmpeg(tmp_path, "exec sleep 60")
    monkeypatch.setattr(base, "ffmpeg_exe", lambda: exe)
    started = threading.Event()

    def job() -> None:
        started.set()
        base.run_ffmpeg(["-i", "pipe:0", "pipe:1"], b"", 120, "late encoder")

    with LocalExecutor(1) as ex:
        timer = threading.Timer(0.5, ex._stop.set)  # what a Ctrl-C seen by another worker does
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(base.EncoderInterrupted, match="late encoder stopped: interrupted"):
            ex.map(job, [()])
        assert started.is_set() and time.monotonic() - t0 < 10

"""The codec back-end interface: frames of integers in, a bitstream out, and back.

A back end is one subclass of :class:`FFmpegCodec` that names its FFmpeg encoder, raw stream
format, pixel formats, QP range and profiles, and turns a QP and a profile into encoder options.
Everything else (pixel packing, running FFmpeg, checking the decoded size) is shared here.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

from .. import limits
from ..frames import FrameLayout
from ..ratemodel import RateModel

LOSSLESS = None  # a QP of None asks for the codec's lossless mode


class CodecError(RuntimeError):
    """An encoder or decoder failed, is missing, or returned something unusable."""


class EncoderInterrupted(CodecError):
    """FFmpeg was stopped by SIGINT (a Ctrl-C to the process group), not by a codec failure."""


# The stop event of the executor job running in this thread (``executors.LocalExecutor``): its
# FFmpeg processes are killed once it is set, also those started after the Ctrl-C went out.
job_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("llmcodec_job_stop", default=None)

# FFmpeg exits 255 after a SIGINT it caught; a child killed outright by it reports -SIGINT.
_SIGINT_EXITS = (255, -signal.SIGINT)


@dataclass(frozen=True)
class Profile:
    """Encoder settings that are not the QP: preset, GOP structure, pixel format, plane packing."""

    name: str
    preset: str | None = None
    intra: bool = True  # all-intra; False lets the encoder predict between frames (tiles)
    pix_fmt: str | None = None  # None: the codec's default
    packing: str = "luma"
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # extra FFmpeg options
    # Cap on the frame height: a matrix taller than this becomes several frames (tiles of rows),
    # which is what gives inter prediction something to predict from. None: the codec's limit.
    max_frame_h: int | None = None
    # The options force one transform of this size on a block grid aligned with the frame: the
    # matrix is then coded in the codec's coefficient domain (coefdomain.py). None: sample domain.
    coef_block: int | None = None
    # Coefficient domain: how many of each block's coefficient columns carry weights; the rest are
    # zero (coefdomain.place). None: all of them.
    coef_cols: int | None = None


# pixel format -> (bit depth, chroma subsampling or None for grey)
PIX_FMTS: dict[str, tuple[int, tuple[int, int] | None]] = {
    "gray": (8, None),
    "gray10le": (10, None),
    "gray12le": (12, None),
    "gray16le": (16, None),
    "yuv420p": (8, (2, 2)),
    "yuv420p10le": (10, (2, 2)),
    "yuv420p12le": (12, (2, 2)),
    "yuv444p": (8, (1, 1)),
    "yuv444p10le": (10, (1, 1)),
    "yuv444p12le": (12, (1, 1)),
}


def bit_depth(pix_fmt: str) -> int:
    return PIX_FMTS[pix_fmt][0]


def _chroma_shape(pix_fmt: str, h: int, w: int) -> tuple[int, int] | None:
    sub = PIX_FMTS[pix_fmt][1]
    return None if sub is None else (h // sub[0], w // sub[1])


def pack_raw(frames: list[list[np.ndarray]], pix_fmt: str) -> bytes:
    """Frames (lists of planes) -> raw planar video bytes; missing chroma planes are mid-grey."""
    depth = bit_depth(pix_fmt)
    dtype = np.dtype("<u2") if depth > 8 else np.dtype("u1")
    mid = 1 << (depth - 1)
    chunks = []
    for planes in frames:
        h, w = planes[0].shape
        cshape = _chroma_shape(pix_fmt, h, w)
        chunks.append(planes[0].astype(dtype, copy=False).tobytes())
        if cshape is None:
            continue
        for p in planes[1:3] if len(planes) == 3 else (None, None):
            if p is None:
                chunks.append(np.full(cshape, mid, dtype=dtype).tobytes())
            elif p.shape != cshape:
                raise ValueError(f"chroma plane {p.shape} does not fit {pix_fmt} ({cshape})")
            else:
                chunks.append(p.astype(dtype, copy=False).tobytes())
    return b"".join(chunks)


def raw_frame_bytes(pix_fmt: str, h: int, w: int) -> int:
    """Bytes of one raw planar frame of ``pix_fmt`` (what a decoder writes per frame)."""
    cshape = _chroma_shape(pix_fmt, h, w)
    samples = h * w + (0 if cshape is None else 2 * cshape[0] * cshape[1])
    return samples * (2 if bit_depth(pix_fmt) > 8 else 1)


def unpack_raw(data: bytes, pix_fmt: str, n: int, h: int, w: int, planes: int) -> list[list[np.ndarray]]:
    """Raw planar video bytes -> frames with the first ``planes`` planes of each."""
    depth = bit_depth(pix_fmt)
    dtype = np.dtype("<u2") if depth > 8 else np.dtype("u1")
    cshape = _chroma_shape(pix_fmt, h, w)
    sizes = [h * w] + ([] if cshape is None else [cshape[0] * cshape[1]] * 2)
    per_frame = raw_frame_bytes(pix_fmt, h, w)
    if len(data) != n * per_frame:
        raise CodecError(
            f"decoder returned {len(data)} bytes where {n} frames of {w}x{h} {pix_fmt} need {n * per_frame}"
        )
    arr = np.frombuffer(data, dtype=dtype)
    frames, pos = [], 0
    for _ in range(n):
        out = []
        for i, size in enumerate(sizes):
            shape = (h, w) if i == 0 else cshape
            if i < planes:
                out.append(arr[pos : pos + size].reshape(shape).astype(np.uint16, copy=False))  # no copy on LE
            pos += size
        frames.append(out)
    return frames


@functools.cache
def ffmpeg_exe() -> str:
    """The FFmpeg that imageio-ffmpeg ships (it has libvvenc); a system one is too old for VVC."""
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - a dependency
        raise CodecError("FFmpeg not found: install the Python package 'imageio-ffmpeg'") from e
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise CodecError(f"FFmpeg not found ({e}): reinstall the Python package 'imageio-ffmpeg'") from e


@functools.cache
def ffmpeg_capabilities() -> tuple[frozenset[str], frozenset[str]]:
    """Names of the encoders and decoders this FFmpeg has."""
    found: list[set[str]] = []
    for kind in ("-encoders", "-decoders"):
        out = ffmpeg_query(["-hide_banner", kind], f"the FFmpeg capability probe ({kind})")
        names = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
                names.add(parts[1])
        found.append(names)
    return frozenset(found[0]), frozenset(found[1])


def ffmpeg_query(args: list[str], what: str) -> str:
    """A quick FFmpeg query (``-encoders``, ``-version``): its stdout, or a CodecError if it does not
    answer within ``limits.PROBE_SECONDS``."""
    exe = ffmpeg_exe()
    try:
        res = subprocess.run(
            [exe, *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=limits.PROBE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CodecError(
            f"{what}: {exe} did not answer within {limits.PROBE_SECONDS:g} s; check that this FFmpeg works "
            "(pip install -U imageio-ffmpeg, or IMAGEIO_FFMPEG_EXE pointing to a working one)"
        ) from None
    except OSError as e:
        raise CodecError(f"{what}: {exe} cannot be run ({e})") from None
    return res.stdout.decode(errors="replace")


@functools.cache
def _clean_stale_temporaries() -> None:
    """Once per process: remove encoder temporaries (``llmcodec-PID-*``) of processes that no longer
    run (a kill -9 leaves them in the system's temporary folder)."""
    from ..outputs import clean_stale

    with contextlib.suppress(OSError):
        clean_stale(Path(tempfile.gettempdir()), "llmcodec", sep="-")


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        proc.kill()


def run_ffmpeg(
    args: list[str],
    data: bytes,
    timeout: float,
    what: str,
    to_file: bool = False,
    max_out: int | None = None,
    cancel: threading.Event | None = None,
    sink: Splitter | None = None,
) -> bytes:
    """Run FFmpeg with ``data`` on stdin and return what it writes to ``pipe:1``.

    ``to_file``: FFmpeg writes that output to a temporary file instead. Encoders need it because
    their libraries print to stdout too: libvvenc's "Configuration warning" lines (multi-frame
    input) landed at the end of the bitstream, or were all of it when the encoder gave up.
    The output is read in chunks as it comes; ``max_out``: FFmpeg is killed as soon as it writes
    more bytes than that (a decoder whose stream holds more frames than its header says).
    ``sink``: the output goes there piece by piece (``Splitter``) instead of being returned.
    A hung process is killed after ``timeout`` seconds (or when ``cancel`` is set); errors carry
    the end of its stderr.
    """
    if to_file:
        _clean_stale_temporaries()
    tmp = tempfile.mkdtemp(prefix=f"llmcodec-{os.getpid()}-") if to_file else None
    try:
        if tmp is not None:
            out = str(Path(tmp) / "out")
            args = [out if a == "pipe:1" else a for a in args]
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args]
        # to a file: stdout carries only the libraries' chatter, read and dropped (max_out 0)
        code, stdout, err = _stream(cmd, data, timeout, what, 0 if tmp is not None else max_out, cancel, sink)
        if code != 0:
            kind = EncoderInterrupted if code in _SIGINT_EXITS else CodecError
            raise kind(f"{what} failed (exit {code}): {err or '(no message)'}")
        if tmp is None:
            return stdout
        f = Path(tmp) / "out"
        return f.read_bytes() if f.is_file() else b""
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class Splitter:
    """Cuts a decoder's output into pieces of known sizes, read straight into one buffer per piece,
    and hands each piece to ``done(k, buffer)`` as soon as it is complete (while the decoder goes on),
    so a process decoding many streams holds one stream's output at a time."""

    def __init__(self, sizes: Sequence[int], done: Callable[[int, np.ndarray], None], reuse: bool = False):
        """``reuse``: one buffer serves every piece in turn (``done`` must not keep what it gets)."""
        self.sizes, self.done = list(sizes), done
        self.k, self.pos = 0, 0
        self._whole = np.empty(max(self.sizes), np.uint8) if reuse and self.sizes else None
        self.buf = self._buffer(0)

    def _buffer(self, k: int) -> np.ndarray:
        if k >= len(self.sizes):
            return np.empty(0, np.uint8)
        if self._whole is not None:
            return self._whole[: self.sizes[k]]
        return np.empty(self.sizes[k], np.uint8)  # not zeroed: every byte is read into before use

    def space(self) -> memoryview | None:
        """Where the next bytes go, or None once every piece is complete."""
        return None if self.complete else memoryview(self.buf)[self.pos :]

    def filled(self, n: int) -> None:
        self.pos += n
        if self.pos == self.sizes[self.k]:
            buf, k = self.buf, self.k
            self.k, self.pos = k + 1, 0
            self.buf = self._buffer(k + 1)
            self.done(k, buf)

    @property
    def complete(self) -> bool:
        return self.k >= len(self.sizes)


def _read_into(proc, sink: Splitter, stop_reason: list[str]) -> None:
    """Read ``proc``'s stdout into ``sink``; more bytes than its pieces hold is an overflow."""
    while True:
        view = sink.space()
        if view is None:
            if proc.stdout.read1(1):
                stop_reason.append("overflow")
                _kill(proc)
            return
        n = proc.stdout.readinto1(view[: limits.READ_CHUNK])
        if not n:
            return
        sink.filled(n)


def _stream(
    cmd, data: bytes, timeout: float, what: str, max_out: int | None, cancel: threading.Event | None,
    sink: Splitter | None = None,
):
    """Run ``cmd``: feed stdin, read stdout in chunks (kept unless ``max_out`` is 0; into ``sink``
    if given), keep the end of stderr; kill it on timeout, cancel or output beyond ``max_out`` (or
    beyond ``sink``'s pieces). Returns (exit code, stdout, stderr tail)."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise CodecError(f"{what}: FFmpeg ({cmd[0]}) cannot be run: {e}") from None
    if max_out != 0 and fcntl is not None and hasattr(fcntl, "F_SETPIPE_SZ"):  # a decoder's output: fewer, larger reads
        with contextlib.suppress(OSError):
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, limits.READ_CHUNK)
    err_tail = bytearray()
    stop_reason: list[str] = []
    finished = threading.Event()

    def feed() -> None:
        try:
            view = memoryview(data)
            for i in range(0, len(view), limits.READ_CHUNK):
                proc.stdin.write(view[i : i + limits.READ_CHUNK])
        except (BrokenPipeError, OSError, ValueError):
            pass  # the process exited or was killed: its exit code and stderr say why
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

    def drain_err() -> None:
        for chunk in iter(lambda: proc.stderr.read1(65536), b""):
            err_tail.extend(chunk)
            del err_tail[: max(0, len(err_tail) - limits.STDERR_TAIL)]

    interrupted = job_stop.get()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not finished.wait(0.05):
            if time.monotonic() > deadline:
                stop_reason.append("timeout")
            elif cancel is not None and cancel.is_set():
                stop_reason.append("cancel")
            elif interrupted is not None and interrupted.is_set():
                stop_reason.append("interrupt")
            else:
                continue
            _kill(proc)
            return

    threads = [threading.Thread(target=f, daemon=True) for f in (feed, drain_err, watch)]
    for t in threads:
        t.start()
    out = bytearray()
    keep = max_out != 0
    try:
        if sink is not None:
            _read_into(proc, sink, stop_reason)
        else:
            while True:
                chunk = proc.stdout.read1(limits.READ_CHUNK)
                if not chunk:
                    break
                if keep:
                    if max_out is not None and len(out) + len(chunk) > max_out:
                        stop_reason.append("overflow")
                        _kill(proc)
                        break
                    out.extend(chunk)
        proc.wait()
    except MemoryError:
        _kill(proc)
        proc.wait()
        out = bytearray()
        raise CodecError(f"{what}: not enough memory to hold its output") from None
    finally:
        finished.set()
        if proc.poll() is None:  # an exception (Ctrl-C) on the way out: no orphaned FFmpeg
            _kill(proc)
            proc.wait()
        for t in threads:
            t.join(timeout=5)
        for f in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                f.close()
    err = err_tail.decode(errors="replace").strip()[-2000:]
    if "timeout" in stop_reason:
        raise CodecError(f"{what} timed out after {timeout:.0f} s; stderr: {err or '(empty)'}")
    if "cancel" in stop_reason:
        raise CodecError(f"{what} stopped: another tensor failed first")
    if "interrupt" in stop_reason:
        raise EncoderInterrupted(f"{what} stopped: interrupted")
    if "overflow" in stop_reason:
        raise CodecError(
            f"{what} wrote more than the {max_out if sink is None else sum(sink.sizes)} bytes the header's frame "
            "layout holds (stopped there): "
            "the bitstream does not match its header"
        )
    return proc.returncode, out, err


class FFmpegCodec:
    """Base of every back end. Subclasses set the class attributes and ``encoder_options``."""

    name: ClassVar[str]
    encoder: ClassVar[str]  # FFmpeg encoder name
    decoder: ClassVar[str | None] = None  # FFmpeg decoder name (None: FFmpeg's default for fmt)
    fmt: ClassVar[str]  # raw stream format for -f
    demuxer: ClassVar[str | None] = None  # input format when decoding, if not ``fmt`` (image pipes)
    pix_fmts: ClassVar[tuple[str, ...]]  # accepted input formats; the first is the default
    qp_range: ClassVar[tuple[int, int]]  # (best quality, worst quality)
    # The best QP of coefficient-domain profiles where it is below qp_range's (None: qp_range's).
    coef_qp_floor: ClassVar[int | None] = None
    align: ClassVar[int] = 8
    min_size: ClassVar[int] = 64
    max_w: ClassVar[int] = 8192
    max_h: ClassVar[int] = 4320
    lossless: ClassVar[bool] = False
    # What the integer "QP" means for this codec (image coders map a quality index to their own knob).
    qp_meaning: ClassVar[str] = "the encoder's quantization parameter"
    profiles: ClassVar[dict[str, Profile]]
    default_profile: ClassVar[str] = "default"
    # (profile, bits per weight): the default profile from that budget up (None: one default)
    high_rate_profile: ClassVar[tuple[str, float] | None] = None
    # the default profile of lossless coding when ``default`` codes in the coefficient domain (None: default)
    lossless_profile: ClassVar[str | None] = None
    # Seconds allowed per million samples before an encoder is considered hung (plus a floor).
    seconds_per_msample: ClassVar[float] = 60.0
    # QP steps per doubling of the quantizer step (6 in H.264/HEVC/VVC); equal-error allocation uses it.
    qp_per_octave: ClassVar[float] = 6.0
    # The quantizer as ratemodel.py sees it in the coefficient domain: rate control predicts each
    # tensor's rate from it instead of coding row samples (None: samples are coded).
    rate_model: ClassVar[RateModel | None] = None
    empty_retries: ClassVar[int] = 3  # runs again when an encoder exits 0 but writes nothing
    # Raw streams of this format decode back to back in one decoder process (``decode_many``):
    # Annex-B elementary streams each start with their own parameter sets.
    concat_decode: ClassVar[bool] = False

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    # -- what a subclass provides -------------------------------------------------------------
    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------------
    def profile(self, name: str | None) -> Profile:
        name = name or self.default_profile
        if name not in self.profiles:
            raise ValueError(
                f"codec {self.name!r} has no profile {name!r}; choose one of {', '.join(sorted(self.profiles))}"
            )
        return self.profiles[name]

    def profile_for(self, name: str | None, bpw: float | None, lossless: bool = False) -> Profile:
        """The profile named, or with none the default for a budget of ``bpw`` bits per weight (for
        ``lossless``: ``lossless_profile`` where the default codes in the coefficient domain)."""
        if name is None and lossless and self.lossless_profile:
            name = self.lossless_profile
        if name is None and bpw is not None and self.high_rate_profile and bpw >= self.high_rate_profile[1]:
            name = self.high_rate_profile[0]
        return self.profile(name)

    def qp_limits(self, profile: Profile) -> tuple[int, int]:
        """(best, worst) QP the encoder takes with ``profile``: ``qp_range``, or ``coef_qp_floor`` as the
        best in the coefficient domain."""
        lo, hi = min(self.qp_range), max(self.qp_range)
        if profile.coef_block is not None and self.coef_qp_floor is not None:
            lo = min(lo, self.coef_qp_floor)
        return lo, hi

    def pix_fmt(self, profile: Profile) -> str:
        return profile.pix_fmt or self.pix_fmts[0]

    def decoded_pix_fmt(self, profile: Profile) -> str:
        """The pixel format the decoder writes: the input's, unless the profile's options make the
        stream carry fewer planes (a subclass says so)."""
        return self.pix_fmt(profile)

    def sample_bits(self, profile: Profile) -> int:
        return bit_depth(self.pix_fmt(profile))

    def plan(self, rows: int, cols: int, profile: Profile) -> FrameLayout:
        from ..frames import plan_layout

        return plan_layout(
            rows,
            cols,
            align=self.align,
            min_size=self.min_size,
            max_w=self.max_w,
            max_h=max(self.min_size, min(self.max_h, profile.max_frame_h or self.max_h)),
            packing=profile.packing,
            tile=2 * profile.coef_block if profile.coef_block else 1,  # checkerboard phase (coefdomain.spread)
        )

    def check_available(self) -> None:
        try:
            enc, dec = ffmpeg_capabilities()
        except (CodecError, OSError) as e:  # no FFmpeg at all, or one that does not run
            raise CodecError(
                f"codec {self.name!r} needs FFmpeg with the encoder {self.encoder!r}, and none could be run: {e}"
            ) from None
        install = "pip install -U imageio-ffmpeg (its FFmpeg has every codec llmcodec uses)"
        if self.encoder not in enc:
            raise CodecError(
                f"codec {self.name!r} needs the FFmpeg encoder {self.encoder!r}, which {ffmpeg_exe()} lacks; "
                f"{install}"
            )
        if self.decoder is not None and self.decoder not in dec:
            raise CodecError(
                f"codec {self.name!r} needs the FFmpeg decoder {self.decoder!r}, which {ffmpeg_exe()} lacks; "
                f"{install}"
            )

    # Set by a caller that runs many decodes at once: running ones are stopped when it is set.
    cancel_event: threading.Event | None = None

    def _timeout(self, samples: int) -> float:
        return min(limits.MAX_ENCODE_SECONDS, 30.0 + self.seconds_per_msample * samples / 1e6)

    def decode_timeout(self, samples: int) -> float:
        """Seconds a decode of ``samples`` samples may take: a quarter of the encoder's, capped by a
        fixed limit whatever a header declares."""
        return min(limits.MAX_DECODE_SECONDS, self._timeout(samples) / 4)

    def encode(self, frames: list[list[np.ndarray]], qp: int | None, profile: Profile) -> bytes:
        if qp is LOSSLESS and not self.lossless:
            raise ValueError(f"codec {self.name!r} has no lossless mode")
        lo, hi = self.qp_limits(profile)
        if qp is not None and not lo <= qp <= hi:
            raise ValueError(f"QP {qp} is outside {self.name}'s range {(lo, hi)} for profile {profile.name!r}")
        h, w = frames[0][0].shape
        pix_fmt = self.pix_fmt(profile)
        raw = pack_raw(frames, pix_fmt)
        args = [
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-s",
            f"{w}x{h}",
            "-r",
            "25",
            "-i",
            "pipe:0",
            "-c:v",
            self.encoder,
            *self.encoder_options(qp, profile),
            "-f",
            self.fmt,
            "pipe:1",
        ]
        what = f"{self.name} encoder ({self.encoder})"
        # libvvenc now and then exits 0 with an empty stream on inputs of 9+ frames (docs/research-log.md):
        # the encoders are deterministic, so running again gives the stream it should have.
        for _ in range(self.empty_retries + 1):
            timeout = self._timeout(h * w * len(frames))
            out = run_ffmpeg(args, raw, timeout, what, to_file=True, cancel=self.cancel_event)
            if out:
                return out
        raise CodecError(f"{what} produced an empty bitstream {self.empty_retries + 1} times in a row")

    def decode(self, data: bytes, layout: FrameLayout, profile: Profile) -> list[list[np.ndarray]]:
        pix_fmt = self.decoded_pix_fmt(profile)
        # One decoder thread: FFmpeg's native vvc decoder gave different samples from run to run
        # with its default frame/slice threading (docs/research-log.md).
        args = ["-threads", "1", "-f", self.demuxer or self.fmt]
        if self.decoder:
            args += ["-c:v", self.decoder]
        args += ["-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
        h, w, n = layout.frame_h, layout.frame_w, layout.n_frames
        what = f"{self.name} decoder"
        size = n * raw_frame_bytes(pix_fmt, h, w)
        if size > limits.MAX_DECODED_BYTES:
            raise CodecError(f"{what}: {n} frames of {w}x{h} are {size} bytes, over the {limits.MAX_DECODED_BYTES} cap")
        try:
            raw = run_ffmpeg(args, data, self.decode_timeout(h * w * n), what, max_out=size, cancel=self.cancel_event)
            planes = 3 if layout.packing == "yuv420" else 1
            return unpack_raw(raw, pix_fmt, n, h, w, planes)
        except MemoryError:
            raise CodecError(f"{what}: not enough memory for {n} frames of {w}x{h} ({size} bytes)") from None

    def decode_many(
        self, streams: list[bytes], layouts: list[FrameLayout], profile: Profile
    ) -> list[list[list[np.ndarray]]]:
        """``decode`` of several streams, in one decoder process where the format allows it
        (``concat_decode``): the process start and the decoder's buffers are paid once, not per stream.
        Frames keep each stream's own size (``-noautoscale``); the output is capped like ``decode``'s."""
        out: list = [None] * len(streams)
        self.decode_each(streams, layouts, profile, out.__setitem__)
        return out

    def decode_each(
        self,
        streams: Sequence[bytes],
        layouts: Sequence[FrameLayout],
        profile: Profile,
        consume: Callable[[int, list[list[np.ndarray]]], None],
        reuse: bool = False,
    ) -> None:
        """``decode_many``, handing stream k's frames to ``consume(k, frames)`` as soon as the decoder
        has written them (in order), so that only one stream's output is held at a time and the
        caller's work on it overlaps the decoding of the next. An exception from ``consume`` stops
        the decoder and propagates. ``reuse``: the frames handed over are views of one buffer that
        the next stream's output overwrites (``consume`` must not keep them)."""
        if len(streams) != len(layouts):
            raise ValueError(f"{len(streams)} streams for {len(layouts)} layouts")
        if not self.concat_decode or len(streams) < 2:
            for k, (d, lay) in enumerate(zip(streams, layouts, strict=True)):
                consume(k, self.decode(d, lay, profile))
            return
        pix_fmt = self.decoded_pix_fmt(profile)
        args = ["-threads", "1", "-f", self.demuxer or self.fmt]  # one thread: see decode
        if self.decoder:
            args += ["-c:v", self.decoder]
        args += ["-i", "pipe:0", "-noautoscale", "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
        what = f"{self.name} decoder"
        sizes = [lay.n_frames * raw_frame_bytes(pix_fmt, lay.frame_h, lay.frame_w) for lay in layouts]
        if sum(sizes) > limits.MAX_DECODED_BYTES:
            raise CodecError(f"{what}: {len(streams)} streams are {sum(sizes)} bytes, over the "
                             f"{limits.MAX_DECODED_BYTES} cap")

        def piece(k: int, buf: np.ndarray) -> None:
            lay = layouts[k]
            planes = 3 if lay.packing == "yuv420" else 1
            consume(k, unpack_raw(buf, pix_fmt, lay.n_frames, lay.frame_h, lay.frame_w, planes))

        samples = sum(lay.frame_h * lay.frame_w * lay.n_frames for lay in layouts)
        sink = Splitter(sizes, piece, reuse)
        try:
            run_ffmpeg(args, b"".join(streams), self.decode_timeout(samples), what, cancel=self.cancel_event,
                       sink=sink)
        except MemoryError:
            raise CodecError(f"{what}: not enough memory for {len(streams)} streams ({sum(sizes)} bytes)") from None
        if not sink.complete:
            got = sum(sizes[: sink.k]) + sink.pos
            raise CodecError(f"{what}: {got} bytes where {len(streams)} streams need {sum(sizes)}")

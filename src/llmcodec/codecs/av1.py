"""AV1 through libsvtav1, libaom-av1 and librav1e; every stream is decoded with libdav1d.

QP scales differ: SVT-AV1 and libaom take a quantizer index 0..63 (mapped by the encoder to the
AV1 qindex 0..255), rav1e takes the qindex 0..255 itself. Lossless: SVT-AV1 ``lossless=1`` and
libaom ``lossless=1``; rav1e has none (its QP 0 still loses a little).

The quantizer step doubles about every 10 steps of the 0..63 scale (SVT-AV1's decoded coefficient
lattice, benchmarks/codecs/transforms.csv), every 40 of rav1e's qindex: ``qp_per_octave``, which the
QP offsets of edge layers and key/value projections use.
"""

from __future__ import annotations

from .base import FFmpegCodec, Profile
from .profiles import standard_profiles


def _profiles(speeds: tuple[str, ...], main: str, low_depth: str, yuv420: str | None) -> dict[str, Profile]:
    return standard_profiles(speeds, main, {"8bit": low_depth}, yuv420)


class SvtAV1(FFmpegCodec):
    name = "svtav1"
    encoder = "libsvtav1"
    decoder = "libdav1d"
    fmt = "ivf"
    pix_fmts = ("yuv420p10le", "yuv420p")  # all libsvtav1 takes
    qp_range = (1, 63)
    lossless = True
    min_size = 64
    max_w = 8192
    max_h = 4352
    qp_per_octave = 10.0
    profiles = {
        **_profiles(("p4", "p8", "p12"), "p8", "yuv420p", "yuv420p10le"),
        # Coefficient domain (coefdomain.py) without forcing anything: SVT-AV1 has no option that fixes
        # its partition or transform, yet at preset 8 it codes most checkerboards of 32x32 weight blocks
        # with one DCT per block, close enough to HEVC's integer DCT for the decoded coefficients to sit
        # on the quantizer's lattice; in some encodes it does not (benchmarks/codecs/TRANSFORMS.md), and
        # those tensors are then coded as in the sample domain, without a reconstruction table.
        "ai-p8-coef": Profile("ai-p8-coef", preset="p8", coef_block=32),
    }

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        preset = (profile.preset or "p8").removeprefix("p")
        # aq-mode 0: no per-block QP changes (MSE objective); lp: threads.
        params = ["aq-mode=0", f"lp={self.threads}"]
        params += ["lossless=1"] if qp is None else []
        params += [f"{k}={v}" for k, v in profile.options]
        opts = ["-preset", preset]
        if qp is not None:
            opts += ["-qp", str(qp)]
        opts += ["-g", "1"] if profile.intra else []
        return [*opts, "-svtav1-params", ":".join(params)]


class AomAV1(FFmpegCodec):
    name = "aom"
    encoder = "libaom-av1"
    decoder = "libdav1d"
    fmt = "ivf"
    pix_fmts = ("gray10le", "gray", "gray12le", "yuv420p10le", "yuv444p10le", "yuv420p")
    qp_range = (0, 63)
    lossless = True
    min_size = 64
    max_w = 8192
    max_h = 4352
    qp_per_octave = 10.0
    profiles = _profiles(("cpu4", "cpu6", "cpu8"), "cpu8", "gray", "yuv420p10le")

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        cpu = (profile.preset or "cpu8").removeprefix("cpu")
        opts = ["-cpu-used", cpu, "-threads", str(self.threads), "-row-mt", "0"]
        if qp is None:
            # the all-intra usage refuses lossless=1; "good" usage with keyframes only is all-intra too
            opts += ["-aom-params", "lossless=1"]
            return [*opts, *(["-g", "1"] if profile.intra else [])]
        # Constant quality at a fixed cq-level, no adaptive/delta quantization: an MSE objective.
        opts += ["-crf", str(qp), "-b:v", "0", "-aq-mode", "0"]
        opts += ["-usage", "allintra"] if profile.intra else []
        params = ["deltaq-mode=0", *(f"{k}={v}" for k, v in profile.options)]
        return [*opts, "-aom-params", ":".join(params)]


class Rav1e(FFmpegCodec):
    name = "rav1e"
    encoder = "librav1e"
    decoder = "libdav1d"
    fmt = "ivf"
    pix_fmts = ("yuv420p10le", "yuv420p", "yuv444p10le")
    qp_range = (0, 255)
    lossless = False
    qp_meaning = "the AV1 quantizer index (rav1e -qp, 0..255)"
    min_size = 64
    max_w = 8192
    max_h = 4352
    qp_per_octave = 40.0
    profiles = _profiles(("s4", "s6", "s10"), "s10", "yuv420p", "yuv420p10le")

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        speed = (profile.preset or "s10").removeprefix("s")
        # rav1e ignores keyint in -rav1e-params; FFmpeg's -g reaches it.
        params = [f"threads={self.threads}", *(f"{k}={v}" for k, v in profile.options)]
        opts = ["-speed", speed, "-qp", str(qp), "-g", "1" if profile.intra else "250"]
        return [*opts, "-rav1e-params", ":".join(params)]

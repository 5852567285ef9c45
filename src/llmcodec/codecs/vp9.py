"""VP9 through libvpx-vp9, decoded with FFmpeg's native vp9 decoder.

QP: libvpx's quantizer 0..63, pinned with ``qmin = qmax`` (and the same CRF) so every frame uses
it; adaptive quantization off. Lossless: ``-lossless 1``. libvpx-vp9 has no grey input, so the
matrix rides in the luma plane of 4:2:0 (chroma mid-grey, nearly free) or fills all three planes.
Its 0..63 quantizer maps to the qindex as AV1's does: the step doubles about every 10 (av1.py).
"""

from __future__ import annotations

from .av1 import _profiles
from .base import FFmpegCodec, Profile


class VP9(FFmpegCodec):
    name = "vp9"
    encoder = "libvpx-vp9"
    decoder = "vp9"
    fmt = "ivf"
    pix_fmts = ("yuv420p10le", "yuv420p", "yuv444p10le")
    qp_range = (0, 63)
    lossless = True
    min_size = 64
    max_w = 8192
    max_h = 4352
    qp_per_octave = 10.0
    profiles = _profiles(("cpu1", "cpu4", "cpu5"), "cpu4", "yuv420p", "yuv420p10le")

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        cpu = (profile.preset or "cpu4").removeprefix("cpu")
        opts = ["-deadline", "good", "-cpu-used", cpu, "-threads", str(self.threads), "-row-mt", "0"]
        if qp is None:
            opts += ["-lossless", "1"]
        else:
            opts += ["-qmin", str(qp), "-qmax", str(qp), "-crf", str(qp), "-b:v", "0", "-aq-mode", "0"]
        opts += ["-g", "1"] if profile.intra else ["-g", "250"]
        for k, v in profile.options:
            opts += [f"-{k}", v]
        return opts

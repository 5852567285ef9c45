"""AVC/H.264 through libx264; decoded with FFmpeg's native h264 decoder.

QP: llmcodec uses the 8-bit-equivalent scale 0..51 for every bit depth, like x265 and vvenc.
x264's own QP for high bit depth is offset by 6 per extra bit (10-bit: 0..63 for the same steps),
so the offset is added here. Lossless: ``-qp 0`` in x264's own scale (High 4:4:4 Predictive
profile, selected automatically), which gives back the exact samples.
"""

from __future__ import annotations

from .base import FFmpegCodec, Profile
from .profiles import standard_profiles


class X264(FFmpegCodec):
    name = "x264"
    encoder = "libx264"
    decoder = "h264"
    fmt = "h264"
    pix_fmts = ("gray10le", "gray", "yuv444p10le", "yuv420p10le", "yuv420p")
    qp_range = (0, 51)
    lossless = True
    min_size = 64
    max_w = 8192
    max_h = 4352
    profiles = standard_profiles(("ultrafast", "fast", "medium", "slow"), "medium", {"8bit": "gray"})

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        bd_offset = 6 * (self.sample_bits(profile) - 8)
        opts = ["-preset", profile.preset or "medium", "-threads", str(self.threads)]
        if qp is None:
            opts += ["-qp", "0"]
        else:
            # tune psnr = aq-mode 0 and no psycho-visual RD: a plain squared-error objective.
            opts += ["-tune", "psnr", "-aq-mode", "0", "-qp", str(qp + bd_offset)]
        opts += ["-g", "1"] if profile.intra else ["-g", "250"]
        for k, v in profile.options:
            opts += [f"-{k}", v]
        # drop the SEI messages (x264's version and settings string in every stream)
        return [*opts, "-bsf:v", "filter_units=remove_types=6"]

"""HEVC/H.265 through libx265 and libkvazaar; decoded with FFmpeg's native hevc decoder.

x265 takes grey 8/10/12-bit and 4:2:0 / 4:4:4 10-bit input; kvazaar only 8-bit 4:2:0. Both run
at a fixed QP (8-bit-equivalent scale, 0..51) with adaptive quantization off, so they optimize
plain MSE, and both have a true lossless mode (transform and quantization bypass).
"""

from __future__ import annotations

from .base import FFmpegCodec, Profile
from .profiles import standard_profiles


class X265(FFmpegCodec):
    name = "x265"
    encoder = "libx265"
    decoder = "hevc"
    fmt = "hevc"
    pix_fmts = ("gray10le", "gray", "gray12le", "yuv420p10le", "yuv444p10le", "yuv420p")
    qp_range = (0, 51)
    lossless = True
    min_size = 64  # 16x16 encodes, 8x8 fails; 64 keeps one CTU
    max_w = 8192
    max_h = 4352
    profiles = standard_profiles(
        ("ultrafast", "fast", "medium", "slow"),
        "medium",
        {"8bit": "gray", "12bit": "gray12le"},
        "yuv420p10le",
    )
    seconds_per_msample = 60.0

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        params = ["log-level=error", f"pools={self.threads}", "frame-threads=1"]
        # aq-mode 0 and no psycho-visual RD: the encoder minimizes plain squared error.
        params += ["aq-mode=0", "psy-rd=0", "psy-rdoq=0"]
        params += ["keyint=1"] if profile.intra else []
        params += ["lossless=1"] if qp is None else []
        params += [f"{k}={v}" for k, v in profile.options]
        opts = ["-preset", profile.preset or "medium"]
        if qp is not None:
            opts += ["-qp", str(qp)]
        return [*opts, "-x265-params", ":".join(params)]


class Kvazaar(FFmpegCodec):
    name = "kvazaar"
    encoder = "libkvazaar"
    decoder = "hevc"
    fmt = "hevc"
    pix_fmts = ("yuv420p",)  # the only input FFmpeg's libkvazaar wrapper takes
    qp_range = (0, 51)
    lossless = True
    min_size = 64
    profiles = standard_profiles(("ultrafast", "fast", "medium", "slow"), "medium", {}, "yuv420p")

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        params = [f"preset={profile.preset or 'medium'}", f"threads={self.threads}", "owf=0"]
        params += ["period=1"] if profile.intra else ["period=64"]
        params += ["lossless=1"] if qp is None else [f"qp={qp}"]
        params += [f"{k}={v}" for k, v in profile.options]
        return ["-kvazaar-params", ",".join(params)]

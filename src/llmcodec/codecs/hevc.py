"""HEVC/H.265 through libx265 and libkvazaar; decoded with FFmpeg's native hevc decoder.

x265 takes grey 8/10/12-bit and 4:2:0 / 4:4:4 10-bit input; kvazaar only 8-bit 4:2:0. Both run
at a fixed QP (8-bit-equivalent scale, 0..51) with adaptive quantization off, so they optimize
plain MSE, and both have a true lossless mode (transform and quantization bypass).

HEVC's 32x32 integer DCT is the one VVC uses, so both encoders have coefficient-domain profiles
(``-coef``, coefdomain.py): every coding unit and transform unit is 32x32 and may not split, no
transform skip, no deblocking or SAO, no adaptive or psycho-visual quantization, so the decoder's
inverse transform of each block is the coded levels of the weights themselves.
"""

from __future__ import annotations

from dataclasses import replace

from .base import FFmpegCodec, Profile
from .profiles import standard_profiles

# x265: 32x32 CTUs of one 32x32 CU with one 32x32 TU (no quadtree below it, no rectangular or
# asymmetric partitions), DCT only, no in-loop filters, I-slices at the QP asked for (ipratio 1).
X265_COEF = (
    ("ctu", "32"), ("min-cu-size", "32"), ("max-tu-size", "32"), ("tu-intra-depth", "1"),
    ("tu-inter-depth", "1"), ("limit-tu", "0"), ("rect", "0"), ("amp", "0"), ("tskip", "0"),
    ("deblock", "0"), ("sao", "0"), ("strong-intra-smoothing", "0"), ("ipratio", "1"),
)
# kvazaar's CTU is fixed at 64: intra prediction units of depth 1 only (32x32), no transform split.
KVAZAAR_COEF = (
    ("pu-depth-intra", "1-1"), ("pu-depth-inter", "1-1"), ("tr-depth-intra", "0"), ("transform-skip", "0"),
    ("deblock", "0"), ("sao", "off"), ("smp", "0"), ("amp", "0"), ("rdoq", "1"),
)


def _with_coef(profiles: dict[str, Profile], presets: tuple[str, ...], options: tuple, main: str) -> dict[str, Profile]:
    """``ai-<preset>-coef`` for each preset, and ``-coef-half`` (weights in the left 16 coefficient
    columns of each block, coefdomain.place) of the main preset; ``default`` becomes ``ai-<main>-coef``."""
    out = dict(profiles)
    for p in presets:
        out[f"ai-{p}-coef"] = Profile(f"ai-{p}-coef", preset=p, intra=True, options=options, coef_block=32)
    half = f"ai-{main}-coef-half"
    out[half] = replace(out[f"ai-{main}-coef"], name=half, coef_cols=16)
    out["default"] = replace(out[f"ai-{main}-coef"], name="default")
    return out


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
    profiles = _with_coef(
        standard_profiles(
            ("ultrafast", "fast", "medium", "slow"),
            "medium",
            {"8bit": "gray", "12bit": "gray12le"},
            "yuv420p10le",
        ),
        ("ultrafast", "fast", "medium", "slow"),
        X265_COEF,
        "medium",
    )
    seconds_per_msample = 60.0
    lossless_profile = "ai-medium"

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        # info=0: no SEI message with the encoder's version and settings in every stream
        params = ["log-level=error", f"pools={self.threads}", "frame-threads=1", "info=0"]
        # aq-mode 0 and no psycho-visual RD: the encoder minimizes plain squared error.
        params += ["aq-mode=0", "psy-rd=0", "psy-rdoq=0", "cutree=0"]
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
    profiles = _with_coef(
        standard_profiles(("ultrafast", "fast", "medium", "slow"), "medium", {}, "yuv420p"),
        ("ultrafast", "fast", "medium", "slow"),
        KVAZAAR_COEF,
        "medium",
    )
    lossless_profile = "ai-medium"

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        params = [f"preset={profile.preset or 'medium'}", f"threads={self.threads}", "owf=0"]
        params += ["period=1"] if profile.intra else ["period=64"]
        params += ["lossless=1"] if qp is None else [f"qp={qp}"]
        params += [f"{k}={v}" for k, v in profile.options]
        # drop the SEI messages (kvazaar's version and settings string in every stream)
        return ["-kvazaar-params", ",".join(params), "-bsf:v", "filter_units=remove_types=39|40"]

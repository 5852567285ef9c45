"""VVC/H.266 through libvvenc (encoder) and FFmpeg's native vvc decoder."""

from __future__ import annotations

from dataclasses import replace

from ..ratemodel import RateModel
from .base import FFmpegCodec, Profile
from .profiles import INTER_FRAME_H

MONOCHROME = ("ChromaFormatIDC", "400")  # libvvenc codes the luma plane only; decoded as grey


def _vvc_profiles() -> dict[str, Profile]:
    out = {}
    for preset in ("faster", "fast", "medium", "slow", "slower"):
        out[f"ai-{preset}"] = Profile(f"ai-{preset}", preset=preset, intra=True)
        out[f"ra-{preset}"] = Profile(f"ra-{preset}", preset=preset, intra=False)
    # Same tiling, with and without prediction between tiles: isolates what inter coding buys.
    for kind, intra in (("ai", True), ("ra", False)):
        name = f"{kind}-faster-h{INTER_FRAME_H}"
        out[name] = Profile(name, preset="faster", intra=intra, max_frame_h=INTER_FRAME_H)
    out["ai-faster-yuv420"] = Profile("ai-faster-yuv420", preset="faster", intra=True, packing="yuv420")
    # Dependent (trellis-coded) quantization: the faster presets leave it off and hide sign bits
    # instead; the two exclude each other. Less weight error for a slower encode.
    dq = (("DepQuant", "1"), ("SignHideFlag", "0"))
    for preset in ("faster", "fast"):
        out[f"ai-{preset}-dq"] = Profile(f"ai-{preset}-dq", preset=preset, intra=True, options=dq)
    # Coefficient domain (coefdomain.py): every coding unit and transform is 32x32 (32x32 CTUs that
    # may not split), one DCT-II (no MTS, LFNST or intra sub-partitions) and no in-loop filter, so
    # the codec's forward transform of a frame made by our blockwise inverse transform is the
    # weights. The encoder codes luma only (ChromaFormatIDC 400; its input stays 4:2:0, all libvvenc
    # takes): the same decoded weights as with constant chroma planes, fewer bits and less work.
    # Dependent quantization lowers the weight error there too but spreads it evenly over small and
    # large weights: plain RDOQ is the default at low rates, dependent quantization from
    # VVC.high_rate_profile's threshold up (evidence: docs/research-log.md).
    coef = (
        ("CTUSize", "32"), ("MinQTLumaISlice", "32"), ("MaxMTTDepth", "0"), ("MaxMTTDepthI", "0"),
        ("MTS", "0"), ("LFNST", "0"), ("ISP", "0"),
        ("LoopFilterDisable", "1"), ("EDO", "0"), ("SAO", "0"), ("ALF", "0"), ("CCALF", "0"),
        MONOCHROME,
    )
    sq = (("DepQuant", "0"), ("SignHideFlag", "0"))
    for preset in ("faster", "fast", "medium"):
        out[f"ai-{preset}-coef"] = Profile(f"ai-{preset}-coef", preset=preset, intra=True, options=coef, coef_block=32)
        name = f"ai-{preset}-coef-dq"
        out[name] = Profile(name, preset=preset, intra=True, options=dq + coef, coef_block=32)
    # libvvenc's medium preset turns dependent quantization on by itself (ai-medium-coef has it):
    # this is medium's search with faster's quantizer (RDOQ, sign-bit hiding)
    out["ai-medium-coef-rdoq"] = Profile(
        "ai-medium-coef-rdoq", preset="medium", intra=True,
        options=(("DepQuant", "0"), ("SignHideFlag", "1")) + coef, coef_block=32,
    )
    # without sign-bit hiding either: every coefficient is rounded on its own (RDOQ only)
    out["ai-faster-coef-sq"] = Profile(
        "ai-faster-coef-sq", preset="faster", intra=True, options=sq + coef, coef_block=32
    )
    # Coefficient-domain quantizer variants: plain dead-zone quantization (no RDOQ; the
    # reconstruction table, quant.Recon, undoes its bias), and RDOQ with a smaller Lagrangian
    # multiplier, which trades rate for rounding closer to nearest.
    out["ai-faster-coef-nordoq"] = Profile(
        "ai-faster-coef-nordoq", preset="faster", intra=True, options=sq + coef + (("RDOQ", "0"),), coef_block=32
    )
    for lm in ("0.5", "0.25"):
        name = f"ai-faster-coef-lm{lm}"
        out[name] = Profile(name, preset="faster", intra=True, options=coef + (("LambdaModifierI", lm),), coef_block=32)
    # The same without intra block copy, which libvvenc's medium preset turns on: it predicts a block
    # from another block of weights, so that block's decoded coefficients are no longer the weights'
    # own quantized values. Not the default (docs/research-log.md).
    for base in ("ai-medium-coef-rdoq", "ai-medium-coef-dq"):
        out[f"{base}-noibc"] = replace(out[base], name=f"{base}-noibc", options=out[base].options + (("IBC", "0"),))
    # The medium preset without the intra searches that find nothing in the coefficient domain
    # (matrix-based prediction, extra reference lines, a fine first pass over the angular modes and
    # full rate-distortion checks of several modes): every weight block is predicted from constant
    # blocks. The same bits and weight error in less encoder time (docs/research-log.md).
    lean_intra = (("MIP", "0"), ("MRL", "0"), ("IntraEstDecBit", "3"), ("NumIntraModesFullRD", "1"))
    for base in ("ai-medium-coef-dq", "ai-medium-coef-rdoq"):
        out[f"{base}-lean"] = replace(out[base], name=f"{base}-lean", options=out[base].options + lean_intra)
    # Half-filled blocks (coefdomain.place): weights in the left 16 coefficient columns of each 32x32
    # transform, zeros in the right 16, which doubles the context-coded bin budget per weight.
    for base in ("ai-faster-coef", "ai-faster-coef-dq", "ai-medium-coef-rdoq", "ai-medium-coef-dq",
                 "ai-faster-coef-sq"):
        out[f"{base}-half"] = replace(out[base], name=f"{base}-half", coef_cols=16)
    # The defaults are named copies, so a default's point and its profile's point are one encoding.
    # Below the high-rate threshold: the faster preset with RDOQ, in half-filled blocks (how it was
    # chosen over full blocks, the medium preset and dependent quantization: docs/research-log.md).
    out["default"] = replace(out["ai-faster-coef-half"], name="default")
    # From the high-rate threshold up the default adds dependent quantization (high_rate_profile),
    # with the medium preset's search; without the intra searches that find nothing here (-lean).
    out["default-dq"] = replace(out["ai-medium-coef-dq-lean"], name="default-dq")
    return out


class VVC(FFmpegCodec):
    name = "vvc"
    encoder = "libvvenc"
    decoder = "vvc"
    fmt = "vvc"
    pix_fmts = ("yuv420p10le",)  # the only input libvvenc takes
    qp_range = (13, 63)  # libvvenc fails ("Generic error") below: at QP <= 11 on some small frames
    # In the coefficient domain libvvenc codes QP 0-12 on every frame shape tried; FFmpeg's -qp takes
    # no negative QP (docs/research-log.md)
    coef_qp_floor = 0
    align = 8
    min_size = 64  # 16x16 frames fail inside libvvenc
    max_w = 8192
    max_h = 4352
    profiles = _vvc_profiles()
    # Whole-file bits per parameter from which dependent quantization's lower error also gives the
    # better model; below, plain RDOQ's rounding of small weights matters more (docs/research-log.md).
    high_rate_profile = ("default-dq", 4.25)
    seconds_per_msample = 120.0
    concat_decode = True
    # the step, dead zone and scale at which the model follows libvvenc's rate (docs/research-log.md)
    rate_model = RateModel(step0=1.45, qp_per_octave=6.0, dead_zone=0.2, scale=0.97)

    def decoded_pix_fmt(self, profile: Profile) -> str:
        """Monochrome streams (``MONOCHROME`` among the options) decode to grey at the input's depth."""
        return "gray10le" if MONOCHROME in profile.options else self.pix_fmt(profile)

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        # qpa 0: perceptual QP adaptation optimizes for eyes; weights want plain MSE.
        opts = ["-preset", profile.preset or "faster", "-qp", str(qp), "-qpa", "0", "-threads", str(self.threads)]
        params = ["IntraPeriod=1"] if profile.intra else []
        params += [f"{k}={v}" for k, v in profile.options]
        if params:
            opts += ["-vvenc-params", ":".join(params)]
        return opts

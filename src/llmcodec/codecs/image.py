"""Still-image coders as reference points: JPEG XL (libjxl) and JPEG 2000 (FFmpeg's encoder).

Each frame is coded as one image; the images are concatenated (``-f image2pipe``) and split
again by FFmpeg's ``jpegxl_pipe`` / ``j2k_pipe`` demuxers, so N frames are one stream.

Neither has a QP, so llmcodec defines a monotone integer quality index (larger = coarser), with
steps chosen like a video QP (6 steps double the distortion knob):

- JPEG XL: Butteraugli ``distance = 0.1 * 2**((qp - 1) / 6)`` for qp 1..44 (0.1 .. 14.4);
  lossless is distance 0 (modular mode).
- JPEG 2000: FFmpeg's native encoder, 9/7 irreversible wavelet, rate-distortion slope
  ``-q:v 2**(qp / 4) * 4**(bits - 10)`` for qp 0..80 (the depth factor makes the same
  index give about the same rate and relative error at 8, 10 and 12 bits); lossless is the
  reversible 5/3 wavelet.
"""

from __future__ import annotations

import numpy as np

from ..frames import FrameLayout
from .base import FFmpegCodec, Profile, bit_depth, raw_frame_bytes, run_ffmpeg, unpack_raw


def jxl_distance(qp: int) -> float:
    return 0.1 * 2 ** ((qp - 1) / 6)


def j2k_lambda(qp: int, bits: int = 10) -> float:
    return 2 ** (qp / 4) * 4.0 ** (bits - 10)


class JPEGXL(FFmpegCodec):
    name = "jxl"
    encoder = "libjxl"
    decoder = "libjxl"
    fmt = "image2pipe"
    demuxer = "jpegxl_pipe"
    pix_fmts = ("gray", "gray16le")  # libjxl's grey inputs
    qp_range = (1, 44)
    lossless = True
    qp_meaning = "quality index: Butteraugli distance 0.1 * 2**((qp - 1) / 6)"
    min_size = 64
    max_w = 8192
    max_h = 8192
    profiles = {
        "e3": Profile("e3", preset="3"),
        "e7": Profile("e7", preset="7"),
        "e7-16bit": Profile("e7-16bit", preset="7", pix_fmt="gray16le"),
        "default": Profile("default", preset="7"),
    }

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        distance = 0.0 if qp is None else jxl_distance(qp)
        opts = ["-effort", profile.preset or "7", "-distance", f"{distance:.4f}", "-threads", str(self.threads)]
        for k, v in profile.options:
            opts += [f"-{k}", v]
        return opts


class JPEG2000(FFmpegCodec):
    name = "j2k"
    encoder = "jpeg2000"
    decoder = "jpeg2000"
    fmt = "image2pipe"
    demuxer = "j2k_pipe"
    pix_fmts = ("gray10le", "gray", "gray12le", "gray16le")
    qp_range = (0, 80)
    lossless = True
    qp_meaning = "quality index: rate-distortion slope -q:v 2**(qp / 4) * 4**(bits - 10)"
    min_size = 64
    max_w = 8192
    max_h = 8192
    profiles = {
        "default": Profile("default"),
        "8bit": Profile("8bit", pix_fmt="gray"),
    }

    def encoder_options(self, qp: int | None, profile: Profile) -> list[str]:
        opts = ["-format", "j2k", "-threads", str(self.threads)]
        if qp is None:
            opts += ["-pred", "dwt53"]
        else:
            lam = j2k_lambda(qp, self.sample_bits(profile))
            opts += ["-pred", "dwt97int", "-q:v", f"{lam:.6f}"]
        for k, v in profile.options:
            opts += [f"-{k}", v]
        return opts

    def decode(self, data: bytes, layout: FrameLayout, profile: Profile) -> list[list[np.ndarray]]:
        # FFmpeg's jpeg2000 decoder hands out 10/12-bit images as 16-bit samples shifted left;
        # converting that back with swscale rounds (off by one), so take 16 bits and shift exactly.
        depth = bit_depth(self.pix_fmt(profile))
        if depth == 8:
            return super().decode(data, layout, profile)
        args = ["-threads", "1", "-f", self.demuxer, "-c:v", self.decoder, "-i", "pipe:0"]
        args += ["-f", "rawvideo", "-pix_fmt", "gray16le", "pipe:1"]
        h, w, n = layout.frame_h, layout.frame_w, layout.n_frames
        raw = run_ffmpeg(args, data, self.decode_timeout(h * w * n), f"{self.name} decoder",
                         max_out=n * raw_frame_bytes("gray16le", h, w), cancel=self.cancel_event)
        frames = unpack_raw(raw, "gray16le", n, h, w, 1)
        return [[planes[0] >> (16 - depth)] for planes in frames]

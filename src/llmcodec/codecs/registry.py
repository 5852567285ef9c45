"""Name -> codec back end. Adding a codec is one class and one line here."""

from __future__ import annotations

from .av1 import AomAV1, Rav1e, SvtAV1
from .avc import X264
from .base import FFmpegCodec
from .hevc import X265, Kvazaar
from .image import JPEG2000, JPEGXL
from .vp9 import VP9
from .vvc import VVC

CODECS: dict[str, type[FFmpegCodec]] = {
    "vvc": VVC,
    "x265": X265,
    "kvazaar": Kvazaar,
    "x264": X264,
    "svtav1": SvtAV1,
    "aom": AomAV1,
    "rav1e": Rav1e,
    "vp9": VP9,
    "jxl": JPEGXL,
    "j2k": JPEG2000,
}


def get_codec(name: str, threads: int = 1) -> FFmpegCodec:
    try:
        cls = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(sorted(CODECS))}") from None
    return cls(threads=threads)

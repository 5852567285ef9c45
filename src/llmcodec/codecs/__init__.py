"""Codec back ends behind one interface (see base.FFmpegCodec)."""

from .base import CodecError, FFmpegCodec, Profile
from .registry import CODECS, get_codec

__all__ = ["CODECS", "CodecError", "FFmpegCodec", "Profile", "get_codec"]

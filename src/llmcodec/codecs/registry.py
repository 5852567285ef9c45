"""Name -> codec back end. Adding a codec is one class and one line here."""

from __future__ import annotations

from .base import FFmpegCodec
from .vvc import VVC

CODECS: dict[str, type[FFmpegCodec]] = {
    "vvc": VVC,
}


def get_codec(name: str, threads: int = 1) -> FFmpegCodec:
    try:
        cls = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(sorted(CODECS))}") from None
    return cls(threads=threads)

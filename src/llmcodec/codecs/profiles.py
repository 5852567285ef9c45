"""The profile set most back ends share: presets, sample depths, 4:2:0 packing, intra vs inter."""

from __future__ import annotations

from .base import Profile

INTER_FRAME_H = 128  # inter profiles cut matrices into frames of at most this many rows


def standard_profiles(
    presets: tuple[str, ...], main: str, depths: dict[str, str] | None = None, yuv420_fmt: str | None = None
) -> dict[str, Profile]:
    """``ai-<preset>`` for each preset; ``ai-<main>-<suffix>`` per extra pixel format in ``depths``;
    ``ai-<main>-yuv420`` (matrix in all three planes) when ``yuv420_fmt`` is given; and the pair
    ``ai-/ra-<main>-h128``: the same tiling with and without prediction between tiles, which
    isolates what inter coding buys. ``default`` is ``main`` all-intra."""
    out = {f"ai-{p}": Profile(f"ai-{p}", preset=p) for p in presets}
    for suffix, fmt in (depths or {}).items():
        out[f"ai-{main}-{suffix}"] = Profile(f"ai-{main}-{suffix}", preset=main, pix_fmt=fmt)
    if yuv420_fmt:
        out[f"ai-{main}-yuv420"] = Profile(f"ai-{main}-yuv420", preset=main, pix_fmt=yuv420_fmt, packing="yuv420")
    for kind, intra in (("ai", True), ("ra", False)):
        name = f"{kind}-{main}-h{INTER_FRAME_H}"
        out[name] = Profile(name, preset=main, intra=intra, max_frame_h=INTER_FRAME_H)
    out["default"] = Profile("default", preset=main)
    return out

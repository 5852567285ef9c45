"""Lossless mapping between an integer matrix and a stack of video frames.

The matrix is cut into a grid of equal tiles (one tile per frame) when it exceeds the codec's
largest frame, and every tile is padded to the codec's block alignment. Padding repeats edge
samples, which costs the encoder almost nothing; the inverse simply crops it away.

Planes: ``luma`` packing puts the matrix in the Y plane (chroma, if the pixel format has it, is
mid-grey); ``yuv420`` packing also fills the U and V planes with matrix rows, so a 4:2:0 frame
of luma height H carries 1.5 H rows. Both are exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PACKINGS = ("luma", "yuv420")


@dataclass(frozen=True)
class FrameLayout:
    rows: int
    cols: int
    tiles_y: int
    tiles_x: int
    tile_h: int  # matrix rows per tile, before padding
    tile_w: int
    frame_h: int  # luma plane size of every frame
    frame_w: int
    packing: str = "luma"

    @property
    def n_frames(self) -> int:
        return self.tiles_y * self.tiles_x

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FrameLayout:
        return cls(**d)


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def rows_per_frame(frame_h: int, packing: str) -> int:
    """Matrix rows one frame carries: H in luma; H + H/4 + H/4 with chroma too (4:2:0 planes)."""
    return frame_h if packing == "luma" else frame_h + frame_h // 2


def plan_layout(
    rows: int,
    cols: int,
    *,
    align: int = 8,
    min_size: int = 64,
    max_w: int = 8192,
    max_h: int = 4320,
    packing: str = "luma",
    tile: int = 1,
) -> FrameLayout:
    """Choose the fewest equal tiles that fit the codec's limits; pad each tile to ``align``.

    ``tile``: tile sides are multiples of it, so a grid of ``tile`` x ``tile`` blocks in the matrix
    stays a grid of whole blocks in every frame (the coefficient domain needs that)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"cannot lay out an empty matrix of shape ({rows}, {cols})")
    if packing not in PACKINGS:
        raise ValueError(f"unknown plane packing {packing!r}; choose one of {', '.join(PACKINGS)}")
    if align % 4:
        raise ValueError(f"frame alignment must be a multiple of 4, got {align}")
    if tile > 1 and (packing != "luma" or tile > min(max_w, max_h)):
        raise ValueError(f"tiles of whole {tile}x{tile} blocks need luma packing and frames of at least one block")
    tiles_x = -(-cols // max(tile, max_w // tile * tile))
    tile_w = _ceil_to(-(-cols // tiles_x), tile)
    tiles_x = -(-cols // tile_w)
    frame_w = max(min_size, _ceil_to(tile_w, align))
    tiles_y = 1
    while True:
        tile_h = _ceil_to(-(-rows // tiles_y), tile)
        need = tile_h if packing == "luma" else -(-2 * tile_h // 3)
        frame_h = max(min_size, _ceil_to(need, align))
        if frame_h <= max_h:
            break
        tiles_y += 1
    tiles_y = -(-rows // tile_h)  # rounding tiles up to whole blocks can leave fewer of them
    if frame_w > max_w:
        raise ValueError(f"matrix of {cols} columns cannot fit frames at most {max_w} wide")
    return FrameLayout(rows, cols, tiles_y, tiles_x, tile_h, tile_w, frame_h, frame_w, packing)


def _tile_slices(layout: FrameLayout):
    for ty in range(layout.tiles_y):
        for tx in range(layout.tiles_x):
            r0, c0 = ty * layout.tile_h, tx * layout.tile_w
            yield slice(r0, min(r0 + layout.tile_h, layout.rows)), slice(c0, min(c0 + layout.tile_w, layout.cols))


def to_frames(q: np.ndarray, layout: FrameLayout) -> list[list[np.ndarray]]:
    """Matrix -> frames; each frame is a list of planes: [Y] (luma) or [Y, U, V] (yuv420).

    In yuv420 packing each chroma plane (H/2 x W/2) holds H/4 matrix rows, every row split into
    its two halves on consecutive plane rows (a plain row-major reshape).
    """
    if q.shape != (layout.rows, layout.cols):
        raise ValueError(f"matrix shape {q.shape} does not match layout ({layout.rows}, {layout.cols})")
    h, w = layout.frame_h, layout.frame_w
    n = rows_per_frame(h, layout.packing)
    frames = []
    for rs, cs in _tile_slices(layout):
        tile = q[rs, cs]
        padded = np.pad(tile, ((0, n - tile.shape[0]), (0, w - tile.shape[1])), mode="edge")
        if layout.packing == "luma":
            frames.append([padded])
        else:
            c = h // 4
            u = padded[h : h + c].reshape(h // 2, w // 2)
            v = padded[h + c : h + 2 * c].reshape(h // 2, w // 2)
            frames.append([padded[:h], u, v])
    return frames


def from_frames(frames: list[list[np.ndarray]], layout: FrameLayout) -> np.ndarray:
    """Inverse of ``to_frames``: crop padding and reassemble the matrix exactly."""
    if len(frames) != layout.n_frames:
        raise ValueError(f"expected {layout.n_frames} frames, got {len(frames)}")
    h, w = layout.frame_h, layout.frame_w
    out = np.empty((layout.rows, layout.cols), dtype=frames[0][0].dtype)
    for planes, (rs, cs) in zip(frames, _tile_slices(layout), strict=True):
        if planes[0].shape != (h, w):
            raise ValueError(f"frame of shape {planes[0].shape} where the layout says ({h}, {w})")
        if layout.packing == "luma":
            full = planes[0]
        else:
            full = np.concatenate([planes[0], planes[1].reshape(h // 4, w), planes[2].reshape(h // 4, w)])
        out[rs, cs] = full[: rs.stop - rs.start, : cs.stop - cs.start]
    return out

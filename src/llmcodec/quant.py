"""Affine (asymmetric) quantization of 2-D weights: per output row or per group of input columns.

A weight ``w`` in a row (or group) with fp16 ``scale`` and fp16 ``offset`` is coded as the integer
``q = round((w - offset) / scale)`` in ``[0, 2**bits - 1]`` and restored as ``q * scale + offset``.
Scale and offset are rounded to fp16 *before* quantizing, in the direction that keeps the whole
range covered, so the error bound ``|w - w_hat| <= scale / 2`` holds for what is actually stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDE_BITS_PER_GROUP = 32  # one fp16 scale + one fp16 offset


@dataclass(frozen=True)
class QuantSpec:
    """How a matrix is quantized: ``bits`` per sample, ``group`` columns per scale (None: whole row).

    ``shared_scale``: every row (group) gets the same step, the one the widest needs, and keeps its
    own offset. With an entropy coder behind the quantizer a shared step is what minimizes squared
    error for a rate (every weight gets the same absolute error); per-row steps instead give each
    row the same *relative* error, which suits a fixed-rate grid such as round-to-nearest.
    """

    bits: int = 10
    group: int | None = None
    shared_scale: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"quantization bits must be in 1..16, got {self.bits}")
        if self.group is not None and self.group < 1:
            raise ValueError(f"group size must be positive, got {self.group}")

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1


@dataclass
class Quantized:
    """Integer matrix plus its fp16 side information; ``scale``/``offset`` have shape (rows, groups)."""

    q: np.ndarray  # uint16, (rows, cols)
    scale: np.ndarray  # float16, (rows, groups)
    offset: np.ndarray  # float16, (rows, groups)
    spec: QuantSpec

    @property
    def side_bits(self) -> int:
        return SIDE_BITS_PER_GROUP * self.scale.size


def group_count(cols: int, group: int | None) -> int:
    return 1 if group is None else -(-cols // group)


def _expand(per_group: np.ndarray, cols: int, group: int | None) -> np.ndarray:
    """Broadcast (rows, groups) values to (rows, cols)."""
    if group is None:
        return per_group[:, :1]
    return np.repeat(per_group, group, axis=1)[:, :cols]


def _group_minmax(w: np.ndarray, group: int | None) -> tuple[np.ndarray, np.ndarray]:
    if group is None:
        return w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    rows, cols = w.shape
    n = group_count(cols, group)
    # Pad a ragged last group with its own edge values so they do not widen its range.
    padded = np.pad(w, ((0, 0), (0, n * group - cols)), mode="edge").reshape(rows, n, group)
    return padded.min(axis=2), padded.max(axis=2)


def _fp16_floor(x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float16)
    too_big = h.astype(np.float64) > x
    return np.where(too_big, np.nextafter(h, np.float16(-np.inf)), h).astype(np.float16)


def _fp16_ceil(x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float16)
    too_small = h.astype(np.float64) < x
    return np.where(too_small, np.nextafter(h, np.float16(np.inf)), h).astype(np.float16)


def _row_blocks(shape: tuple[int, ...], elements: int = 1 << 22) -> range:
    """Row starts of blocks of about ``elements`` weights: float64 work on one block at a time keeps
    a job's temporaries near 32 MB instead of several copies of an 8B model's largest matrix."""
    step = max(1, elements // max(1, int(np.prod(shape[1:]))))
    return range(0, shape[0], step)


def quantize(w: np.ndarray, spec: QuantSpec) -> Quantized:
    """Quantize a finite 2-D float matrix. Raises ValueError on bad shape or non-finite values."""
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"quantize expects a non-empty 2-D matrix, got shape {w.shape}")
    blocks = _row_blocks(w.shape)
    step = blocks.step
    lo_parts, hi_parts = [], []
    for r in blocks:
        w64 = w[r : r + step].astype(np.float64)
        if not np.isfinite(w64).all():
            raise ValueError("matrix contains NaN or Inf")
        lo_b, hi_b = _group_minmax(w64, spec.group)
        lo_parts.append(lo_b)
        hi_parts.append(hi_b)
    lo, hi = np.concatenate(lo_parts), np.concatenate(hi_parts)
    if np.abs(lo).max() > 65504 or np.abs(hi).max() > 65504:
        raise ValueError("weights exceed the fp16 range of the side information (|w| > 65504)")
    offset = _fp16_floor(lo)
    # Smallest fp16 scale whose grid reaches the group's maximum from the stored offset.
    scale = _fp16_ceil((hi - offset.astype(np.float64)) / spec.levels)
    tiny = np.float16(2.0**-24)  # constant groups: any positive scale works, q is then 0
    scale = np.where(scale > 0, scale, tiny).astype(np.float16)
    if spec.shared_scale:
        scale = np.full_like(scale, scale.max())
    cols = w.shape[1]
    q = np.empty(w.shape, np.uint16)
    for r in blocks:
        s = _expand(scale[r : r + step].astype(np.float64), cols, spec.group)
        o = _expand(offset[r : r + step].astype(np.float64), cols, spec.group)
        q[r : r + step] = np.clip(np.rint((w[r : r + step].astype(np.float64) - o) / s), 0, spec.levels)
    return Quantized(q=q, scale=scale, offset=offset, spec=spec)


def dequantize(qz: Quantized, q: np.ndarray | None = None) -> np.ndarray:
    """Restore float32 weights; ``q`` overrides the stored integers (e.g. after lossy coding)."""
    q = qz.q if q is None else q
    cols = q.shape[1]
    s = _expand(qz.scale.astype(np.float32), cols, qz.spec.group)
    o = _expand(qz.offset.astype(np.float32), cols, qz.spec.group)
    return q.astype(np.float32) * s + o


def compand(w: np.ndarray, p: float) -> np.ndarray:
    """``sign(w) |w|^p`` (0 < p <= 1), float32: coding these values makes a codec's error in ``w``
    grow with ``|w|`` (about ``|w|^(1-p) / p`` times the coded-domain error), so small weights get
    small errors. A power law commutes with per-row scaling, so it needs no scale of its own."""
    w64 = np.asarray(w, dtype=np.float64)
    return (np.sign(w64) * np.abs(w64) ** p).astype(np.float32)


def expand(y: np.ndarray, p: float) -> np.ndarray:
    """The inverse of :func:`compand`."""
    y64 = np.asarray(y, dtype=np.float64)
    return (np.sign(y64) * np.abs(y64) ** (1.0 / p)).astype(np.float32)


def rtn(w: np.ndarray, bits: int, group: int | None) -> tuple[np.ndarray, float]:
    """Round-to-nearest baseline: returns restored weights and bits per weight (side info counted)."""
    qz = quantize(w, QuantSpec(bits=bits, group=group))
    bpw = (bits * w.size + qz.side_bits) / w.size
    return dequantize(qz), bpw


def sum_sq_diff(a: np.ndarray, b: np.ndarray | float = 0.0) -> float:
    """``sum((a - b)**2)`` in float64, one row block at a time (no full-size float64 copies)."""
    a = np.asarray(a)
    if a.ndim < 2:
        a = a.reshape(1, -1)
        b = b if np.isscalar(b) else np.asarray(b).reshape(1, -1)
    total = 0.0
    blocks = _row_blocks(a.shape)
    for r in blocks:
        d = a[r : r + blocks.step].astype(np.float64) - (b if np.isscalar(b) else b[r : r + blocks.step])
        total += float(np.einsum("ij,ij->", d, d))
    return total


def relative_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||w - w_hat||_F / ||w||_F (0 for an all-zero w restored exactly), in float64 row blocks."""
    num, den = np.sqrt(sum_sq_diff(w, np.asarray(w_hat))), np.sqrt(sum_sq_diff(w))
    return float(num / den) if den > 0 else (0.0 if num == 0 else float("inf"))

"""Affine (asymmetric) quantization of 2-D weights: per output row or per group of input columns.

A weight ``w`` in a row (or group) with fp16 ``scale`` and fp16 ``offset`` is coded as the integer
``q = round((w - offset) / scale)`` in ``[0, 2**bits - 1]`` and restored as ``q * scale + offset``.
Scale and offset are rounded to fp16 *before* quantizing, in the direction that keeps the whole
range covered, so the error bound ``|w - w_hat| <= scale / 2`` holds for what is actually stored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import sideinfo
from .coefdomain import padded_shape, placed_idct, taken_dct
from .ratemodel import magnitude_counts

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
    # Coefficient domain (coefdomain.py): the samples are the blockwise inverse transform, in
    # ``block`` x ``block`` blocks, of the matrix scaled per row or group, so that a codec
    # transforming those blocks quantizes the weights themselves. None: the samples are the weights.
    block: int | None = None
    # Coefficient domain only: how many of each block's coefficient columns carry weights (None: all;
    # coefdomain.place), and scales as 8-bit logarithmic codes (sideinfo.py) instead of fp16, and
    # fp16 offsets only for a matrix whose row means are worth their bits (see ``_worth_centring``).
    compact: bool = False
    block_cols: int | None = None
    # log codes (compact scales, log-coded column multipliers) stored Golomb-Rice packed
    # (sideinfo.pack) instead of a byte each
    packed: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"quantization bits must be in 1..16, got {self.bits}")
        if self.group is not None and self.group < 1:
            raise ValueError(f"group size must be positive, got {self.group}")
        if self.block is not None and self.block < 2:
            raise ValueError(f"transform block size must be at least 2, got {self.block}")
        if self.block_cols is not None and not (self.block is not None and 1 <= self.block_cols <= self.block):
            raise ValueError(f"block_cols must be in 1..block ({self.block}), got {self.block_cols}")
        if self.compact and self.block is None:
            raise ValueError("compact side information needs the coefficient domain (a transform block size)")

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1


@dataclass(frozen=True)
class Recon:
    """Where each decoded quantizer level is restored: level ``k`` (a multiple of ``step`` in the
    coefficient domain) becomes ``sign(k) (|k| + offsets[|k| - 1]) step``; levels past the table
    and level 0 stay where the codec put them.

    A codec's rate-distortion quantizer (RDOQ, trellis) does not round to nearest, so the weights
    that decode to a level need not sit on it on average: restoring each level at the mean of the
    weights that reached it (the centroid, fitted by the encoder, which has both) removes that
    bias, whichever way it goes (measurements: docs/research-log.md)."""

    step: float  # float32: the level spacing in coefficient units
    offsets: tuple[float, ...]  # float16 values, in units of step, for |k| = 1, 2, ...

    @property
    def bits(self) -> int:
        return 32 + 16 * len(self.offsets)


RECON_LEVELS = 16  # magnitudes with a table entry; past this the bias is negligible
RECON_MAX_BITS = 32 + 16 * RECON_LEVELS  # the largest table (Recon.bits)
RECON_MIN_COUNT = 64  # fewer weights at a level than this: no correction (too noisy to estimate)


@dataclass
class Quantized:
    """Integer matrix plus its fp16 side information; ``scale``/``offset`` have shape (rows, groups)."""

    q: np.ndarray  # uint16, (rows, cols); padded to whole blocks in the coefficient domain
    scale: np.ndarray  # float16, (rows, groups)
    offset: np.ndarray  # float16, (rows, groups)
    spec: QuantSpec
    shape: tuple[int, int] | None = None  # the matrix's shape when ``q`` is padded (None: q.shape)
    recon: Recon | None = None  # decoder-side reconstruction table (coefficient domain; see fit_recon)

    @property
    def side_bits(self) -> int:
        return affine_bits(self.scale, self.offset, self.spec)


def affine_bits(scale: np.ndarray, offset: np.ndarray, spec: QuantSpec) -> int:
    """Bits stored for scales and offsets: fp16 each, or (compact) log-coded scales plus fp16 offsets
    only if any offset is nonzero."""
    if not spec.compact:
        return SIDE_BITS_PER_GROUP * scale.size
    return sideinfo.bits(scale, spec.packed) + (16 * offset.size if np.any(offset) else 0)


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


def quantize(
    w: np.ndarray, spec: QuantSpec, known: tuple[np.ndarray, np.ndarray] | None = None,
    row_step: np.ndarray | None = None, levels: bool = True,
) -> Quantized:
    """Quantize a finite 2-D float matrix. Raises ValueError on bad shape or non-finite values.

    ``known`` (coefficient domain only): the (scale, offset) an earlier ``quantize`` of this very
    matrix with this spec chose (``side_of``); they are used as they are, which skips the passes
    that choose them (the sample peaks) and gives the same integers (row steps included).
    ``row_step`` (coefficient domain only; one positive factor per row): each row's step relative
    to its RMS is multiplied by it, so rows with a factor below 1 are coded finer than the rest.
    The factors end up in the stored row scales and need nothing else to be undone.
    ``levels=False`` (coefficient domain): the scale and offset only, ``q`` left empty (what a scan
    of the matrix needs)."""
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"quantize expects a non-empty 2-D matrix, got shape {w.shape}")
    if row_step is not None:
        row_step = np.asarray(row_step, dtype=np.float64)
        if spec.block is None:
            raise ValueError("per-row steps need the coefficient domain (a profile with a transform block)")
        if row_step.shape != (w.shape[0],) or not (np.isfinite(row_step).all() and (row_step > 0).all()):
            raise ValueError(f"per-row steps must be {w.shape[0]} positive finite numbers, got shape {row_step.shape}")
    if spec.block is not None:
        side = known if known is not None else _coefficient_side(w, spec, row_step)
        if not levels:
            return Quantized(q=np.empty((0, 0), np.uint16), scale=side[0], offset=side[1], spec=spec, shape=w.shape)
        return _quantize_known(w, spec, *side)
    if not levels:
        raise ValueError("a scale and offset without the levels are chosen in the coefficient domain only")
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


def dequantize(qz: Quantized, q: np.ndarray | None = None, values: np.ndarray | None = None) -> np.ndarray:
    """Restore float32 weights; ``q`` overrides the stored integers (e.g. after lossy coding);
    ``values``: ``unit_values(qz, q)`` when already computed (coefficient domain)."""
    q = qz.q if q is None else q
    if qz.spec.block is not None:
        return _dequantize_coefficients(qz, q, values)
    cols = q.shape[1]
    s = _expand(qz.scale.astype(np.float32), cols, qz.spec.group)
    o = _expand(qz.offset.astype(np.float32), cols, qz.spec.group)
    return q.astype(np.float32) * s + o


# The peak sample sits at this fraction of the half range, so that the codec's error (which
# spreads each weight's error over its block) rarely pushes a decoded sample past the range.
COEF_HEADROOM = 0.75
COEF_MAX_HEADROOM = 0.9  # partly filled blocks keep the full blocks' step up to this peak


def _peak(w: np.ndarray, qz: Quantized, div: np.ndarray, band: int) -> float:
    """The largest sample magnitude of ``(w - offset) / div`` in ``qz``'s block layout."""
    return max(float(np.abs(_unit_samples(w, qz, div, r, band)).max()) for r in range(0, w.shape[0], band))


def _band_rows(shape: tuple[int, int], n: int) -> int:
    """Rows per band of work: whole ``n``-row block rows, about ``_row_blocks``'s size."""
    return max(n, _row_blocks(shape).step // n * n)


def _group_mean_rms(w64: np.ndarray, group: int | None) -> tuple[np.ndarray, np.ndarray]:
    """fp16 mean of each row (group) and the RMS of the weights about that stored mean."""
    cols = w64.shape[1]
    size = group or cols
    mean = np.stack([w64[:, c : c + size].mean(axis=1) for c in range(0, cols, size)], axis=1)
    if np.abs(mean).max() > 65504:
        raise ValueError("weights exceed the fp16 range of the side information (|w| > 65504)")
    mean16 = mean.astype(np.float16)
    d = w64 - _expand(mean16.astype(np.float64), cols, group)
    rms = np.stack([np.sqrt(np.mean(np.square(d[:, c : c + size]), axis=1)) for c in range(0, cols, size)], axis=1)
    return mean16, rms


def group_rms(w: np.ndarray, group: int | None) -> np.ndarray:
    """RMS of each row (group) of ``w`` about its mean, shape (rows, groups), in row blocks; zero
    spreads count as 1 so that ratios stay finite."""
    parts = []
    blocks = _row_blocks(w.shape)
    for r in blocks:
        parts.append(_group_mean_rms(np.asarray(w[r : r + blocks.step], dtype=np.float64), group)[1])
    rms = np.concatenate(parts)
    return np.where(rms > 0, rms, 1.0)


def _normalized(w: np.ndarray, qz: Quantized, div: np.ndarray, r: int, k: int) -> np.ndarray:
    """``(w - offset) / div`` for rows ``r:r+k`` (float64; ``div`` per row or group)."""
    cols, group = w.shape[1], qz.spec.group
    o = _expand(qz.offset[r : r + k].astype(np.float64), cols, group)
    return (w[r : r + k].astype(np.float64) - o) / _expand(div[r : r + k], cols, group)


def _unit_samples(w: np.ndarray, qz: Quantized, div: np.ndarray, r: int, band: int) -> np.ndarray:
    """Blockwise inverse transform of ``(w - offset) / div`` for rows ``r:r+band``, zero-padded (the
    blocks' unused columns too)."""
    n, k = qz.spec.block, min(band, w.shape[0] - r)
    return placed_idct(_normalized(w, qz, div, r, k), n, qz.spec.block_cols)


def _worth_centring(mean: np.ndarray, rms: np.ndarray, size: int) -> bool:
    """Whether fp16 row (group) means pay for themselves: coding a row's weights about zero instead
    of its mean widens them by ``sqrt(1 + (mean / rms)^2)``, which costs an entropy coder about
    ``log2`` of that per weight at the same error; a mean costs 16 bits. Weight matrices have
    means of a few per cent of their RMS and keep none; constant or strongly biased rows do."""
    m = mean.astype(np.float64)
    if np.any((rms == 0) & (m != 0)):
        return True  # constant rows: the mean is all there is
    widen = 0.5 * np.log2(1.0 + np.square(m / np.where(rms > 0, rms, 1.0)))
    return float(widen.sum()) * size > 16.0 * mean.size


def _coefficient_side(
    w: np.ndarray, spec: QuantSpec, row_step: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """fp16 offset (the mean; compact: zero unless ``_worth_centring``) and scale per row or group
    (compact: log-coded, sideinfo.py) for samples = mid + blockwise inverse
    transform of ``(w - offset) / scale`` (``_quantize_known``). The scales are applied to the weights, i.e. in the
    coefficient domain, so rows and groups may differ: one common factor (peak sample at
    ``COEF_HEADROOM`` of the half range) is all the sample range needs."""
    n, (rows, cols) = spec.block, w.shape
    band = _band_rows(w.shape, n)
    mid = 1 << (spec.bits - 1)
    groups = group_count(cols, spec.group)
    offset = np.empty((rows, groups), np.float16)
    rms = np.empty((rows, groups))
    for r in range(0, rows, band):
        w64 = w[r : r + band].astype(np.float64)
        if not np.isfinite(w64).all():
            raise ValueError("matrix contains NaN or Inf")
        offset[r : r + band], rms[r : r + band] = _group_mean_rms(w64, spec.group)
    if spec.compact and not _worth_centring(offset, rms, spec.group or cols):
        # the codec codes each weight, mean included: cheaper than an fp16 mean per row
        rms = np.sqrt(np.square(rms) + np.square(offset.astype(np.float64)))
        offset[:] = 0
    rms = np.where(rms > 0, rms, 1.0)  # groups equal to their offset: any scale restores them
    if spec.shared_scale:
        rms = np.full_like(rms, rms.max())
    if row_step is not None:
        rms = rms * row_step[:, None]
    draft = Quantized(q=np.empty((0, 0), np.uint16), scale=rms, offset=offset, spec=spec)
    per_sample = (_peak(w, draft, rms, band) or 1.0) / (COEF_HEADROOM * mid)
    if spec.block_cols not in (None, n):
        # Partly filled blocks have other sample peaks than full ones, by a factor that differs from
        # matrix to matrix, so at one QP the step relative to each
        # matrix's RMS, i.e. the default's allocation between matrices, would change with the
        # layout. Keep the full blocks' step, inside a wider headroom.
        full = Quantized(q=draft.q, scale=rms, offset=offset, spec=replace(spec, block_cols=None))
        per_full = (_peak(w, full, rms, band) or 1.0) / (COEF_HEADROOM * mid)
        per_sample = max(per_full, per_sample * COEF_HEADROOM / COEF_MAX_HEADROOM)
    # rounding up keeps the peak inside the headroom
    if spec.compact:
        scale = sideinfo.snap(rms * per_sample, up=True)
    else:
        scale = _fp16_ceil(rms * per_sample)
        if not np.isfinite(scale.astype(np.float64)).all():
            raise ValueError("weights exceed the fp16 range of the side information")
        scale = np.where(scale > 0, scale, np.float16(2.0**-24)).astype(np.float16)
    return scale, offset


def side_of(qz: Quantized) -> tuple[np.ndarray, np.ndarray]:
    """What ``quantize(w, spec, known=...)`` needs to quantize the same matrix again without
    choosing its scales: a few values per row."""
    return qz.scale, qz.offset


def _quantize_known(w: np.ndarray, spec: QuantSpec, scale: np.ndarray, offset: np.ndarray) -> Quantized:
    """Samples = mid + blockwise inverse transform of ``(w - offset) / scale``, with the scale and
    offset already chosen (``_coefficient_side``)."""
    n, (rows, cols) = spec.block, w.shape
    groups = group_count(cols, spec.group)
    if scale.shape != (rows, groups) or offset.shape != (rows, groups):
        raise ValueError(f"side information of shape {scale.shape} for a {rows}x{cols} matrix in {groups} groups")
    band = _band_rows(w.shape, n)
    mid = 1 << (spec.bits - 1)
    draft = Quantized(q=np.empty((0, 0), np.uint16), scale=scale, offset=offset, spec=spec)
    q = np.empty(padded_shape(rows, cols, n, spec.block_cols), np.uint16)
    for r in range(0, rows, band):
        y = _unit_samples(w, draft, scale.astype(np.float64), r, band)
        np.rint(y, out=y)  # in place: the band's temporary
        y += mid
        q[r : r + y.shape[0]] = np.clip(y, 0, spec.levels, out=y)
    return Quantized(q=q, scale=scale, offset=offset, spec=spec, shape=(rows, cols))


def coefficient_counts(w: np.ndarray, qz: Quantized) -> np.ndarray:
    """``ratemodel.magnitude_counts`` of the coefficients the codec quantizes for ``qz`` (coefficient
    domain): ``(w - offset) / scale`` of the matrix ``qz`` was quantized from, band by band."""
    if qz.spec.block is None:
        raise ValueError("coefficient counts need the coefficient domain (a profile with a transform block)")
    band = _band_rows(w.shape, qz.spec.block)
    div = qz.scale.astype(np.float64)
    counts = None
    for r in range(0, w.shape[0], band):
        counts = magnitude_counts(_normalized(w, qz, div, r, min(band, w.shape[0] - r)), counts)
    return counts


def _dequantize_coefficients(qz: Quantized, q: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    n, group = qz.spec.block, qz.spec.group
    rows, cols = qz.shape or (qz.scale.shape[0], q.shape[1])
    if q.shape != padded_shape(rows, cols, n, qz.spec.block_cols):
        raise ValueError(f"{q.shape} samples for a {rows}x{cols} matrix in {n}x{n} blocks")
    out = np.empty((rows, cols), np.float32)
    band = _band_rows((rows, cols), n)
    for r in range(0, rows, band):
        k = min(band, rows - r)
        s = _expand(qz.scale[r : r + k].astype(np.float64), cols, group)
        o = _expand(qz.offset[r : r + k].astype(np.float64), cols, group)
        if values is None:  # a temporary of this band: scaled in place
            x = _unit_values(qz, q, r, k)
            x *= s
            x += o
            out[r : r + k] = x
        else:
            out[r : r + k] = values[r : r + k] * s + o
    return out


def _raw_units(qz: Quantized, q: np.ndarray, r: int, k: int) -> np.ndarray:
    """The blockwise DCT of the centred samples, rows ``r:r+k`` (coefficient domain only)."""
    n, cols = qz.spec.block, (qz.shape or q.shape)[1]
    used = qz.spec.block_cols
    rows_p = padded_shape(k, cols, n, used)[0]
    a = q[r : r + rows_p].astype(np.float64)
    a -= 1 << (qz.spec.bits - 1)
    return taken_dct(a, n, used, k, cols)


# Matrices up to this many weights keep their unit values whole while the compressor checks them
# (``raw_units``): one transform instead of one per use; larger ones go band by band.
WHOLE_UNITS_MAX = 1 << 24


def raw_units(qz: Quantized, q: np.ndarray) -> np.ndarray | None:
    """The blockwise DCT of the centred samples, the whole matrix (float64; coefficient domain),
    or None for a matrix over ``WHOLE_UNITS_MAX`` weights or in the sample domain."""
    if qz.spec.block is None:
        return None
    rows, cols = qz.shape or q.shape
    if rows * cols > WHOLE_UNITS_MAX:
        return None
    band = _band_rows((rows, cols), qz.spec.block)
    return np.concatenate([_raw_units(qz, q, r, min(band, rows - r)) for r in range(0, rows, band)])


def _unit_values(qz: Quantized, q: np.ndarray, r: int, k: int) -> np.ndarray:
    """Rows ``r:r+k`` of the values that the scale multiplies: ``q`` itself in the sample domain,
    the blockwise DCT of the centred samples in the coefficient domain (float64, matrix width),
    restored through the reconstruction table if there is one."""
    if qz.spec.block is None:
        return q[r : r + k].astype(np.float64)
    u = _raw_units(qz, q, r, k)
    return u if qz.recon is None else apply_recon(u, qz.recon)


def unit_values(qz: Quantized, units: np.ndarray | None) -> np.ndarray | None:
    """``raw_units`` restored through ``qz``'s reconstruction table (what the scale multiplies)."""
    if units is None or qz.recon is None:
        return units
    return apply_recon(units, qz.recon)


def apply_recon(u: np.ndarray, recon: Recon) -> np.ndarray:
    """Move each decoded level to its table entry (see :class:`Recon`)."""
    level = u / recon.step
    np.rint(level, out=level)
    n = len(recon.offsets)
    # each level in -n..n restored by a lookup, (k + sign(k) offsets[|k| - 1]) step; past the table
    # k step; level 0 keeps u
    k = np.arange(-n, n + 1, dtype=np.float64)
    off = np.concatenate([[0.0], np.asarray(recon.offsets, dtype=np.float64)])[np.abs(k).astype(np.int64)]
    lut = (k + np.sign(k) * off) * recon.step
    # clip before the integer cast: a tiny step (a corrupt file) would overflow int64 into an index
    idx = np.clip(level, -n, n)
    idx += n
    out = lut[idx.astype(np.int64)]
    del idx
    far = np.abs(level) > n
    if far.any():
        out[far] = level[far] * recon.step
    zero = level == 0
    np.copyto(out, u, where=zero)
    return out


def _lattice_step(a: np.ndarray) -> float | None:
    """The spacing of the lattice that decoded coefficient magnitudes ``a`` sit on, or None when they
    sit on none (a sample-rounding noise of well under 1 is allowed around each point).

    The zero level carries a sample-rounding noise of about 0.3, and more where an encoder codes the
    checkerboard's constant blocks coarsely (x265 at coarse QPs: their reconstruction, no longer flat,
    predicts the next block of weights): ignoring ever larger values near zero finds the lattice
    above that noise, as long as the threshold stays well below the step found."""
    for floor in (2.0, 8.0, 16.0, 32.0):
        step = _lattice_above(a, floor)
        if step is not None and step > 2.5 * floor:
            return step
    return None


def _lattice_above(a: np.ndarray, floor: float) -> float | None:
    """:func:`_lattice_step` on the magnitudes above ``floor``."""
    nz = a[a > floor]
    if nz.size < RECON_MIN_COUNT:
        return None
    guess = float(np.percentile(nz, 2))
    near = nz[(nz > 0.5 * guess) & (nz < 1.5 * guess)]
    step = float(np.median(near)) if near.size else guess
    for _ in range(3):  # least squares on every level once the guess is within half a step
        k = np.rint(nz / step)
        ok = k > 0
        step = float((k[ok] * nz[ok]).sum() / np.square(k[ok]).sum())
    k = np.rint(nz / step)
    if step <= 0 or float(np.sqrt(np.mean(np.square(nz / step - k)))) > 0.1:
        return None
    return step


def fit_recon(qz: Quantized, q: np.ndarray, w: np.ndarray, units: np.ndarray | None = None) -> Recon | None:
    """The reconstruction table that restores ``w`` best from the decoded samples ``q`` (coefficient
    domain): the step from the decoded values, then each level's mean offset of the true
    coefficients ``(w - offset) / scale`` in units of the step. None when the decoded values show no
    lattice (e.g. lossless or a codec that does not quantize coefficients uniformly). ``units``:
    ``raw_units(qz, q)`` when already computed."""
    if qz.spec.block is None:
        return None
    rows = w.shape[0]
    band = _band_rows(w.shape, qz.spec.block)

    def raw(r: int, k: int) -> np.ndarray:
        return _raw_units(qz, q, r, k) if units is None else units[r : r + k]

    sample = []
    for r in range(0, rows, band):
        k = min(band, rows - r)
        sample.append(np.abs(raw(r, k)).ravel()[::7])  # a stride keeps it cheap
    step = _lattice_step(np.concatenate(sample))
    if step is None:
        return None
    sums, counts = np.zeros(RECON_LEVELS + 1), np.zeros(RECON_LEVELS + 1)
    for r in range(0, rows, band):
        k = min(band, rows - r)
        level = np.rint(raw(r, k) / step)
        target = _normalized(w, qz, qz.scale.astype(np.float64), r, k) / step
        mag = np.abs(level).astype(np.int64)
        use = (mag > 0) & (mag <= RECON_LEVELS)
        m = mag[use]
        sums += np.bincount(m, (np.sign(level) * target - mag)[use], RECON_LEVELS + 1)
        counts += np.bincount(m, minlength=RECON_LEVELS + 1)
    off = np.where(counts[1:] >= RECON_MIN_COUNT, sums[1:] / np.maximum(counts[1:], 1), 0.0)
    off = np.clip(off, -0.5, 0.5)  # a centroid stays within its level's cell
    while off.size and off[-1] == 0.0:
        off = off[:-1]
    return Recon(step=float(np.float32(step)), offsets=tuple(float(x) for x in off.astype(np.float16)))


# A refitted scale stays within these factors of the quantizer's. A codec at a coarse QP can zero
# nearly a whole row, and least squares on what is left (a few levels, or float noise of exact
# zeros) can then give absurd scales, which through the 8-bit grid's common span would coarsen
# every other row of the matrix too.
REFIT_RANGE = (1 / 16, 4.0)


def refit(qz: Quantized, q: np.ndarray, w: np.ndarray, values: np.ndarray | None = None) -> Quantized:
    """The fp16 scale and offset of each row (group) that best restore ``w`` from the *decoded*
    integers ``q``, by least squares.

    The quantizer chose its scale before coding; a lossy codec then moves the integers (and
    zeroes many small ones), and a smaller scale toward the conditional mean restores the matrix
    with less squared error. The encoder has both ``w`` and ``q``, so the refit costs no bits:
    it replaces side information that is stored anyway. With compact side information
    (``QuantSpec.compact``) the offset stays zero and the scale, fitted through zero, is snapped to
    its logarithmic grid. ``values``: ``unit_values(qz, q)`` when already computed."""
    rows, cols = w.shape
    group = qz.spec.group or cols
    scale, offset = qz.scale.copy(), qz.offset.copy()
    through_zero = qz.spec.compact and not np.any(qz.offset)
    step = _band_rows(w.shape, qz.spec.block) if qz.spec.block else _row_blocks(w.shape).step
    for r in range(0, rows, step):
        k = min(step, rows - r)
        u_all = _unit_values(qz, q, r, k) if values is None else values[r : r + k]
        w_all = w[r : r + k].astype(np.float64)
        for g, c0 in enumerate(range(0, cols, group)):
            u, t = u_all[:, c0 : c0 + group], w_all[:, c0 : c0 + group]
            old = qz.scale[r : r + k, g].astype(np.float64)
            if through_zero:  # no offsets stored: the least-squares scale through zero
                uu = np.square(u).sum(axis=1)
                a = np.where(uu > 0, (u * t).sum(axis=1) / np.where(uu > 0, uu, 1.0), old)
                scale[r : r + k, g] = np.clip(a, old * REFIT_RANGE[0], old * REFIT_RANGE[1])
                continue
            mu, mt = u.mean(axis=1), t.mean(axis=1)
            var = np.square(u - mu[:, None]).mean(axis=1)
            cov = ((u - mu[:, None]) * (t - mt[:, None])).mean(axis=1)
            a = np.where(var > 0, cov / np.where(var > 0, var, 1.0), old)
            a = np.clip(a, old * REFIT_RANGE[0], old * REFIT_RANGE[1])
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
                # compact scales are snapped to their grid below, not rounded to fp16 (which
                # would flush the tiny scales of small weights toward zero)
                a_s = a.astype(scale.dtype)
                b16 = (mt - a_s.astype(np.float64) * mu).astype(np.float16)
            ok = np.isfinite(a_s) & np.isfinite(b16) & (a_s > 0)  # fp16 overflow: keep the quantizer's
            scale[r : r + k, g] = np.where(ok, a_s, scale[r : r + k, g])
            offset[r : r + k, g] = np.where(ok, b16, offset[r : r + k, g])
    if qz.spec.compact:
        scale = sideinfo.snap(scale)
    return Quantized(q=qz.q, scale=scale, offset=offset, spec=qz.spec, shape=qz.shape, recon=qz.recon)


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

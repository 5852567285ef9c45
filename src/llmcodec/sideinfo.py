"""8-bit logarithmic codes for positive side information (per-row scales, per-column multipliers).

fp16 per row and per column is a noticeable share of a low-rate budget. A scale only needs its ratio to the
others to within a per cent or so: a value on the grid ``2^(n / CODES_PER_OCTAVE)`` is stored as
the byte ``n - lo`` plus one integer ``lo`` per tensor. Snapping moves a value by at most 1.1%
(half a grid step), which adds about 0.004% of squared error to a least-squares scale (the error
grows with the square of the mis-scaling), and 256 codes span 8 octaves, far more than the rows
of a weight matrix spread.

The codes of one tensor cluster around their median (a row's scale follows its RMS, which varies
little from row to row), so they are stored Golomb-Rice coded (``pack``/``unpack``) rather than a
byte each (about half the bits on trained models; docs/research-log.md).

Pure functions; values on the grid round-trip through ``to_codes``/``from_codes`` exactly, and
codes through ``pack``/``unpack``.
"""

from __future__ import annotations

import numpy as np

CODES_PER_OCTAVE = 32
SPAN = 255  # codes 0..255
LO_BITS = 16  # the per-tensor integer ``lo`` is counted as 16 bits


def _exponents(x: np.ndarray, up: bool) -> np.ndarray:
    """Grid exponents of ``x``: nearest, or with ``up`` the first at or above (a value already on
    the grid, whose log is an integer up to float error, keeps its own)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not (np.isfinite(x).all() and (x > 0).all()):
        raise ValueError("log-coded side information must be positive and finite")
    e = CODES_PER_OCTAVE * np.log2(x)
    return np.ceil(e - 1e-4) if up else np.rint(e)  # float32 grid values are off by ~3e-6 here


def snap(x: np.ndarray, up: bool = False) -> np.ndarray:
    """``x`` moved to the nearest grid point (``up``: the next one at or above), float32, with every
    value within ``SPAN`` grid steps of the largest: smaller ones are raised to that floor, which
    for a quantizer scale only makes a row coarser, never out of range."""
    n = _exponents(x, up)
    n = np.maximum(n, n.max() - SPAN)
    return np.exp2(n / CODES_PER_OCTAVE).astype(np.float32)


def to_codes(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(uint8 codes, lo) of values already on the grid (``snap``); ValueError if they are not."""
    n = _exponents(x, False)
    lo = int(n.max()) - SPAN
    codes = np.clip(n - lo, 0, SPAN).astype(np.uint8)
    if not np.array_equal(from_codes(codes, lo), np.asarray(x, dtype=np.float32)):
        raise ValueError("side information is not on the 8-bit logarithmic grid (sideinfo.snap)")
    return codes, lo


def from_codes(codes: np.ndarray, lo: int) -> np.ndarray:
    """The float32 values of ``codes``."""
    return np.exp2((np.asarray(codes, dtype=np.float64) + lo) / CODES_PER_OCTAVE).astype(np.float32)


RICE_K_BITS = 4  # stored in the stream after the 8-bit median code: the Rice parameter k, or RAW
RAW = (1 << RICE_K_BITS) - 1  # a byte per code, where Rice codes would be longer (codes spread widely)
_HEAD_BITS = 8 + RICE_K_BITS


def _zigzag(codes: np.ndarray, ref: int) -> np.ndarray:
    """Differences from ``ref`` as non-negative integers: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ..."""
    d = np.asarray(codes, dtype=np.int64) - ref
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def _sizes(z: np.ndarray) -> list[int]:
    """Bits of the Rice codes of ``z`` (q = z >> k ones, a zero, k bits) for each k below RAW, and
    (last) of a byte per code."""
    return [int(np.sum(z >> k)) + z.size * (k + 1) for k in range(RAW)] + [8 * z.size]


def _median(codes: np.ndarray) -> int:
    return int(np.median(codes)) if codes.size else 0


def packed_bits(codes: np.ndarray) -> int:
    """Bits ``pack`` stores for ``codes``, whole bytes."""
    codes = np.asarray(codes)
    return 8 * -(-(_HEAD_BITS + min(_sizes(_zigzag(codes, _median(codes))))) // 8)


def pack(codes: np.ndarray) -> np.ndarray:
    """uint8 stream of ``codes`` (uint8): their median (8 bits), the Rice parameter k (4 bits) that
    makes the stream shortest, then each code's zigzagged difference from the median, Rice coded
    with k, zero-padded to a whole byte; with k = RAW, the codes a byte each instead."""
    codes = np.asarray(codes).reshape(-1)
    ref = _median(codes)
    z = _zigzag(codes, ref)
    sizes = _sizes(z)
    k = int(np.argmin(sizes))
    out = np.zeros(8 * -(-(_HEAD_BITS + sizes[k]) // 8), np.uint8)
    head = (ref << RICE_K_BITS) | k
    out[:_HEAD_BITS] = [(head >> (_HEAD_BITS - 1 - b)) & 1 for b in range(_HEAD_BITS)]
    if k == RAW:
        out[_HEAD_BITS:_HEAD_BITS + 8 * codes.size] = np.unpackbits(codes.astype(np.uint8))
        return np.packbits(out)
    q, r = z >> k, z & ((1 << k) - 1)
    lens = q + 1 + k
    starts = _HEAD_BITS + np.cumsum(lens) - lens
    ones_before = np.cumsum(q) - q
    out[np.repeat(starts - ones_before, q) + np.arange(int(q.sum()))] = 1  # the unary parts
    for b in range(k):  # the remainders, most significant bit first
        out[starts + q + 1 + b] = (r >> (k - 1 - b)) & 1
    return np.packbits(out)


def unpack(data: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` uint8 codes of a ``pack`` stream; ValueError if the stream is not exactly one."""
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8).reshape(-1))
    if bits.size < _HEAD_BITS:
        raise ValueError("packed side information is shorter than its header")
    head = int(bits[:_HEAD_BITS].astype(np.int64) @ (1 << np.arange(_HEAD_BITS - 1, -1, -1)))
    ref, k = head >> RICE_K_BITS, head & RAW
    if k == RAW:
        end = _HEAD_BITS + 8 * count
        if bits.size < end or bits.size - end >= 8 or bits[end:].any():
            raise ValueError("packed side information does not hold exactly its codes")
        return np.packbits(bits[_HEAD_BITS:end])
    # the k bits after each position, read as one integer (zeros past the end)
    padded = np.concatenate([bits, np.zeros(k, np.uint8)]).astype(np.int64)
    window = np.zeros(bits.size, np.int64)
    for b in range(k):
        window = (window << 1) | padded[b:b + bits.size]
    zeros = np.flatnonzero(bits == 0).tolist()
    window_l = window.tolist()
    z = np.empty(count, np.int64)
    pos, j = _HEAD_BITS, 0
    for i in range(count):
        while j < len(zeros) and zeros[j] < pos:
            j += 1
        if j == len(zeros) or zeros[j] + k >= bits.size:
            raise ValueError("packed side information ends before its last code")
        t = zeros[j]
        z[i] = ((t - pos) << k) | window_l[t + 1] if k else t - pos
        pos = t + 1 + k
    if bits.size - pos >= 8 or bits[pos:].any():
        raise ValueError("packed side information has data after its last code")
    codes = ref + np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    if codes.size and (codes.min() < 0 or codes.max() > SPAN):
        raise ValueError("packed side information decodes to codes outside 0..255")
    return codes.astype(np.uint8)


def bits(values: np.ndarray, packed: bool = True) -> int:
    """Bits stored for log-coded ``values`` (on the grid): their packed codes (``packed``; else a
    byte each) plus ``lo``."""
    return (packed_bits(to_codes(values)[0]) if packed else 8 * np.size(values)) + LO_BITS


def log_coded(values: np.ndarray) -> bool:
    """Whether multipliers are stored as log codes: fp16 ones are kept as fp16 (``--side fp16``),
    all others lie on the grid (``importance.column_scales(..., log8=True)``)."""
    return values.dtype != np.float16

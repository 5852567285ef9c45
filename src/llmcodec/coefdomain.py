"""Block DCT-II pair that places a matrix in a video codec's transform-coefficient domain.

A transform codec quantizes DCT coefficients of (prediction residual) blocks, so its error in the
sample domain is spread evenly over each block whatever the sample values are: small weights get
the same error as large ones, which is what costs perplexity (docs/method.md). If
the frame given to the codec is instead the blockwise *inverse* DCT of the matrix, the codec's own
forward transform gives the matrix back, one weight per coefficient, and its quantizer (with RDOQ
and trellis-coded dependent quantization in VVC) acts on each weight: the error becomes bounded
per weight, like round-to-nearest, while the codec keeps its entropy coder and rate-distortion
search. Intra prediction does not disturb this: it shifts the coefficients the codec quantizes by
the transform of the prediction, and the quantization error of each coefficient is unchanged.

This needs the codec to use one fixed transform size aligned to the block grid (a codec profile
forces that, see ``codecs/vvc.py``). The maps use the codec's own integer DCT matrix, not the
orthonormal DCT it approximates: with the orthonormal one, every decoded coefficient picks up
leakage from the others.

Pure functions on float64 arrays whose two dimensions are multiples of the block size.
"""

from __future__ import annotations

import functools

import numpy as np

# The integer DCT-II of HEVC and VVC (sizes 4..32), defined by the values of its 32-point matrix at
# the angles j * pi / 64: odd j from the 32-point rows, j = 2 mod 4 from the 16-point rows, and so on.
_ODD32 = (90, 90, 88, 85, 82, 78, 73, 67, 61, 54, 46, 38, 31, 22, 13, 4)
_ODD16 = (90, 87, 80, 70, 57, 43, 25, 9)
_ODD8 = (89, 75, 50, 18)
_ODD4 = (83, 36)


def _angle_value(j: int) -> int:
    """Integer ~ 64 sqrt(2) cos(j pi / 64) for 0 < j < 32, as the standards tabulate it."""
    if j % 2:
        return _ODD32[j // 2]
    if j % 4:
        return _ODD16[j // 4]
    if j % 8:
        return _ODD8[j // 8]
    if j % 16:
        return _ODD4[j // 16]
    return 64  # j = 16: cos(pi/4) * 64 sqrt(2)


@functools.cache
def core_matrix(n: int) -> np.ndarray:
    """The HEVC/VVC integer DCT-II of size ``n`` (4, 8, 16 or 32) divided by 64 sqrt(n): within about
    1% of the orthonormal DCT entry by entry, and exactly what the codec multiplies by."""
    if n not in (4, 8, 16, 32):
        raise ValueError(f"the codecs' integer DCT has sizes 4, 8, 16 and 32, not {n}")
    m = np.empty((n, n))
    for k in range(n):
        for i in range(n):
            if k == 0:
                m[k, i] = 64
                continue
            a = ((2 * i + 1) * k * (32 // n)) % 128  # angle in units of pi / 64
            a = 128 - a if a > 64 else a
            m[k, i] = _angle_value(a) if a < 32 else -_angle_value(64 - a)
    m /= 64 * np.sqrt(n)
    m.setflags(write=False)
    return m


@functools.cache
def _inverses(n: int) -> tuple[np.ndarray, np.ndarray]:
    inv = np.linalg.inv(core_matrix(n))
    inv.setflags(write=False)
    inv_t = inv.T.copy()
    inv_t.setflags(write=False)
    return inv, inv_t


def padded_shape(rows: int, cols: int, n: int, used: int | None = None) -> tuple[int, int]:
    """The shape rounded up to whole ``n x n`` blocks, of which the first ``used`` columns (None: all
    ``n``) hold the matrix (see :func:`place`)."""
    used = used or n
    return -(-rows // n) * n, -(-cols // used) * n


def place(x: np.ndarray, n: int, used: int | None = None) -> np.ndarray:
    """``x`` padded to whole blocks, ``used`` columns of it in the first ``used`` coefficient columns of
    each ``n x n`` block and zeros in the others.

    VVC codes at most 1.75 context-coded bins per coefficient of a transform block, and what does
    not fit goes through bypass (Golomb-Rice) bins, which are a poor fit for dense weights: at 3-4
    bits per weight that is most of them. Zero columns cost a few bits per 4x4 group, so with half
    of each block empty every weight gets twice the context-coded budget, for twice the frame area."""
    used = used or n
    rows, cols = x.shape
    out = np.zeros(padded_shape(rows, cols, n, used), dtype=np.result_type(x, np.float64))
    if used == n:
        out[:rows, :cols] = x
        return out
    wide = np.zeros((out.shape[0], out.shape[1] // n * used), dtype=out.dtype)
    wide[:rows, :cols] = x
    out.reshape(out.shape[0], -1, n)[:, :, :used] = wide.reshape(out.shape[0], -1, used)
    return out


def take(y: np.ndarray, n: int, used: int | None, rows: int, cols: int) -> np.ndarray:
    """The inverse of :func:`place`: the ``rows x cols`` matrix from the used columns of the blocks."""
    used = used or n
    if used == n:
        return y[:rows, :cols]
    return y.reshape(y.shape[0], -1, n)[:rows, :, :used].reshape(rows, -1)[:, :cols]


def _blocks(a: np.ndarray, n: int, left: np.ndarray, right: np.ndarray, out_a: bool = False) -> np.ndarray:
    """``out_a``: the result may be written over ``a`` (a temporary of the caller's)."""
    rows, cols = a.shape
    if rows % n or cols % n:
        raise ValueError(f"a {rows}x{cols} array is not made of whole {n}x{n} blocks")
    # left @ block @ right for every block as two large products: ``left`` on each band of n rows,
    # then ``right`` on each run of n columns (far faster than one small product per block)
    t = (left @ a.reshape(rows // n, n, cols)).reshape(rows, cols)
    out = a if out_a and a.dtype == t.dtype and a.flags.c_contiguous else np.empty_like(t)
    np.matmul(t.reshape(rows, cols // n, n), right, out=out.reshape(rows, cols // n, n))
    return out.reshape(rows, cols)


def block_idct(x: np.ndarray, n: int) -> np.ndarray:
    """Blockwise ``A^-1 x A^-T`` (A = :func:`core_matrix`): the samples whose forward transform in
    the codec, ``A y A^T``, is ``x``."""
    inv, inv_t = _inverses(n)
    return _blocks(np.asarray(x, dtype=np.float64), n, inv, inv_t)


def block_dct(y: np.ndarray, n: int, overwrite: bool = False) -> np.ndarray:
    """Blockwise ``A^-T y A^-1``: undoes the codec's inverse transform ``A^T x A``, so the decoded
    samples give back the coefficients the decoder dequantized. ``overwrite``: ``y`` (float64) may
    hold the result."""
    inv, inv_t = _inverses(n)
    return _blocks(np.asarray(y, dtype=np.float64), n, inv_t, inv, overwrite)


def placed_idct(x: np.ndarray, n: int, used: int | None = None) -> np.ndarray:
    """``block_idct(place(x, n, used), n)`` without transforming the zeros ``place`` adds: the column
    transform of each block only takes its ``used`` columns (half the work for half-filled blocks)."""
    used = used or n
    rows, cols = x.shape
    prows, pcols = padded_shape(rows, cols, n, used)
    if used == n:
        return block_idct(place(x, n), n)
    inv, inv_t = _inverses(n)
    wide = np.zeros((prows, pcols // n * used))
    wide[:rows, :cols] = x
    t = (inv @ wide.reshape(prows // n, n, -1)).reshape(prows, pcols // n, used)
    return np.matmul(t, inv_t[:used]).reshape(prows, pcols)


def taken_dct(y: np.ndarray, n: int, used: int | None, rows: int, cols: int) -> np.ndarray:
    """``take(block_dct(y, n), n, used, rows, cols)`` without the coefficients ``take`` drops: each
    block's row transform gives its ``used`` columns only. ``y`` (float64) may be overwritten."""
    used = used or n
    if used == n:
        return take(block_dct(y, n, overwrite=True), n, used, rows, cols)
    inv, inv_t = _inverses(n)
    prows, pcols = y.shape
    if prows % n or pcols % n:
        raise ValueError(f"a {prows}x{pcols} array is not made of whole {n}x{n} blocks")
    t = (inv_t @ y.reshape(prows // n, n, pcols)).reshape(prows, pcols // n, n)
    return np.matmul(t, inv[:, :used]).reshape(prows, -1)[:rows, :cols]


def spread(q: np.ndarray, n: int, fill: int) -> np.ndarray:
    """Put the ``n x n`` blocks of ``q`` on the even squares of a checkerboard of constant blocks.

    Intra prediction predicts a block from the decoded samples just above and left of it. Between
    blocks of weights those samples are noise, and the prediction, however the encoder picks it,
    shifts the coefficients it quantizes: a tiny weight then gets an error of up to half a step
    instead of being rounded to about zero. With every block above and to the left set to
    ``fill`` (the mid-level), every intra mode predicts exactly ``fill`` and the codec quantizes the
    weights themselves. The constant blocks are predicted exactly from each other at a few bits
    each."""
    rows, cols = q.shape
    if rows % n or cols % n:
        raise ValueError(f"a {rows}x{cols} array is not made of whole {n}x{n} blocks")
    out = np.full((2 * rows, 2 * cols), fill, dtype=q.dtype)
    out.reshape(rows // n, 2, n, cols // n, 2, n)[:, 0, :, :, 0, :] = q.reshape(rows // n, n, cols // n, n)
    return out


def gather(s: np.ndarray, n: int) -> np.ndarray:
    """The inverse of :func:`spread`: the blocks on the even squares."""
    rows, cols = s.shape
    if rows % (2 * n) or cols % (2 * n):
        raise ValueError(f"a {rows}x{cols} array is not a checkerboard of {n}x{n} blocks")
    b = s.reshape(rows // (2 * n), 2, n, cols // (2 * n), 2, n)[:, 0, :, :, 0, :]
    return b.reshape(rows // 2, cols // 2)

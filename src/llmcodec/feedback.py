"""Optional and data-aware: error feedback within a matrix through the inverse Hessian (GPTQ's
update), for the coefficient-domain profiles.

A linear layer's output error on inputs ``X`` is ``||(W - W_hat) X||^2 = sum_i e_i^T H e_i`` with
``H = X^T X`` and ``e_i`` row ``i``'s weight error. Quantizing the columns one after another and
moving each column's error onto the columns not yet quantized, along the inverse Hessian, lowers
that sum for the same quantizer (Frantar et al., GPTQ). With ``U`` the upper Cholesky factor of
``H^-1``, a set ``B`` of columns quantized with error ``E_B`` updates the rest ``F`` by
``-E_B U_BB^-1 U_BF`` (for one column: ``-(e_j / U_jj) U_jF``).

In the coefficient-domain profiles the codec quantizes each weight as one transform coefficient of
``u = (w c - offset) / s`` (row scale ``s``, column multiplier ``c``) with one step per QP, so
feedback runs on ``u`` with the Hessian ``D H D``, ``D = diag(1 / c)`` (rows differ only by the
factor ``s_i^2``, which does not change the update), and a scalar quantizer of the codec's step
puts the result on the codec's lattice; the codec then codes it at that QP and RDOQ rarely moves a
value that already sits on its lattice.

A codec's RDOQ does not keep every value that sits on its lattice (it moves a few per cent of them a
level toward zero for rate), so the default codes the codec in the loop instead
(:func:`prepare_with_feedback`): strips of columns are coded one after another at the matrix's QP,
each decoded, and its real error folded into the columns not yet coded (:func:`block_update`). The
decoded values, all on the codec's lattice, are then coded again as one matrix at that QP, so the
artifact keeps one bitstream per matrix (why this design: docs/research-log.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

DAMP = 0.01  # dampening: this fraction of the mean diagonal added to H (GPTQ's default)
BLOCK = 128  # columns per lazy batch: a blocked update, same result as column by column
STRIP = 128  # columns coded per strip by the codec in the loop (a multiple of every block's used columns)


# VVC's dequantization multipliers (levelScale), one per QP modulo 6
_LEVEL_SCALE = (40, 45, 51, 57, 64, 72)


def vvc_coef_step(qp: int) -> float:
    """The lattice spacing of decoded coefficients, in the units of ``coefdomain``'s 32x32 blocks at
    10 bits, of VVC with plain (not dependent) quantization at ``qp``: ``levelScale`` times a power
    of two, an octave per 6 QP (tests/test_feedback.py checks it against the codec)."""
    k = qp + 3
    return _LEVEL_SCALE[k % 6] * 2.0 ** (k // 6) / 32.0


def inverse_factor(h: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """The upper Cholesky factor ``U`` of the dampened ``H^-1`` (``H^-1 = U^T U``).

    Columns whose input never varies (zero diagonal) get a unit diagonal: no error feedback
    reaches or leaves them."""
    h = np.array(h, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"a Hessian must be a square matrix, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("the Hessian has non-finite entries")
    dead = np.diag(h) <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    d = np.diag(h)
    h[np.diag_indices_from(h)] = d + damp * float(np.mean(d))
    low = np.linalg.cholesky(h)  # H = L L^T, so H^-1 = L^-T L^-1
    inv = np.linalg.inv(low)
    hinv = inv.T @ inv
    return np.linalg.cholesky(hinv).T


def column_hessian(h: np.ndarray, col_scale: np.ndarray | None) -> np.ndarray:
    """The Hessian of ``u = w c / s`` per row (up to the row's ``s^2``): ``D H D`` with ``D = diag(1/c)``."""
    if col_scale is None:
        return np.asarray(h, dtype=np.float64)
    d = 1.0 / np.asarray(col_scale, dtype=np.float64)
    return np.asarray(h, dtype=np.float64) * d[:, None] * d[None, :]


def round_to_step(x: np.ndarray, step: float) -> np.ndarray:
    """The nearest point of the lattice ``step * Z``: the codec's scalar quantizer model."""
    return step * np.rint(x / step)


def feedback(u: np.ndarray, factor: np.ndarray, step: float, block: int = BLOCK) -> np.ndarray:
    """GPTQ on the rows of ``u`` with quantizer ``round_to_step(., step)`` and ``factor`` from
    :func:`inverse_factor`: values on the lattice whose output error ``e H e^T`` is lower than
    rounding each value on its own."""
    w = np.array(u, dtype=np.float64)
    cols = w.shape[1]
    if factor.shape != (cols, cols):
        raise ValueError(f"a {factor.shape} factor for a matrix of {cols} columns")
    if not step > 0:
        raise ValueError(f"the quantizer step must be positive, got {step}")
    out = np.empty_like(w)
    for b0 in range(0, cols, block):
        b1 = min(cols, b0 + block)
        err = np.empty((w.shape[0], b1 - b0))
        for j in range(b0, b1):
            q = round_to_step(w[:, j], step)
            out[:, j] = q
            e = (w[:, j] - q) / factor[j, j]
            w[:, j + 1 : b1] -= np.outer(e, factor[j, j + 1 : b1])
            err[:, j - b0] = e
        w[:, b1:] -= err @ factor[b0:b1, b1:]  # the lazy batch's update of the later columns
    return out


def block_update(rest: np.ndarray, err: np.ndarray, factor: np.ndarray, b0: int, b1: int) -> np.ndarray:
    """The later columns ``b1:`` after columns ``b0:b1`` were quantized together with error
    ``err`` (rows x (b1 - b0)): ``rest - err U_BB^-1 U_BF``. For a codec that quantizes a strip
    of columns at once (it cannot be asked column by column)."""
    ubb = factor[b0:b1, b0:b1]
    scaled = np.linalg.solve(ubb.T, err.T).T  # err U_BB^-1
    return rest - scaled @ factor[b0:b1, b1:]


def output_error(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
    """``sum_i e_i^T H e_i`` (``= ||(W - W_hat) X||^2`` for ``H = X^T X``)."""
    e = np.asarray(w, dtype=np.float64) - np.asarray(w_hat, dtype=np.float64)
    return float(np.einsum("ij,jk,ik->", e, np.asarray(h, dtype=np.float64), e))


def strip_feedback(
    x: np.ndarray, factor: np.ndarray, code: Callable[[np.ndarray, int, int], np.ndarray], width: int = STRIP
) -> np.ndarray:
    """Quantize ``x`` in strips of ``width`` columns with ``code(strip, b0, b1)`` (a quantizer that
    takes a strip at once, e.g. a codec: returns the strip as decoded), folding each strip's error
    into the later columns (:func:`block_update`). Returns the decoded matrix."""
    w = np.array(x, dtype=np.float64)
    cols = w.shape[1]
    if factor.shape != (cols, cols):
        raise ValueError(f"a {factor.shape} factor for a matrix of {cols} columns")
    out = np.empty_like(w)
    for b0 in range(0, cols, width):
        b1 = min(cols, b0 + width)
        out[:, b0:b1] = code(w[:, b0:b1], b0, b1)
        if b1 < cols:
            w[:, b1:] = block_update(w[:, b1:], w[:, b0:b1] - out[:, b0:b1], factor, b0, b1)
    return out


def _per_column(v: np.ndarray, cols: int, group: int | None) -> np.ndarray:
    """(rows, groups) side information broadcast to (rows, cols)."""
    v = v.astype(np.float64)
    return np.broadcast_to(v[:, :1], (v.shape[0], cols)) if group is None else np.repeat(v, group, axis=1)[:, :cols]


def prepare_with_feedback(p, w: np.ndarray, factor: np.ndarray, qp: int, codec, profile, width: int = STRIP):
    """``p`` (``coder.prepare`` of ``w``, coefficient domain) with other integers: those the codec
    decodes when strips of columns are coded at ``qp`` with error feedback (:func:`strip_feedback`;
    ``factor``: :func:`inverse_factor` of :func:`column_hessian`). Coding the result at ``qp``
    gives back nearly the same values."""
    from .coder import Prepared, decode_matrix
    from .coefdomain import block_dct, block_idct, place, spread, take
    from .frames import to_frames

    qz = p.quantized
    spec = qz.spec
    n = spec.block
    if n is None:
        raise ValueError(f"tensor {p.name!r}: error feedback needs a coefficient-domain profile")
    rows, cols = w.shape
    if cols <= width:  # one strip: nothing to feed forward
        return p
    used, mid = spec.block_cols or n, 1 << (spec.bits - 1)
    x = np.asarray(w, dtype=np.float64)
    if p.col_scale is not None:
        x = x * p.col_scale.astype(np.float32).astype(np.float64)[None, :]
    s = _per_column(qz.scale, cols, spec.group)
    x = x - _per_column(qz.offset, cols, spec.group)

    def samples(u: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(block_idct(place(u, n, used), n)) + mid, 0, spec.levels).astype(np.uint16)

    def code(strip: np.ndarray, b0: int, b1: int) -> np.ndarray:
        frame = spread(samples(strip / s[:, b0:b1]), n, mid)
        layout = codec.plan(frame.shape[0], frame.shape[1], profile)
        dec = decode_matrix(codec.encode(to_frames(frame, layout), qp, profile), layout, codec, profile, n)
        return take(block_dct(dec.astype(np.float64) - mid, n), n, used, rows, b1 - b0) * s[:, b0:b1]

    q = samples(strip_feedback(x, factor, code, width) / s)
    return Prepared(p.name, replace(qz, q=q), p.layout, to_frames(spread(q, n, mid), p.layout), p.col_scale)


def input_hessians(model, windows, names, progress=None) -> dict[str, np.ndarray]:
    """``X^T X`` (float64) of the input of each linear layer whose weight is named in ``names``
    (parameter names; others are skipped), over the token ``windows``."""
    import torch

    mods = dict(model.named_modules())
    acc: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        mod = mods.get(name.removesuffix(".weight"))
        if not (isinstance(mod, torch.nn.Linear) and name.endswith(".weight")):
            continue

        def hook(module, inputs, output, name=name):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            acc[name] = acc[name] + x.T @ x if name in acc else x.T @ x

        hooks.append(mod.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            for k, x in enumerate(windows):
                model(input_ids=x[None])
                if progress:
                    progress("hessians", k + 1, len(windows))
    finally:
        for h in hooks:
            h.remove()
    return {n: h.numpy() for n, h in acc.items()}

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

Sign-bit hiding would move about one value in 32 off the lattice (to fix a parity), so this runs
with a profile without it (``FEEDBACK_PROFILE``, :func:`check_profile`). The other design, coding
strips of columns with the codec in the loop and folding each strip's decoded error forward
(:func:`block_update`), did worse at equal bits for about six encodes per matrix instead of one
(docs/research-log.md).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

DAMP = 0.01  # dampening: this fraction of the mean diagonal added to H (GPTQ's default)
BLOCK = 128  # columns per lazy batch: a blocked update, same result as column by column
FEEDBACK_PROFILE = "ai-faster-coef-sq-half"  # the default's coding without sign-bit hiding (check_profile)


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


def feedback(u: np.ndarray, factor: np.ndarray, step: float | np.ndarray, block: int = BLOCK) -> np.ndarray:
    """GPTQ on the rows of ``u`` with quantizer ``round_to_step(., step)`` (``step``: one, or one per
    value, broadcast to ``u``'s shape) and ``factor`` from :func:`inverse_factor`: values on the
    lattice whose output error ``e H e^T`` is lower than rounding each value on its own."""
    w = np.array(u, dtype=np.float64)
    cols = w.shape[1]
    if factor.shape != (cols, cols):
        raise ValueError(f"a {factor.shape} factor for a matrix of {cols} columns")
    steps = np.broadcast_to(np.asarray(step, dtype=np.float64), w.shape)
    if not np.all(steps > 0):
        raise ValueError("the quantizer step must be positive")
    out = np.empty_like(w)
    for b0 in range(0, cols, block):
        b1 = min(cols, b0 + block)
        err = np.empty((w.shape[0], b1 - b0))
        for j in range(b0, b1):
            q = round_to_step(w[:, j], steps[:, j])
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


def _per_column(v: np.ndarray, cols: int, group: int | None) -> np.ndarray:
    """(rows, groups) side information broadcast to (rows, cols)."""
    v = v.astype(np.float64)
    return np.broadcast_to(v[:, :1], (v.shape[0], cols)) if group is None else np.repeat(v, group, axis=1)[:, :cols]


def check_profile(codec, profile) -> None:
    """Error feedback needs the codec to keep values that sit on its lattice: VVC in the coefficient
    domain, 32x32 blocks at 10 bits, without dependent quantization and without sign-bit hiding
    (which moves about one coefficient in 32 to fix a parity: docs/research-log.md)."""
    opts = dict(profile.options)
    ok = (codec.name == "vvc" and profile.coef_block == 32 and codec.sample_bits(profile) == 10
          and opts.get("DepQuant") == "0" and opts.get("SignHideFlag") == "0")
    if not ok:
        raise ValueError(
            f"error feedback needs VVC in the coefficient domain without dependent quantization or sign-bit "
            f"hiding (e.g. profile {FEEDBACK_PROFILE!r}); {codec.name} profile {profile.name!r} is not one"
        )


def prepare_with_feedback(p, w: np.ndarray, factor: np.ndarray, qp: int):
    """``p`` (``coder.prepare`` of ``w``, coefficient domain) with other integers: :func:`feedback`
    on ``W * c - offset`` with the codec's lattice at ``qp`` in each row's (group's) units, so that
    coding the result at ``qp`` (a :func:`check_profile` profile) keeps nearly every value."""
    from .coder import Prepared
    from .coefdomain import block_idct, place, spread
    from .frames import to_frames

    qz = p.quantized
    spec = qz.spec
    n = spec.block
    if n is None:
        raise ValueError(f"tensor {p.name!r}: error feedback needs a coefficient-domain profile")
    rows, cols = w.shape
    used, mid = spec.block_cols or n, 1 << (spec.bits - 1)
    x = np.asarray(w, dtype=np.float64)
    if p.col_scale is not None:
        x = x * p.col_scale.astype(np.float32).astype(np.float64)[None, :]
    s = _per_column(qz.scale, cols, spec.group)
    x = x - _per_column(qz.offset, cols, spec.group)
    u = feedback(x, factor, vvc_coef_step(qp) * s) / s
    q = np.clip(np.rint(block_idct(place(u, n, used), n)) + mid, 0, spec.levels).astype(np.uint16)
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

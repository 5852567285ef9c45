"""Optional and data-aware: how much each coded matrix's error costs the model, from a little text.

Everything else in llmcodec is calibration-free; this runs only when a calibration text is given
(``CompressSettings.calibration``, ``--calibration``). It replaces the data-free priors that decide
how the bit budget is shared *between* matrices (one QP for all, finer edge layers) with a measured
estimate; how the error is shaped *within* a matrix (row scales, column multipliers) is unchanged.

A second-order model of the loss: an error ``dW`` on a matrix raises the expected loss by about
``1/2 sum_ij F_ij dW_ij^2``, ``F`` the diagonal of the Fisher information, estimated by the squared
gradients of the language-model loss on a few windows of text (the empirical Fisher). At one QP a
matrix's codec error has variance ``k^2 p_ij``, ``p_ij`` the squared step of row ``i`` over the
squared multiplier of column ``j`` (what the default's shaping gives), ``k`` doubling every
``qp_per_octave`` QP. So a QP offset ``o`` costs ``2^(2 o / q) S`` loss with ``S = sum_ij F_ij p_ij``
and saves about ``n o / q`` bits (``n`` weights). Equal slopes (the Lagrangian optimum) give
``o = (q / 2) log2(n / S)`` plus one constant, which rate control sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

WINDOW = 128  # tokens per calibration window; more, shorter windows give more gradient samples
MAX_OCTAVES = 2.0  # no matrix's step moves more than this many octaves from the median's


def calibration_text(spec: str) -> str:
    """``ptb-train`` / ``ptb-valid`` / ``ptb-test`` (Penn Treebank splits) or a UTF-8 text file."""
    if spec.startswith("ptb-"):
        from .evaluate import ptb_text  # torch and treebank: only when calibrating

        return ptb_text(spec.removeprefix("ptb-"))
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"calibration text {spec!r}: no such file (or give ptb-train, ptb-valid or ptb-test)")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"calibration text {spec!r} is empty")
    return text


def calibration_windows(tokenizer, text: str, tokens: int, window: int = WINDOW):
    """The first ``tokens`` tokens of ``text`` (at least one window) as rows of ``window`` tokens."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    n = min(len(ids), tokens) // window
    if n == 0:
        raise ValueError(f"calibration needs at least {window} tokens of text, got {min(len(ids), tokens)}")
    return ids[: n * window].view(n, window)


def squared_gradients(
    model, windows, names: Sequence[str], progress: Callable[[str, int, int], None] | None = None
) -> dict[str, np.ndarray]:
    """Mean over ``windows`` of the squared gradient of the language-model loss with respect to
    each parameter in ``names``: the empirical Fisher diagonal, up to one factor for all."""
    import torch

    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameter {missing[0]!r} to calibrate ({len(missing)} missing)")
    wanted = set(names)
    for n, p in params.items():
        p.requires_grad_(n in wanted)
    acc = {n: torch.zeros(params[n].shape, dtype=torch.float32) for n in names}
    model.eval()
    for k, x in enumerate(windows):
        model.zero_grad(set_to_none=True)
        out = model(input_ids=x[None], labels=x[None])
        if getattr(out, "loss", None) is None:
            raise ValueError("data-aware calibration needs a causal language model (one that returns a loss)")
        out.loss.backward()
        for n in names:
            acc[n] += params[n].grad.detach().float().square()
        if progress:
            progress("calibrate", k + 1, len(windows))
    model.zero_grad(set_to_none=True)
    return {n: (a / len(windows)).numpy() for n, a in acc.items()}


def loss_weight(fisher: np.ndarray, row_step: np.ndarray, col_scale: np.ndarray | None) -> float:
    """``S = sum_ij F_ij p_ij``: the loss a matrix's codec error costs at unit step, with
    ``p_ij = (row_step_i / c_j)^2`` (``row_step``: (rows,) or (rows, cols), ``c``: column multipliers)."""
    p = np.square(np.asarray(row_step, dtype=np.float64))
    if p.ndim == 1:
        p = p[:, None]
    if col_scale is not None:
        p = p / np.square(col_scale.astype(np.float64))[None, :]
    return float(np.sum(fisher.astype(np.float64) * p))


def sensitivity_offsets(
    weights: Sequence[float], numel: Sequence[int], qp_per_octave: float = 6.0, max_octaves: float = MAX_OCTAVES
) -> list[int]:
    """QP offsets ``(q / 2) log2(n / S)`` for loss weights ``S`` (``loss_weight``) of matrices of
    ``n`` weights, relative to the median matrix and within ``max_octaves`` of it. A matrix whose
    gradients vanish (S = 0) gets the coarsest step allowed."""
    s = np.asarray(weights, dtype=np.float64)
    if s.size == 0:
        return []
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("loss weights must be finite and non-negative")
    n = np.asarray(numel, dtype=np.float64)
    logs = np.log2(n / np.maximum(s, 1e-300))
    o = 0.5 * qp_per_octave * (logs - float(np.median(logs)))
    lim = qp_per_octave * max_octaves
    return [int(round(v)) for v in np.clip(o, -lim, lim)]

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
``o = (q / 2) log2(n / S)`` plus one constant, which rate control sets; llmcodec uses half of
that spread (``STRENGTH``). What it buys against the data-free default: docs/method.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

WINDOW = 128  # tokens per calibration window; more, shorter windows give more gradient samples
MAX_OCTAVES = 2.0  # no matrix's step moves more than this many octaves from the median's
# Half the equal-slope offsets: the full ones over-spread the step, as noisy estimates of a
# log-ratio do (docs/research-log.md).
STRENGTH = 0.5


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


ESTIMATORS = ("window", "position")


def squared_gradients(
    model,
    windows,
    names: Sequence[str],
    progress: Callable[[str, int, int], None] | None = None,
    per: str = "window",
    reduce: Mapping[str, Callable] | None = None,
) -> dict[str, np.ndarray]:
    """The diagonal of the empirical Fisher of the language-model loss for each matrix in ``names``
    (up to one factor for all), averaged over ``windows``.

    ``per="window"``: the squared gradient of each window's mean loss. ``per="position"``:
    ``sum_t g_ti^2 x_tj^2`` over the positions ``t`` of each window, with ``x_t`` a linear layer's
    input and ``g_t`` the loss gradient at its output there (the per-position terms of the weight
    gradient ``sum_t g_t x_t^T``, squared one by one). The per-window one allocated better
    (docs/research-log.md).

    ``reduce`` (by name): what to keep of each matrix's squared gradients instead of all of them,
    e.g. its loss weight (``loss_weight_reducer``), so that memory holds no per-weight copy. Each
    gradient is folded in as soon as it is complete and then dropped, so at most one matrix's
    gradient exists at a time (besides the full statistics kept without ``reduce``)."""
    import torch

    if per not in ESTIMATORS:
        raise ValueError(f"unknown estimator {per!r}; choose one of {', '.join(ESTIMATORS)}")
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameter {missing[0]!r} to calibrate ({len(missing)} missing)")
    wanted = set(names)
    for n, p in params.items():
        p.requires_grad_(n in wanted)
    acc: dict[str, torch.Tensor] = {}

    def fold(n: str, sq: torch.Tensor) -> None:
        part = sq if reduce is None else reduce[n](sq)
        acc[n] = acc[n] + part if n in acc else part.clone()

    hooks = []
    for n in names:
        if per == "position":
            mod = modules.get(n.removesuffix(".weight"))
            if not isinstance(mod, torch.nn.Linear) or mod.weight is not params[n]:
                raise ValueError(f"{n!r} is not the weight of a linear layer: use per='window' for it")
            hooks.append(mod.register_forward_hook(_position_hook(functools.partial(fold, n))))
        hooks.append(params[n].register_post_accumulate_grad_hook(functools.partial(_fold_grad, fold, n, per)))
    model.eval()
    model.zero_grad(set_to_none=True)  # a stale gradient would be folded into the first window's
    try:
        for k, x in enumerate(windows):
            out = model(input_ids=x[None], labels=x[None])
            if getattr(out, "loss", None) is None:
                raise ValueError("data-aware calibration needs a causal language model (one that returns a loss)")
            out.loss.backward()
            if progress:
                progress("calibrate", k + 1, len(windows))
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {n: (acc[n] / len(windows)).numpy() if n in acc else np.zeros(params[n].shape if reduce is None else ())
            for n in names}


def _fold_grad(fold, name: str, per: str, p) -> None:
    """A matrix's gradient is complete: fold its square in (per window) and free it."""
    if per == "window":
        fold(name, p.grad.detach().float().square())
    p.grad = None


def _position_hook(fold):
    """Fold in ``sum_t g_t^2 x_t^2`` for one linear layer's forward pass, when its output's gradient arrives."""

    def hook(module, inputs, output):
        x2 = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1]).square()

        def on_grad(g):
            fold(g.detach().float().reshape(-1, g.shape[-1]).square().T @ x2)

        output.register_hook(on_grad)

    return hook


def pattern_factors(
    w: np.ndarray, col_scale: np.ndarray | None = None, group: int | None = None, shared_scale: bool = False
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``error_pattern`` in factored form: the step of each row and group (rows, groups), the column
    multipliers and the group size, so that ``p_ij = step[i, j // size] / c_j``."""
    x = np.asarray(w, dtype=np.float64)
    if col_scale is not None:
        x = x * col_scale.astype(np.float64)[None, :]
    cols = x.shape[1]
    size = group or cols
    rms = np.stack([np.sqrt(np.mean(np.square(x[:, c : c + size]), axis=1)) for c in range(0, cols, size)], axis=1)
    if shared_scale:
        rms = np.full_like(rms, rms.max())
    return rms, None if col_scale is None else col_scale.astype(np.float64), size


def error_pattern(
    w: np.ndarray, col_scale: np.ndarray | None = None, group: int | None = None, shared_scale: bool = False
) -> np.ndarray:
    """The standard deviation, up to one factor, of a matrix's codec error at one QP under
    llmcodec's shaping: the step of each row (group), proportional to the RMS of ``w * c`` there
    (one step for all with ``shared_scale``), over each column's multiplier ``c``."""
    rms, c, size = pattern_factors(w, col_scale, group, shared_scale)
    p = np.repeat(rms, size, axis=1)[:, : np.asarray(w).shape[1]]
    return p if c is None else p / c[None, :]


def fisher_loss_weight(fisher: np.ndarray, pattern: np.ndarray) -> float:
    """``S = sum_ij F_ij p_ij^2``: the loss a matrix's codec error costs at unit step, to second order."""
    return float(np.sum(fisher.astype(np.float64) * np.square(pattern)))


def loss_weight_reducer(factors: tuple[np.ndarray, np.ndarray | None, int]) -> Callable:
    """``fisher_loss_weight`` of one window's squared gradients against a ``pattern_factors``
    pattern, as a ``squared_gradients`` reducer: a scalar, without the pattern at full size."""
    import torch

    rms, c, size = factors
    step2 = torch.from_numpy(np.square(rms))
    inv_c2 = None if c is None else torch.from_numpy(1.0 / np.square(c))

    def reduce(sq):
        x = sq.double() if inv_c2 is None else sq.double() * inv_c2[None, :]
        rows, cols = x.shape
        pad = (-cols) % size
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        return (x.reshape(rows, -1, size).sum(dim=2) * step2).sum()

    return reduce


def sensitivity_offsets(
    weights: Sequence[float],
    numel: Sequence[int],
    qp_per_octave: float = 6.0,
    strength: float = STRENGTH,
    max_octaves: float = MAX_OCTAVES,
) -> list[int]:
    """QP offsets ``strength (q / 2) log2(n / S)`` for loss weights ``S`` (``fisher_loss_weight``)
    of matrices of ``n`` weights, relative to the median matrix and within ``max_octaves`` of it.
    A matrix whose gradients vanish (S = 0) gets the coarsest step allowed."""
    s = np.asarray(weights, dtype=np.float64)
    if s.size == 0:
        return []
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("loss weights must be finite and non-negative")
    n = np.asarray(numel, dtype=np.float64)
    logs = np.log2(n / np.maximum(s, 1e-300))
    o = strength * 0.5 * qp_per_octave * (logs - float(np.median(logs)))
    lim = qp_per_octave * max_octaves
    return [int(round(v)) for v in np.clip(o, -lim, lim)]

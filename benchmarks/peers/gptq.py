"""GPTQ (Frantar et al., 2022) on CPU in torch: a calibration-data peer for benchmarks/peers.

Per linear matrix ``W`` (out x in) with the Hessian ``H = 2/n X^T X`` of its n calibration inputs:
dampen ``H`` by a fraction of its mean diagonal, take the upper Cholesky factor of ``H^-1`` and
quantize columns left to right, each to a min/max grid per row and group of ``group`` columns, folding
each column's error into the columns not yet quantized (inside a block of ``block`` columns at once,
then into the rest of the matrix by one matrix product: the lazy batch update). Layers are quantized
in order, each on the outputs of the already-quantized layers before it (the paper's sequential mode).

Stored per group and row: an fp16 scale and a ``bits``-bit integer zero (GPTQ's packed format).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GPTQSettings:
    bits: int = 4
    group: int | None = 128  # None: one grid per row
    block: int = 128  # lazy-batch width; a multiple of ``group``
    damp: float = 0.01  # fraction of the mean Hessian diagonal added to it


@dataclass
class GPTQResult:
    w_hat: torch.Tensor  # dequantized, float32, the shape of W
    bits: int  # integer payload + fp16 scales + integer zeros


def grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max affine grid of each row of ``w`` (rows x cols): fp16-rounded scale and integer zero."""
    maxq = 2**bits - 1
    lo = torch.clamp(w.min(dim=1).values, max=0)
    hi = torch.clamp(w.max(dim=1).values, min=0)
    scale = (hi - lo) / maxq
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).half().to(w.dtype)
    zero = torch.clamp(torch.round(-lo / scale), 0, maxq)
    return scale, zero


def quantize_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def rtn(w: torch.Tensor, s: GPTQSettings) -> torch.Tensor:
    """Round-to-nearest on the same grids GPTQ uses (the baseline it improves on)."""
    out = torch.empty_like(w)
    g = s.group or w.shape[1]
    for c in range(0, w.shape[1], g):
        scale, zero = grid(w[:, c : c + g], s.bits)
        out[:, c : c + g] = quantize_column(w[:, c : c + g], scale[:, None], zero[:, None], s.bits)
    return out


def stored_bits(shape: tuple[int, int], s: GPTQSettings) -> int:
    rows, cols = shape
    groups = math.ceil(cols / (s.group or cols))
    return rows * cols * s.bits + rows * groups * (16 + s.bits)


def gptq(w: torch.Tensor, h: torch.Tensor, s: GPTQSettings = GPTQSettings()) -> GPTQResult:
    """Quantize ``w`` (out x in) given the Hessian ``h`` (in x in) of its inputs."""
    if w.ndim != 2 or h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"W {tuple(w.shape)} and H {tuple(h.shape)} do not match")
    g = s.group or w.shape[1]
    if s.block % g and s.group is not None:
        raise ValueError(f"block {s.block} must be a multiple of group {g}")
    dtype = w.dtype if w.dtype == torch.float64 else torch.float32
    w = w.to(dtype).clone()
    h = h.to(dtype).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    if s.damp > 0:
        h += s.damp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    cols = w.shape[1]
    block = s.block if s.group is not None else cols
    scale = zero = None
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        w1 = w[:, b0:b1].clone()
        err = torch.zeros_like(w1)
        hb = hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            if (b0 + i) % g == 0:  # a new group starts: its grid from the weights as updated so far
                scale, zero = grid(w1[:, i : i + g], s.bits)
            col = w1[:, i]
            qc = quantize_column(col, scale, zero, s.bits)
            q[:, b0 + i] = qc
            e = (col - qc) / hb[i, i]
            w1[:, i:] -= e[:, None] * hb[i, i:][None, :]
            err[:, i] = e
        w[:, b1:] -= err @ hinv[b0:b1, b1:]
    return GPTQResult(q.float(), stored_bits(tuple(w.shape), s))


# --- the model: Hessians from calibration windows, layer by layer -------------------------------------


class _Stop(Exception):
    pass


@torch.inference_mode()
def _first_layer_inputs(model, windows: torch.Tensor, batch: int):
    """Hidden states entering the first decoder layer for each batch of windows, and the keyword
    arguments (position embeddings, mask) the model passes to every layer."""
    layers = model.model.layers
    caught: list[tuple[torch.Tensor, dict]] = []

    def hook(_mod, args, kwargs):
        hs = args[0] if args else kwargs.pop("hidden_states")
        caught.append((hs, {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, len(windows), batch):
            try:
                model(input_ids=windows[i : i + batch], use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return caught


def _run_layer(layer, hs: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(hs, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def quantize_model(model, windows: torch.Tensor, s: GPTQSettings, batch: int = 8, progress=None) -> dict[str, int]:
    """Replace every decoder linear weight of ``model`` (a Llama-style causal LM) in place with its
    GPTQ quantization on calibration ``windows`` (n x tokens); returns the stored bits per name."""
    states = _first_layer_inputs(model, windows, batch)
    bits: dict[str, int] = {}
    layers = model.model.layers
    for li, layer in enumerate(layers):
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        hess = {n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for n, m in linears.items()}
        count = {"n": 0}

        def make_hook(acc: torch.Tensor):
            def hook(_mod, args):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                acc.addmm_(x.T, x)

            return hook

        handles = [m.register_forward_pre_hook(make_hook(hess[n])) for n, m in linears.items()]
        for hs, kw in states:
            count["n"] += hs.shape[0] * hs.shape[1]
            _run_layer(layer, hs, kw)
        for h in handles:
            h.remove()
        for n, m in linears.items():
            h = 2 * hess[n] / count["n"]
            res = gptq(m.weight.data.float(), h, s)
            m.weight.data.copy_(res.w_hat.to(m.weight.dtype))
            bits[f"model.layers.{li}.{n}.weight"] = res.bits
        states = [(_run_layer(layer, hs, kw), kw) for hs, kw in states]
        if progress:
            progress(li + 1, len(layers))
    return bits

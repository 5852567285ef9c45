"""Data-free importance of each input column of a weight matrix, from the weights alone.

The error a linear layer adds to its output is ``E||dW x||^2 = sum_j ||dW[:, j]||^2 E[x_j^2]`` for
roughly uncorrelated inputs, so column ``j`` matters in proportion to the mean square of input
``j``. Without data we estimate that from the model itself, for Llama-style decoders:

* q/k/v and gate/up read the RMS-normalized hidden state times the norm's weight ``g``: a unit
  mean-square input times ``g_j``, so importance ``g_j^2``;
* o_proj reads attention outputs, mixtures of value vectors ``v = W_v x``: channel ``j`` has mean
  square ``||W_v[j] * g||^2`` (its kv head's row, under grouped-query attention);
* down_proj reads ``silu(gate) * up``: channel ``j`` has mean square about
  ``||W_gate[j] * g||^2 * ||W_up[j] * g||^2`` (independent factors; silu(t) ~ t/2 up to a factor).

Coding ``W * diag(c)`` with ``c_j = importance_j^(alpha/2)`` and dividing by ``c`` after decoding
makes a codec that spreads squared error evenly put less of it where inputs are large: with
``alpha = 1`` it is the weighted reverse water-filling solution. Names that match no rule get
no weighting. Nothing here looks at text: it is calibration-free.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from . import sideinfo

Get = Callable[[str], np.ndarray]  # name -> float array

_LAYER = re.compile(r"^(?P<prefix>.*\.layers\.\d+\.)(?P<block>self_attn|mlp)\.(?P<proj>\w+_proj)\.weight$")


def _row_energy(w: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.square(w.astype(np.float64) * g[None, :].astype(np.float64)).sum(axis=1)


def column_importance(name: str, get: Get, names: set[str], config: dict | None) -> np.ndarray | None:
    """Mean-square estimate of each input of ``name`` (None when no rule applies)."""
    m = _LAYER.match(name)
    if m is None:
        return None
    pre, proj = m["prefix"], m["proj"]
    attn_norm, mlp_norm = pre + "input_layernorm.weight", pre + "post_attention_layernorm.weight"
    if proj in ("q_proj", "k_proj", "v_proj") and attn_norm in names:
        return np.square(get(attn_norm).astype(np.float64))
    if proj in ("gate_proj", "up_proj") and mlp_norm in names:
        return np.square(get(mlp_norm).astype(np.float64))
    if proj == "o_proj" and attn_norm in names and pre + "self_attn.v_proj.weight" in names:
        v = _row_energy(get(pre + "self_attn.v_proj.weight"), get(attn_norm))
        cols = get(name).shape[1]
        if cols % v.size:
            return None
        # grouped-query attention: several query heads share one kv head
        heads = int((config or {}).get("num_attention_heads", 0)) or None
        kv_heads = int((config or {}).get("num_key_value_heads", 0)) or heads
        if heads and kv_heads and cols % heads == 0:
            head_dim = cols // heads
            v = v.reshape(kv_heads, head_dim)
            return np.repeat(v, heads // kv_heads, axis=0).reshape(-1)
        return np.tile(v, cols // v.size)
    if proj == "down_proj" and mlp_norm in names and pre + "mlp.gate_proj.weight" in names:
        g = get(mlp_norm)
        gate = _row_energy(get(pre + "mlp.gate_proj.weight"), g)
        up = _row_energy(get(pre + "mlp.up_proj.weight"), g) if pre + "mlp.up_proj.weight" in names else 1.0
        return gate * up
    return None


def balance_importance(w: np.ndarray) -> np.ndarray:
    """Importance of each input column as the inverse of its mean-square weight.

    A trained layer balances its products ``w_ij x_j``: inputs that run large (the massive
    activations of LLM hidden states) meet small weights, and a codec that gives those small
    weights an ordinary error puts much of the layer's output error on those few columns (see
    docs/method.md). Weighting by ``1 / mean_i w_ij^2`` codes small columns finer, from the
    weights alone."""
    ms = np.mean(np.square(np.asarray(w, dtype=np.float64)), axis=0)
    return 1.0 / np.maximum(ms, 1e-30)


def column_scales(importance: np.ndarray, alpha: float = 1.0, clip: float = 16.0, log8: bool = True) -> np.ndarray:
    """Per-column multipliers ``c`` (median 1, clipped to [1/clip, clip]): float32 values on the
    8-bit logarithmic grid of ``sideinfo`` (stored as a byte each), or with ``log8=False`` fp16.

    Normalizing by the median, not the mean, keeps one dead column (importance ~0) from shifting
    every other column into the clip."""
    imp = np.maximum(np.asarray(importance, dtype=np.float64), 1e-30)
    log_c = 0.5 * alpha * np.log2(imp)
    log_c -= np.median(log_c)
    c = np.exp2(np.clip(log_c, -np.log2(clip), np.log2(clip)))
    return sideinfo.snap(c) if log8 else c.astype(np.float16)


# The norm whose output the output head reads (Llama/Mistral/Qwen "norm", GPT-2 "ln_f", Phi "final_layernorm").
_FINAL_NORM = re.compile(r"^(?:[\w.]*\.)?(?:norm|ln_f|final_layernorm|final_layer_norm|norm_f)\.weight$")
_HEAD = re.compile(r"(?:^|\.)(?:lm_head|embed_out)\.weight$")


def head_importance(
    name: str, cols: int, get: Get, names: set[str], config: dict | None, tied: dict[str, str] | None = None
) -> np.ndarray | None:
    """Importance of each column of an output head (or of a token embedding tied to one): the head
    reads the final norm's output, a unit mean-square state times the norm's weight ``g``, so column
    ``j`` of its ``cols`` matters as ``g_j^2`` (``(1 + g_j)^2`` for Gemma's norm). None for an
    embedding that no head shares (``tied``: tensor -> the tensor it shares storage with), or when
    no final norm is found."""
    tied = tied or {}
    if not _HEAD.search(name) and any(_HEAD.search(n) and tied.get(n) != name for n in names):
        return None  # an untied embedding: a lookup table whose error is normalized before use
    for n in sorted(names):
        if _FINAL_NORM.match(n) and not re.search(r"\.\d+\.", n):
            g = get(n).astype(np.float64).reshape(-1)
            if g.size != cols:
                continue
            if str((config or {}).get("model_type", "")).startswith("gemma"):
                g = 1.0 + g
            return np.square(g)
    return None

"""KIVI-style round-to-nearest of a KV cache (arXiv 2402.02750): keys per channel, values per token.

Asymmetric B-bit rounding in groups of G: for keys, each channel of each head over G consecutive
tokens; for values, each token of each head over G consecutive channels. Every group stores an
fp16 scale and an fp16 zero point (its minimum), counted in the bits per element. KIVI's window
of recent tokens kept in full precision is left out (all tokens are quantized).
"""

from __future__ import annotations

import torch


def _groups_rtn(x: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, int]:
    """Round ``x`` (``[..., n]``) in groups of ``group`` along its last axis; returns it and the group count."""
    n = x.shape[-1]
    pad = -n % group
    xp = torch.nn.functional.pad(x, (0, pad)) if pad else x
    g = xp.reshape(*xp.shape[:-1], -1, group)
    # a padded tail must not widen its group's range: use the group's own values there
    if pad:
        last = g[..., -1, :]
        fill = last[..., : group - pad].mean(-1, keepdim=True).expand_as(last)
        mask = torch.arange(group) >= group - pad
        g = g.clone()
        g[..., -1, :] = torch.where(mask, fill, last)
    lo = g.amin(-1, keepdim=True).half().float()
    hi = g.amax(-1, keepdim=True)
    scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-8).half().float()
    q = torch.clamp(torch.round((g - lo) / scale), 0, 2**bits - 1)
    out = (q * scale + lo).reshape(xp.shape)[..., :n]
    return out, g.shape[-2] * g[..., 0, 0].numel()


def kivi(keys: torch.Tensor, values: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Quantize one layer's ``[1, heads, tokens, dim]`` keys (per channel, groups of tokens) and values
    (per token, groups of channels). Returns both and the bits spent (codes, scales and zero points)."""
    k, gk = _groups_rtn(keys.transpose(-1, -2).float(), bits, group)
    v, gv = _groups_rtn(values.float(), bits, group)
    spent = bits * (keys.numel() + values.numel()) + 32 * (gk + gv)
    return k.transpose(-1, -2).to(keys.dtype), v.to(values.dtype), spent

"""Perplexity on Penn Treebank language-modelling text.

Protocol: the split's text (``treebank.penn[split]``: lower-cased, ``<unk>``, ``N``, one sentence a
line) is tokenized as one string without special tokens, cut into consecutive non-overlapping
windows of ``window`` tokens (a last partial window is dropped), and each window is scored on its
``window - 1`` next-token predictions. Perplexity = exp(mean negative log-likelihood) over all of
them. ``max_windows`` takes the first windows only (a quick mode).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

QUICK_WINDOWS = 8


@dataclass(frozen=True)
class EvalSettings:
    split: str = "test"
    window: int = 512
    max_windows: int | None = None  # None: the whole split


@dataclass
class EvalResult:
    perplexity: float
    tokens: int  # predicted tokens
    windows: int
    seconds: float
    settings: EvalSettings


def ptb_text(split: str) -> str:
    import treebank

    if split not in ("train", "valid", "test"):
        raise ValueError(f"unknown Penn Treebank split {split!r}; choose train, valid or test")
    return treebank.penn[split]


def token_windows(tokenizer, text: str, settings: EvalSettings) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    n = len(ids) // settings.window
    if settings.max_windows is not None:
        n = min(n, settings.max_windows)
    if n == 0:
        raise ValueError(f"text has fewer than {settings.window} tokens")
    return ids[: n * settings.window].view(n, settings.window)


@torch.inference_mode()
def perplexity(model, tokenizer, settings: EvalSettings = EvalSettings(), batch: int = 4, progress=None) -> EvalResult:
    t0 = time.perf_counter()
    windows = token_windows(tokenizer, ptb_text(settings.split), settings)
    nll, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch]
        logits = model(input_ids=x).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
        )
        nll += float(loss)
        count += x[:, 1:].numel()
        if progress:
            progress("eval", min(i + batch, len(windows)), len(windows))
    return EvalResult(math.exp(nll / count), count, len(windows), time.perf_counter() - t0, settings)

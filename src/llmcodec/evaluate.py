"""Perplexity on Penn Treebank language-modelling text.

Protocol: the split's text (``treebank.penn[split]``: lower-cased, ``<unk>``, ``N``, one sentence a
line) is tokenized as one string without special tokens, cut into consecutive non-overlapping
windows of ``window`` tokens (a last partial window is dropped), and each window is scored on its
``window - 1`` next-token predictions. Perplexity = exp(mean negative log-likelihood) over all of
them. ``max_windows`` takes the first windows only (a quick mode).

Accuracy on the same predictions (no download, no extra forward pass):
- next-token: the top-1 token equals the next token;
- next-word: every token of a whitespace-separated word is the top-1 prediction given the true text
  before it (teacher forcing), over the words wholly inside a window's predicted positions;
- last-word: the same for the last word of each sentence (line) of the split, a LAMBADA-like measure.
Word measures need a tokenizer that reports character offsets (a fast tokenizer); otherwise they are None.

For an encoder without a language-modelling head (a sentence-embedding model such as MiniLM), the
measure is instead the cosine similarity of sentence embeddings to the uncompressed model's on the
split's sentences (lines of at least ``min_words`` words): each embedding the attention-masked mean
of the last hidden states, unit-normalized (sentence-transformers' mean pooling and normalization).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np
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
    next_token_accuracy: float | None = None
    next_word_accuracy: float | None = None
    last_word_accuracy: float | None = None
    words: int = 0  # words scored for next-word accuracy
    sentences: int = 0  # sentence-final words scored for last-word accuracy


def ptb_text(split: str) -> str:
    import treebank

    if split not in ("train", "valid", "test"):
        raise ValueError(f"unknown Penn Treebank split {split!r}; choose train, valid or test")
    return treebank.penn[split]


def ptb_sentences(n: int, split: str = "test", min_words: int = 4) -> list[str]:
    """The split's first ``n`` lines of at least ``min_words`` words, stripped."""
    lines = (s.strip() for s in ptb_text(split).splitlines())
    return [s for s in lines if len(s.split()) >= min_words][:n]


@dataclass(frozen=True)
class Similarity:
    cos_mean: float
    cos_min: float
    sentences: int


def cosine_similarity(emb: np.ndarray, ref: np.ndarray) -> Similarity:
    """Mean and least cosine similarity of unit-normalized embeddings to their references, row by row."""
    if emb.shape != ref.shape or emb.ndim != 2 or len(emb) == 0:
        raise ValueError(f"embeddings of shape {emb.shape} cannot be compared with references of shape {ref.shape}")
    cos = (emb.astype(np.float64) * ref.astype(np.float64)).sum(axis=1)
    return Similarity(float(cos.mean()), float(cos.min()), len(cos))


@torch.inference_mode()
def sentence_embeddings(model, tokenizer, sentences: list[str], batch: int = 64, max_length: int = 256) -> np.ndarray:
    """Unit-normalized mean-pooled last hidden states of an encoder, one row per sentence."""
    out = []
    for i in range(0, len(sentences), batch):
        enc = tokenizer(sentences[i : i + batch], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def token_windows(tokenizer, text: str, settings: EvalSettings) -> torch.Tensor:
    return _windows(tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0], settings)


def _windows(ids: torch.Tensor, settings: EvalSettings) -> torch.Tensor:
    n = len(ids) // settings.window
    if settings.max_windows is not None:
        n = min(n, settings.max_windows)
    if n == 0:
        raise ValueError(f"text has fewer than {settings.window} tokens")
    return ids[: n * settings.window].view(n, settings.window)


def word_index(text: str, offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """For each token, the index of the whitespace-separated word its first non-space character
    belongs to (-1 for a token of only whitespace), and for each word whether it ends its line."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts = np.array([a for a, _ in spans], dtype=np.int64)
    last = np.array([b == len(text) or "\n" in text[b : (spans[i + 1][0] if i + 1 < len(spans) else len(text))]
                     for i, (_, b) in enumerate(spans)], dtype=bool)
    first = np.array([a + len(text[a:b]) - len(text[a:b].lstrip()) if text[a:b].strip() else -1
                      for a, b in offsets], dtype=np.int64)
    words = np.searchsorted(starts, first, side="right") - 1
    return np.where(first >= 0, words, -1), last


def _word_hits(words: np.ndarray, correct: np.ndarray, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """Words of one window's predicted positions (``words``/``correct`` aligned) that lie wholly inside
    it (not the word at the window's unscored first position ``before`` nor one running on into the
    next window, ``after``): their indices and whether all their tokens were predicted."""
    keep = (words >= 0) & (words != before) & (words != after)
    ids, inv = np.unique(words[keep], return_inverse=True)
    wrong = np.bincount(inv, weights=~correct[keep], minlength=len(ids))
    return ids, wrong == 0


@torch.inference_mode()
def perplexity(model, tokenizer, settings: EvalSettings = EvalSettings(), batch: int = 4, progress=None) -> EvalResult:
    t0 = time.perf_counter()
    text = ptb_text(settings.split)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=bool(tokenizer.is_fast))
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)
    windows = _windows(ids, settings)
    words, last = word_index(text, enc["offset_mapping"]) if tokenizer.is_fast else (None, None)
    w = settings.window
    nll, count, top1 = 0.0, 0, 0
    hits: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch]
        logits = model(input_ids=x).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
        )
        nll += float(loss)
        count += x[:, 1:].numel()
        correct = (logits.argmax(-1) == x[:, 1:]).numpy()
        top1 += int(correct.sum())
        for j in range(len(x)) if words is not None else ():
            k = (i + j) * w
            after = int(words[k + w]) if k + w < len(words) else -2
            hits.append(_word_hits(words[k + 1 : k + w], correct[j], int(words[k]), after))
        if progress:
            progress("eval", min(i + batch, len(windows)), len(windows))
    res = EvalResult(math.exp(nll / count), count, len(windows), time.perf_counter() - t0, settings,
                     next_token_accuracy=top1 / count)
    if hits:
        ids_, ok = np.concatenate([h[0] for h in hits]), np.concatenate([h[1] for h in hits])
        res.words, res.sentences = len(ids_), int(last[ids_].sum())
        res.next_word_accuracy = float(ok.mean()) if len(ok) else None
        res.last_word_accuracy = float(ok[last[ids_]].mean()) if res.sentences else None
    return res

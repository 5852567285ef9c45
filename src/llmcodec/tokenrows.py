"""Per-token precision in token embeddings and output heads, from the tokenizer alone.

A row of a token embedding (or of an output head) is used in proportion to how often its token
occurs: its error reaches the loss about that often as an input, and (for a head) through the
token's logit, whose error costs in proportion to the token's predicted probability. Giving row
``v`` a step ``frequency_v^(-strength/2)`` times the rest's is the weighted reverse water-filling
solution for strength 1. Without text, a BPE tokenizer's merge order is the frequency prior: a
token merged later was rarer in the tokenizer's training text, and by Zipf's law the frequency of
the token of rank ``r`` goes as ``1/r``. Pure functions; nothing here reads text.
"""

from __future__ import annotations

import json

import numpy as np

# A row's step factor stays within [1/ROW_CLIP, ROW_CLIP] of the median row's: the finest rows set the
# peak of the codec's samples, so a wider range moves the whole matrix toward the codec's QP floor.
ROW_CLIP = 2.0


def bpe_span(tokenizer_json: bytes | str) -> tuple[int, int] | None:
    """The ids of a BPE ``tokenizer.json``'s first merge and of its last token, or None when the
    tokenizer is not BPE or its ids do not follow its merges (the first merge's token not after
    every alphabet token). Parse it once per model: the file can be tens of megabytes."""
    try:
        model = json.loads(tokenizer_json).get("model") or {}
    except (ValueError, AttributeError):
        return None
    if model.get("type") != "BPE" or not model.get("merges") or not isinstance(model.get("vocab"), dict):
        return None
    first = model["merges"][0]
    pair = first.split(" ") if isinstance(first, str) else list(first)
    merged = model["vocab"].get("".join(pair))
    alphabet = [model["vocab"].get(p) for p in pair]
    if merged is None or None in alphabet or merged <= max(alphabet):
        return None
    return merged, max(model["vocab"].values())


def span_ranks(span: tuple[int, int], vocab: int) -> np.ndarray:
    """Each of ``vocab`` token ids' frequency rank under ``bpe_span``'s (first merge, last id): its
    id, with the tokens before the first merge (special tokens and the byte alphabet) at that
    merge's id and ids past the vocabulary (padding rows) at the last id."""
    merged, last = span
    return np.clip(np.arange(vocab, dtype=np.float64), merged, max(merged, last)) + 1.0


def bpe_ranks(tokenizer_json: bytes | str, vocab: int) -> np.ndarray | None:
    """``span_ranks`` straight from a ``tokenizer.json`` (None when ``bpe_span`` is)."""
    span = bpe_span(tokenizer_json)
    return None if span is None else span_ranks(span, vocab)


def row_steps(ranks: np.ndarray, strength: float, clip: float = ROW_CLIP) -> np.ndarray | None:
    """Step factors per row (median 1, within ``[1/clip, clip]``): ``rank^(strength/2)``, i.e.
    ``frequency^(-strength/2)`` under Zipf's law. None for strength 0."""
    if strength <= 0:
        return None
    log_f = 0.5 * strength * np.log2(np.asarray(ranks, dtype=np.float64))
    log_f -= np.median(log_f)
    return np.exp2(np.clip(log_f, -np.log2(clip), np.log2(clip)))

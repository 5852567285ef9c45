"""Priors on how the bit budget is shared between matrices: QP offsets from names and shapes.

Pure functions of the matrices' names, shapes and steps (no data); rate allocation (rate.py) searches
a common base QP with these offsets fixed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# The default edge layers' step (CompressSettings.edge_octaves None): one octave finer below
# EDGE_MAX_BPW bits per weight, where it helps (evidence: docs/research-log.md).
EDGE_OCTAVES, EDGE_MAX_BPW = 1.0, 3.25
# The default strength of the grouped-query attention prior (CompressSettings.kv_sharing None, kv_offsets):
# the equal-slope step, below KV_MAX_BPW bits per weight, off from there (docs/research-log.md).
KV_SHARING, KV_MAX_BPW = 1.0, 3.25
# Token embeddings and output heads (CompressSettings.embedding_offset): the vocabulary-sized matrices.
TOKEN_MATRIX = re.compile(r"(?:^|\.)(?:embed_tokens|lm_head|wte|word_embeddings|embed_in|embed_out|tok_embeddings)"
                          r"(?:\.|$)")


def capped_steps(steps: Sequence[float], rms: Sequence[float], cap: float) -> list[float]:
    """Steps for ``qp_offsets`` that give every tensor the same absolute error, except that no
    tensor's error relative to its own RMS exceeds ``cap`` times that of the median-RMS tensor.

    Equal absolute error minimizes the total squared weight error, but leaves a tensor much smaller
    than the rest mostly noise. A tensor below ``1/cap`` of the median RMS gets its step scaled
    down with its RMS, so it keeps the relative error of one at that bound."""
    r = np.maximum(np.asarray(rms, dtype=np.float64), 1e-30)
    shrink = np.minimum(1.0, cap * r / float(np.median(r)))
    return list(np.asarray(steps, dtype=np.float64) / shrink)


_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The block a tensor belongs to, from its name (``model.layers.3.mlp...``, BERT's
    ``encoder.layer.3...``, GPT-2's ``h.3...``); None outside the stack."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def edge_offsets(names: Sequence[str], layers: int, octaves: float, qp_per_octave: float = 6.0) -> list[int]:
    """QP offsets that code the first and last ``layers`` blocks among ``names`` with a step
    ``2^-octaves`` times the others'. The first block reads the embeddings and the last feeds the
    output head; their errors reach the output with the least correction by the layers between."""
    idx = [layer_index(n) for n in names]
    known = [i for i in idx if i is not None]
    if not known or layers <= 0 or octaves <= 0:
        return [0] * len(names)
    lo, hi = min(known), max(known)
    fine = -int(round(octaves * qp_per_octave))
    return [fine if i is not None and (i < lo + layers or i > hi - layers) else 0 for i in idx]


_KV = re.compile(r"^(.*[._])(k_proj|v_proj)(\.weight)?$")


def kv_offsets(names: Sequence[str], shapes: Sequence[Sequence[int]], strength: float,
               qp_per_octave: float = 6.0) -> list[int]:
    """QP offsets for grouped-query attention, read from the matrices' names and shapes alone.

    One key/value head serves ``n_rep`` query heads (``n_rep`` = the rows of the block's q_proj, or
    the columns of its o_proj, over the rows of its k_proj); an error in its keys or values reaches
    the outputs of all ``n_rep`` heads, so a weight of k_proj or v_proj costs about ``n_rep`` times
    the loss of one elsewhere. Equal slopes then give those matrices a step ``n_rep^(-1/2)`` times the
    rest's (``strength`` 1). Models without GQA (``n_rep`` 1, e.g. BERT) and names without the Llama
    projections get nothing."""
    if strength <= 0:
        return [0] * len(names)
    shape = dict(zip(names, shapes, strict=True))
    out = []
    for n in names:
        m = _KV.match(n)
        rep = 1.0
        if m:
            pre, suf = m.group(1), m.group(3) or ""
            q, o = shape.get(f"{pre}q_proj{suf}"), shape.get(f"{pre}o_proj{suf}")
            heads_dim = q[0] if q is not None else (o[1] if o is not None else None)
            if heads_dim is not None and heads_dim > shape[n][0]:
                rep = heads_dim / shape[n][0]
        out.append(-int(round(strength * 0.5 * np.log2(rep) * qp_per_octave)))
    return out


def qp_offsets(steps: Sequence[float], qp_per_octave: float = 6.0) -> list[int]:
    """QP offsets that give every tensor the same absolute error: a tensor whose samples stand for
    twice the weight step needs half the sample error, i.e. ``qp_per_octave`` lower QP (the codec's
    step doubles every 6 QP in H.264/HEVC/VVC). Offsets are relative to the median tensor."""
    logs = np.log2(np.maximum(np.asarray(steps, dtype=np.float64), 1e-30))
    return [int(round(-qp_per_octave * (v - float(np.median(logs))))) for v in logs]


def embedding_offsets(names: Sequence[str], offset: int) -> list[int]:
    """``offset`` for token embeddings and output heads (TOKEN_MATRIX), 0 for the other matrices."""
    return [offset if TOKEN_MATRIX.search(n) else 0 for n in names]


def with_token_offsets(offsets: Sequence[int], names: Sequence[str], offset: int) -> list[int]:
    """``offsets`` with each token embedding / output head's replaced by ``offset``, relative to the
    median tensor: the equal-error prior would code them like any matrix, but an output head's
    error reaches every logit, so they are placed against the other matrices' QP directly."""
    return [offset if TOKEN_MATRIX.search(n) else o for o, n in zip(offsets, names, strict=True)]

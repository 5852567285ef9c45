"""Bits per parameter of a whole model file, for the peers implemented in Python.

Every tensor of the model is counted once (a tied output head is the embedding): the decoder
matrices at what the method stores for them, the embedding at 8-bit round-to-nearest in groups of
128 with an fp16 scale and offset per group (8.25 bits per weight: llama.cpp stores a tied
embedding of this model at Q8_0, 8.5), every other tensor (norms) at fp16. Metadata and tokenizer
are counted for no method.
"""

from __future__ import annotations

import numpy as np
import torch

from llmcodec.baselines import RTN

EMBEDDING = RTN(bits=8, group=128)
EMBEDDING_LABEL = "embedding 8-bit RTN g128 (8.25 b/w), norms fp16"


def is_embedding(name: str) -> bool:
    return "embed_tokens" in name or name.endswith("lm_head.weight")


def quantized_embedding(w: torch.Tensor) -> tuple[torch.Tensor, int]:
    w_hat, bits = EMBEDDING(w.detach().float().numpy())
    return torch.from_numpy(np.ascontiguousarray(w_hat)), bits


def whole_file(state: dict[str, torch.Tensor], tied: dict[str, str], decoder_bits: dict[str, int]
               ) -> tuple[dict[str, torch.Tensor], int, int]:
    """The state with its embedding quantized as stated above, the file's bits and its parameters.
    ``decoder_bits``: the bits the method stores for each matrix it quantized (already in ``state``)."""
    out = dict(state)
    bits = params = 0
    for name, t in state.items():
        if name in tied:
            continue
        params += t.numel()
        if name in decoder_bits:
            bits += decoder_bits[name]
        elif is_embedding(name) and t.ndim == 2:
            out[name], b = quantized_embedding(t)
            bits += b
        else:
            out[name] = t.half().to(t.dtype)
            bits += 16 * t.numel()
    for name, of in tied.items():
        out[name] = out[of]
    return out, bits, params

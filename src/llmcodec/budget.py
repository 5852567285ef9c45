"""The whole file is the budget: what the coded matrices may spend, and what each kind of tensor costs.

``--bpw B`` counts every stored byte of every tensor (coded bitstreams and their side information,
kept tensors, the artifact's header) over the model's parameters; the model's config and tokenizer
files are stored compressed beside them and are not counted. The matrices' rate control gets what
is left once kept tensors and an upper bound on the header (``artifact.header_bound``) are paid.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .artifact import Artifact, header_bound, piece_bytes, read_header
from .compress import EMBEDDING_NAMES, CompressSettings
from .rate import BudgetError

KINDS = ("embeddings/head", "attention", "MLP", "experts", "norms/biases", "other")
_ATTENTION = re.compile(r"attn|attention|(?:^|[._])(?:q|k|v|o|qkv)_proj(?:[._]|$)|(?:^|\.)(?:query|key|value)(?:\.|$)")
_MLP = re.compile(r"mlp|ffn|feed_forward|(?:gate|up|down|gate_up)_proj|fc1|fc2|c_fc|c_proj|intermediate|"
                  r"(?:^|\.)w[123](?:\.|$)|dense_h_to_4h|dense_4h_to_h|layer\.\d+\.output\.")


def parameters(art: Artifact, coded: Mapping[str, tuple[int, int]]) -> int:
    """The model's parameters: every kept value and every matrix to be coded; tied tensors once."""
    return sum(t.numel() for t in art.raw.values()) + sum(r * c for r, c in coded.values())


def coded_bits(art: Artifact, settings: CompressSettings, coded: Mapping[str, tuple[int, int]], version: str) -> float:
    """Bits the coded matrices (``coded``: name -> shape) may take, bitstreams and side information
    together, so that the whole file holds ``settings.bpw`` bits per parameter."""
    params = parameters(art, coded)
    kept = sum(t.numel() * t.element_size() for t in art.raw.values())
    head = header_bound(art, dict(coded), settings.group, version)
    bits = settings.bpw * params - 8.0 * (kept + head)
    if bits <= 0:
        raise BudgetError(
            f"{settings.bpw} bits per parameter is below what the file needs besides the coded matrices: "
            f"{8 * kept / params:.3f} bits per parameter for the {len(art.raw)} tensors kept uncoded and "
            f"{8 * head / params:.3f} for the header; ask for more, or code more tensors"
        )
    return bits


def tensor_kind(name: str, shape: list[int] | tuple[int, ...]) -> str:
    """Which of ``KINDS`` a tensor belongs to, from its name and shape."""
    n = name.lower()
    if len(shape) <= 1 or "norm" in n or n.endswith("bias"):
        return "norms/biases"
    if "expert" in n:
        return "experts"
    if any(k in n for k in EMBEDDING_NAMES):
        return "embeddings/head"
    if _ATTENTION.search(n):
        return "attention"
    if _MLP.search(n):
        return "MLP"
    return "other"


def file_shares(header: dict, pieces: Mapping[str, int], file_bytes: int) -> dict[str, int]:
    """Bytes of the file by kind of tensor (``KINDS``), plus "header" (the safetensors and llmcodec
    headers) and "config and tokenizer" (the compressed model files). ``pieces``: each stored
    piece's bytes (``artifact.piece_bytes``)."""
    out = dict.fromkeys((*KINDS, "header", "config and tokenizer"), 0)
    tensors = header["tensors"]
    for key, size in pieces.items():
        name = key.split("::", 1)[0] if "::" in key else key
        if key.startswith("file::"):
            out["config and tokenizer"] += size
        else:
            e = tensors.get(name, {})
            out[tensor_kind(name, e.get("shape", [0, 0]))] += size
    out["header"] = file_bytes - sum(pieces.values())
    return out


def model_parameters(header: dict) -> int:
    """Parameters from an artifact's header: coded and kept tensors (stack members, not stacks)."""
    return sum(math.prod(e["shape"]) for e in header["tensors"].values() if e["kind"] in ("coded", "raw"))


def whole_file(path: str | os.PathLike) -> dict:
    """An artifact's size in bytes, its model files' (config and tokenizer, stored compressed),
    its parameters, and its bits per parameter: everything but the model files over the parameters."""
    size = Path(path).stat().st_size
    files = sum(v for k, v in piece_bytes(path).items() if k.startswith("file::"))
    params = model_parameters(read_header(path))
    return {"file_bytes": size, "files_bytes": files, "parameters": params,
            "bits_per_parameter": 8 * (size - files) / max(1, params)}

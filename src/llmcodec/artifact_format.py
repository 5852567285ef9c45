"""The artifact's format: its names, versions and limits, the in-memory :class:`Artifact`, its error.

``docs/format.md`` describes the file; ``artifact.py`` writes it, ``artifact_read.py`` reads it and
``artifact_check.py`` checks its header.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from . import limits, sideinfo, stacks
from .coder import CodedTensor
from .stfile import LazyTensor

FORMAT_NAME = "llmcodec"
# 2: the header carries its own checksum (``llmcodec.sha256``); 3: optional rotations and companding;
# 4: optional coefficient-domain coding (``quant.block``); 5: optional reconstruction tables (``recon``);
# 6: optional 8-bit logarithmic side information (``quant.compact``, ``col_lo``); 7: optional partly
# filled transform blocks (``quant.block_cols``), which an older reader would decode wrongly;
# 8: optionally packed log codes (``quant.packed``, ``sideinfo.pack``); 9: every coded tensor carries
# the digest of its decoded integers (``sha256.decoded``), checked on every restore
# 10: stacks of matrices, kept tensors in a narrower type (``source_dtype``), compressed model files
# (``files_codec``)
FORMAT_VERSION = 10
DIGEST_FROM_VERSION = 9
FILES_CODEC = "xz"
HEADER_SHA_KEY = f"{FORMAT_NAME}.sha256"
HEADER_KEYS = ("format", "format_version", "llmcodec_version", "codec", "settings", "tensors", "model", "stats")
MAX_HEADER_BYTES = limits.MAX_HEADER_BYTES
CODED_DTYPES = ("float32", "float16", "bfloat16", "float64")  # source dtypes a coded matrix is restored to
RAW_DTYPES = CODED_DTYPES + ("int8", "int16", "int32", "int64", "uint8", "bool", "float8_e4m3fn", "float8_e5m2")
MAX_DIM = limits.MAX_DIM
MAX_PAD = limits.MAX_PAD
MAX_STACK = 2**20  # matrices in one stacked tensor (experts, kernels, layers x heads)
# log-code offsets whose values stay normal float32 numbers (2^-120 .. 2^120)
LO_RANGE = (-120 * sideinfo.CODES_PER_OCTAVE, 120 * sideinfo.CODES_PER_OCTAVE - sideinfo.SPAN)
STATS_KEYS = ("coded_tensors", "coded_weights", "coded_bits", "side_bits", "bits_per_weight", "raw_tensors")


class ArtifactError(ValueError):
    """The file is not a readable llmcodec artifact (foreign, corrupt, truncated or too new)."""


@dataclass
class Artifact:
    codec: dict  # {"name", "encoder", "profile": {...}}
    settings: dict
    coded: dict[str, CodedTensor] = field(default_factory=dict)
    raw: dict[str, torch.Tensor | LazyTensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # tied weights: name -> stored name
    config: dict | None = None  # Hugging Face config of the source model
    files: dict[str, bytes] = field(default_factory=dict)  # tokenizer and other model files
    order: list[str] = field(default_factory=list)  # tensor names in source order
    # the source folder's on-disk layout (modelio.read_checkpoint): shard file, dtype and metadata
    # of each tensor, and the index's metadata; None for in-memory sources and older artifacts
    checkpoint: dict | None = None
    # tensors of 3+ dimensions coded as matrices: name -> shape; its members (stacks.member_names)
    # are in ``coded`` (or ``raw``) under their own names, and only the stack's name is in ``order``
    stacks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    source_dtypes: dict[str, str] = field(default_factory=dict)  # kept tensors stored in another dtype

    def members(self) -> set[str]:
        return {m for name, shape in self.stacks.items() for m in stacks.member_names(name, shape)}

    def stats(self) -> dict:
        n_coded = sum(c.numel for c in self.coded.values())
        bits = sum(c.bits for c in self.coded.values())
        side = sum(c.side_bits for c in self.coded.values())
        n_raw = sum(t.numel() for t in self.raw.values())
        raw_bytes = sum(t.numel() * t.element_size() for t in self.raw.values())
        src_bytes = sum(c.numel * _itemsize(c.dtype) for c in self.coded.values())
        return {
            "coded_tensors": len(self.coded),
            "coded_weights": n_coded,
            "coded_bits": bits,
            "side_bits": side,
            "bits_per_weight": bits / n_coded if n_coded else 0.0,
            "coded_source_bytes": src_bytes,
            "raw_tensors": len(self.raw),
            "raw_weights": n_raw,
            "raw_bytes": raw_bytes,
            "aliases": len(self.aliases),
            "parameters": n_coded + n_raw,
            "stacks": len(self.stacks),
        }


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def digest(t: torch.Tensor | np.ndarray | bytes) -> str:
    """The SHA-256 (hex) of a stored piece's bytes."""
    if isinstance(t, bytes):
        return hashlib.sha256(t).hexdigest()
    if isinstance(t, torch.Tensor):
        t = t.contiguous().reshape(-1).view(torch.uint8).numpy()
    # hash the array's own memory: .tobytes() would copy it (the largest tensor again at save time)
    return hashlib.sha256(memoryview(np.ascontiguousarray(t).reshape(-1).view(np.uint8))).hexdigest()

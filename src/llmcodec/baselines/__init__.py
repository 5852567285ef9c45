"""Calibration-free peer quantizers for one 2-D float matrix, with their side information counted.

Each peer maps a float32 matrix ``w`` to ``(w_hat, bits)`` where ``bits`` is everything a decoder
would need to store for this matrix: integer payload, fp16 scales/zeros, entropy-coder tables and
small headers. The tensor's shape is known from the model config and is not counted (for no method).

- ``RTN``: round-to-nearest affine quantization (``quant.quantize``), per group or per row.
- ``HQQ``: Half-Quadratic Quantization (PyPI ``hqq``), data-free optimized scale/zero, on CPU.
- ``ECSQ``: uniform scalar quantization followed by a real entropy coder (``constriction``'s range
  coder with a per-tensor categorical model, or zstd on the integer symbols), with the step chosen
  by bisection so that the coded size meets a bits-per-weight target. Every stream is decoded again
  and checked against the symbols it was made from.
- ``gaussian_rd_relative_error``: the Shannon bound for a Gaussian source, relative RMS error 2^-R.
"""

from __future__ import annotations

from collections.abc import Callable

from .common import HEADER_BITS, MatrixQuantizer, Result, check_matrix, gaussian_rd_relative_error
from .ecsq import ECSQ, GAUSS_STEP, Symbols, ecsq_shared_step, restore, solve_step, step_for_bits, uniform_symbols
from .entropy import CODERS, Coded, EntropyCoder, RangeCoder, ZstdCoder, empirical_entropy_bits
from .hqq import HQQ
from .rtn import RTN

__all__ = [
    "CODERS",
    "ECSQ",
    "GAUSS_STEP",
    "HEADER_BITS",
    "HQQ",
    "METHODS",
    "RTN",
    "Coded",
    "EntropyCoder",
    "MatrixQuantizer",
    "RangeCoder",
    "Result",
    "Symbols",
    "ZstdCoder",
    "check_matrix",
    "ecsq_shared_step",
    "empirical_entropy_bits",
    "gaussian_rd_relative_error",
    "make",
    "restore",
    "solve_step",
    "step_for_bits",
    "uniform_symbols",
]


METHODS: dict[str, Callable[..., MatrixQuantizer]] = {"rtn": RTN, "hqq": HQQ, "ecsq": ECSQ}


def make(method: str, **params) -> MatrixQuantizer:
    """A peer by registry name, e.g. ``make("rtn", bits=3, group=64)``, ``make("ecsq", bpw=2.5)``."""
    if method not in METHODS:
        raise ValueError(f"unknown peer method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](**params)

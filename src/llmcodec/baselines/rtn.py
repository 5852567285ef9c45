"""Round-to-nearest affine quantization (``quant.quantize``), per group or per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quant import QuantSpec, dequantize, quantize
from .common import Result, check_matrix


@dataclass(frozen=True)
class RTN:
    """Round-to-nearest min/max affine quantization; fp16 scale + fp16 offset per group (or row)."""

    bits: int
    group: int | None = 128

    @property
    def label(self) -> str:
        return f"rtn b={self.bits} g={self.group or 'row'}"

    def __call__(self, w: np.ndarray) -> Result:
        qz = quantize(check_matrix(w), QuantSpec(bits=self.bits, group=self.group))
        return dequantize(qz), self.bits * qz.q.size + qz.side_bits

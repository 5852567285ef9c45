"""Half-Quadratic Quantization (PyPI ``hqq``): data-free optimized scale and zero, on CPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import Result, check_matrix


@dataclass(frozen=True)
class HQQ:
    """HQQ's quantizer (``hqq.core.quantize.Quantizer.quantize``) with HQQLinear's defaults: groups
    of ``group`` consecutive weights along a row (axis=1), proximal optimization of scale and zero on
    the weights themselves, zero rounded at 4 bits. HQQLinear stores scale and zero in its compute
    dtype (fp16) per group; they are rounded to fp16 here before dequantizing and counted as 16 + 16
    bits per group (also when the zero is a rounded integer: fp16 is what HQQ stores)."""

    bits: int
    group: int = 64

    @property
    def label(self) -> str:
        return f"hqq b={self.bits} g={self.group}"

    def __call__(self, w: np.ndarray) -> Result:
        import torch
        from hqq.core.quantize import Quantizer

        w = check_matrix(w)
        if w.size % self.group:
            raise ValueError(f"HQQ needs the element count {w.size} to be a multiple of the group size {self.group}")
        with torch.inference_mode():
            wq, meta = Quantizer.quantize(
                torch.from_numpy(np.ascontiguousarray(w)),
                nbits=self.bits,
                channel_wise=True,
                group_size=self.group,
                optimize=True,
                round_zero=self.bits == 4,
                axis=1,
                bitpack=False,
                device="cpu",
            )
            scale = meta["scale"].to(torch.float16).float()
            zero = meta["zero"].to(torch.float16).float()
            w_hat = ((wq.float() - zero) * scale).reshape(w.shape).numpy().astype(np.float32)
        groups = w.size // self.group
        return w_hat, self.bits * w.size + 32 * groups

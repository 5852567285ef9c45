"""Standard safetensors files written streaming, with a canonical header; tensors read only while written.

The artifact (``artifact.py``) and a restored model folder (``modelio.save_folder``) are both written here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LazyTensor:
    """An uncompressed tensor that is read from its source only while the artifact is written.

    Compressing a safetensors model keeps its raw tensors (often the embedding, the largest tensor
    of all) out of memory this way while the coded ones are being worked on.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    load: Callable[[], torch.Tensor]

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()


def materialize(t: torch.Tensor | LazyTensor) -> torch.Tensor:
    return (t.load() if isinstance(t, LazyTensor) else t).detach().cpu().contiguous()


ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip


Storable = torch.Tensor | LazyTensor | bytes  # bytes are stored as a 1-D uint8 tensor


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Storable], metadata: dict[str, str]) -> None:
    """Write a standard safetensors file, streaming, with a canonical (sorted) header.

    ``safetensors.torch.save_file`` would copy every tensor into one bytes object first (the
    model's largest tensor again on top of peak memory) and writes its metadata map in hash
    order, so two writes of the same artifact differed; here each tensor's bytes go straight to
    the file (a lazy tensor is read just then) and the same content gives the same bytes.
    The safetensors library reads the file back.
    """

    def info(v: Storable) -> tuple[torch.dtype, list[int], int]:
        if isinstance(v, bytes):
            return torch.uint8, [len(v)], 1
        return v.dtype, list(v.shape), v.element_size()

    infos = {n: info(v) for n, v in tensors.items()}
    names = _layout_order(infos)
    text = safetensors_header(infos, metadata)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for n in names:
            v = tensors[n]
            if isinstance(v, bytes):
                f.write(v)
                continue
            t = materialize(v)
            if (t.dtype, list(t.shape)) != infos[n][:2]:
                raise ValueError(f"tensor {n!r} changed while the artifact was written")
            if t.numel():
                # a byte view of the tensor's own memory: no copy (works for bf16/fp8 too)
                f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            del t


def _layout_order(infos: dict[str, tuple]) -> list[str]:
    # widest dtypes first, as safetensors itself lays them out, so every tensor stays aligned
    return sorted(infos, key=lambda n: (-infos[n][2], n))


def safetensors_header(infos: dict[str, tuple], metadata: dict[str, str], start: int = 0) -> bytes:
    """The JSON header of a safetensors file of tensors (dtype, shape, itemsize), padded to 8 bytes
    (``start``: where the first tensor's data begins, 0 in a real file)."""
    head: dict[str, dict] = {"__metadata__": dict(sorted(metadata.items()))}  # type: ignore[dict-item]
    pos = start
    for n in _layout_order(infos):
        dtype, shape, itemsize = infos[n]
        if dtype not in ST_DTYPES:
            raise ValueError(f"tensor {n!r}: dtype {dtype} cannot be stored")
        size = math.prod(shape) * itemsize
        head[n] = {"dtype": ST_DTYPES[dtype], "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    text = json.dumps(head, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)  # the data starts 8-byte aligned

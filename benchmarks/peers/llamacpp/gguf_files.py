"""GGUF helpers for the llama.cpp peer: an F32 copy of a quantized GGUF, and what a GGUF file stores.

``to_f32`` dequantizes every tensor with the ``gguf`` package and writes them as F32 with the same
metadata, so ``llama-quantize`` starts from the weights the model really has (for the built-in model,
the values of its Q4_1 grid) rather than requantizing a quantized file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def to_f32(src: Path, out: Path) -> Path:
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.constants import Keys
    from gguf.quants import dequantize

    reader = GGUFReader(str(src))
    arch = reader.fields[Keys.General.ARCHITECTURE].contents()
    tmp = out.with_suffix(".tmp")
    writer = GGUFWriter(str(tmp), arch=arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == Keys.General.ARCHITECTURE:
            continue
        if name == Keys.General.FILE_TYPE:
            writer.add_file_type(0)  # all F32
            continue
        sub = field.types[-1] if field.types and len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        data = np.asarray(t.data)
        if t.tensor_type != GGMLQuantizationType.F32:
            data = dequantize(data, t.tensor_type)
        data = np.ascontiguousarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        writer.add_tensor(t.name, data, raw_dtype=GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


@dataclass
class FileBits:
    params: int  # all tensor elements in the file
    bits: int  # all tensor bytes x 8 (metadata and tokenizer not counted, for no method)
    decoder_params: int  # the 2-D weights of the blocks (blk.*)
    decoder_bits: int
    types: dict[str, int]  # tensor type -> number of 2-D block weights of that type
    embedding_type: str

    @property
    def bpp(self) -> float:
        return self.bits / self.params

    @property
    def decoder_bpw(self) -> float:
        return self.decoder_bits / self.decoder_params


def file_bits(path: Path) -> FileBits:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    params = bits = dp = db = 0
    types: Counter[str] = Counter()
    emb = ""
    for t in reader.tensors:
        n, b = int(t.n_elements), int(t.n_bytes) * 8
        params += n
        bits += b
        if t.name.startswith("blk.") and len(t.shape) == 2 and int(min(t.shape)) > 1:
            dp += n
            db += b
            types[t.tensor_type.name] += 1
        if t.name == "token_embd.weight":
            emb = t.tensor_type.name
    return FileBits(params, bits, dp, db, dict(types), emb)

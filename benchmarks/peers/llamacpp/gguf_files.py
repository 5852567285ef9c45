"""GGUF helpers for the llama.cpp peer: an F32 copy of a quantized GGUF, and what a GGUF file stores.

``to_f32`` dequantizes every tensor with the ``gguf`` package and writes them as F32 with the same
metadata, so ``llama-quantize`` starts from the weights the model really has (for the built-in model,
the values of its Q4_1 grid) rather than requantizing a quantized file.

Types newer than the installed ``gguf`` package (Q1_0, Q2_0) are read with the gguf-py vendored in
the llama.cpp sources, in a subprocess (``vendored``: this file run as a script with that gguf-py on
the path), and their files dequantized to F32 so transformers' GGUF loader can read them.

    python gguf_files.py bits FILE          # JSON: FileBits and the tensor digest
    python gguf_files.py f32 FILE OUT       # OUT: every tensor dequantized to F32
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

VENDORED_GGUF = Path(__file__).resolve().parent / "build/src/vendor/llama.cpp/gguf-py"


def _blocks(data: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """fp16 scale and quant bytes of each ``size``-byte block (scale first), and the leading shape."""
    raw = np.ascontiguousarray(data).view(np.uint8)
    lead = raw.shape[:-1]
    b = raw.reshape(-1, size)
    return b[:, :2].copy().view(np.float16).astype(np.float32), b[:, 2:], lead


def dequantize_q2_0(data: np.ndarray) -> np.ndarray:
    """Q2_0 (ggml-common.h): blocks of 64 weights, an fp16 scale d, 2-bit codes q (four to a byte,
    lowest bits first); weight = (q - 1) * d."""
    d, qs, lead = _blocks(data, 18)
    q = (qs[:, :, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
    return ((q.reshape(len(d), 64).astype(np.float32) - 1) * d).reshape(*lead, -1)


def dequantize_q1_0(data: np.ndarray) -> np.ndarray:
    """Q1_0 (ggml-common.h): blocks of 128 weights, an fp16 scale d and one sign bit each (lowest bit
    first); weight = +d or -d."""
    d, qs, lead = _blocks(data, 18)
    bit = (qs[:, :, None] >> np.arange(8, dtype=np.uint8)) & 1
    return np.where(bit.reshape(len(d), 128) == 1, d, -d).astype(np.float32).reshape(*lead, -1)


OWN_DEQUANTIZE = {"Q2_0": dequantize_q2_0, "Q1_0": dequantize_q1_0}


def dequantize(data: np.ndarray, qtype) -> np.ndarray:
    from gguf.quants import dequantize as gguf_dequantize

    if qtype.name in OWN_DEQUANTIZE:
        return OWN_DEQUANTIZE[qtype.name](data)
    return gguf_dequantize(data, qtype)


def to_f32(src: Path, out: Path) -> Path:
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.constants import Keys

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


def tensor_digest(path: Path) -> str:
    """A digest of the tensor data alone (two types can make identical tensors, differing metadata)."""
    from gguf import GGUFReader

    h = hashlib.sha256()
    for t in GGUFReader(str(path)).tensors:
        h.update(t.name.encode())
        h.update(str(t.tensor_type).encode())
        h.update(bytes(memoryview(t.data)))
    return h.hexdigest()[:16]


def vendored(*args: str) -> str:
    """Run this file as a script with llama.cpp's own gguf-py (it knows types the installed package
    does not); its standard output."""
    if not (VENDORED_GGUF / "gguf").is_dir():
        raise ValueError(f"no gguf-py in {VENDORED_GGUF}: run benchmarks/peers/llamacpp/setup.sh")
    env = {**os.environ, "PYTHONPATH": str(VENDORED_GGUF)}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, capture_output=True,
                       text=True)
    if r.returncode:
        raise ValueError(f"vendored gguf-py failed: {r.stderr.strip()[-300:]}")
    return r.stdout


def vendored_bits(path: Path) -> tuple[FileBits, str]:
    """FileBits and tensor digest of a file the installed ``gguf`` cannot read."""
    d = json.loads(vendored("bits", str(path)))
    return FileBits(**d["bits"]), d["digest"]


def vendored_f32(path: Path, out: Path) -> Path:
    if not out.is_file():
        vendored("f32", str(path), str(out))
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["bits"] and len(argv) == 2:
        print(json.dumps({"bits": asdict(file_bits(Path(argv[1]))), "digest": tensor_digest(Path(argv[1]))}))
    elif argv[:1] == ["f32"] and len(argv) == 3:
        to_f32(Path(argv[1]), Path(argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

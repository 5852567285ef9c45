"""llama.cpp's quantizers on the built-in model: an F32 GGUF, an importance matrix from calibration
text, and one file per quantization type with and without it (binaries from setup.sh)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
BIN = BUILD / "cmake" / "bin"

# Every type llama-quantize offers for a dense model, smallest files last; F16 is the reference.
# Every type llama-quantize offers for a dense model, in the order they are measured: the low-bit
# types a reader compares first, then the rest. F16 is the reference.
TYPES = ["Q2_K", "IQ2_XXS", "IQ1_S", "IQ3_XXS", "Q3_K_M", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0",
         "Q2_K_S", "IQ1_M", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XS", "IQ3_S", "IQ3_M", "Q3_K_S", "Q3_K_L",
         "IQ4_NL", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_S", "Q5_0", "Q5_1", "TQ2_0", "TQ1_0", "F16"]


def tool(name: str) -> Path:
    exe = BIN / name
    if not exe.is_file():
        raise SystemExit(f"{exe} is missing: run bash benchmarks/peers/llamacpp/setup.sh first")
    return exe


def f32_file(source_gguf: Path) -> Path:
    from gguf_files import to_f32

    out = BUILD / "model-f32.gguf"
    if not out.is_file():
        to_f32(source_gguf, out)
    return out


def imatrix_file(f32: Path, calib_text: str, chunks: int, window: int) -> Path:
    out = BUILD / f"imatrix-ptb-train-{chunks}x{window}.gguf"
    if out.is_file():
        return out
    txt = BUILD / f"ptb-train-{chunks}x{window}.txt"
    txt.write_text(calib_text)
    tmp = out.with_name("tmp-" + out.name)
    cmd = [str(tool("llama-imatrix")), "-m", str(f32), "-f", str(txt), "-o", str(tmp), "-c", str(window),
           "--chunks", str(chunks), "-t", "2"]
    log = BUILD / "imatrix.log"
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode or not tmp.is_file():
        raise SystemExit(f"llama-imatrix failed (exit {r.returncode}); see {log}")
    tmp.replace(out)
    return out


def quantized_file(f32: Path, qtype: str, imatrix: Path | None) -> tuple[Path | None, str]:
    """The quantized file (None if llama-quantize refused) and llama-quantize's last lines."""
    out = BUILD / f"model-{qtype}{'-imat' if imatrix else ''}.gguf"
    log = out.with_suffix(".log")
    if out.is_file():
        return out, ""
    cmd = [str(tool("llama-quantize"))]
    if imatrix:
        cmd += ["--imatrix", str(imatrix)]
    tmp = out.with_name("tmp-" + out.name)
    cmd += [str(f32), str(tmp), qtype, "2"]
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    tail = " ".join(log.read_text(errors="replace").strip().splitlines()[-2:])[-300:]
    if r.returncode or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return None, tail
    tmp.replace(out)
    return out, tail


def tensor_digest(path: Path) -> str:
    """A digest of the tensor data alone (two types can make identical tensors, differing metadata)."""
    from gguf import GGUFReader

    h = hashlib.sha256()
    for t in GGUFReader(str(path)).tensors:
        h.update(t.name.encode())
        h.update(str(t.tensor_type).encode())
        h.update(bytes(memoryview(t.data)))
    return h.hexdigest()[:16]

"""llama.cpp's quantizers on the built-in model: an F32 GGUF, an importance matrix from calibration
text, and one file per quantization type with and without it (binaries from setup.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
BIN = BUILD / "cmake" / "bin"


def threads() -> str:
    """The tools' thread count: OMP_NUM_THREADS when set (the machine is shared), else 2."""
    return os.environ.get("OMP_NUM_THREADS", "2")


# Every type llama-quantize offers for a dense model, in the order they are measured: the low-bit
# types a reader compares first, then the rest. F16 is the reference.
TYPES = ["Q2_0", "Q2_K", "IQ2_XXS", "Q1_0", "IQ1_S", "IQ3_XXS", "Q3_K_M", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0",
         "Q2_K_S", "IQ1_M", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XS", "IQ3_S", "IQ3_M", "Q3_K_S", "Q3_K_L",
         "IQ4_NL", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_S", "Q5_0", "Q5_1", "TQ2_0", "TQ1_0", "MXFP4_MOE", "F16"]


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
           "--chunks", str(chunks), "-t", threads()]
    log = BUILD / "imatrix.log"
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode or not tmp.is_file():
        raise SystemExit(f"llama-imatrix failed (exit {r.returncode}); see {log}")
    tmp.replace(out)
    return out


def quantized_file(f32: Path, qtype: str, imatrix: Path | None) -> tuple[Path | None, str]:
    """The quantized file (None if llama-quantize refused) and llama-quantize's last lines."""
    out = BUILD / f"model-{qtype}{'-' + imatrix.stem if imatrix else ''}.gguf"  # one file per imatrix
    log = out.with_suffix(".log")
    if out.is_file():
        return out, ""
    cmd = [str(tool("llama-quantize"))]
    if imatrix:
        cmd += ["--imatrix", str(imatrix)]
    tmp = out.with_name("tmp-" + out.name)
    cmd += [str(f32), str(tmp), qtype, threads()]
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    tail = " ".join(log.read_text(errors="replace").strip().splitlines()[-2:])[-300:]
    if r.returncode or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return None, tail
    tmp.replace(out)
    return out, tail

"""Peak memory and time of `llmcodec verify` on a crafted artifact whose bitstream decodes to far
more frames than its header declares (issue #33, class 1), against an honest artifact.

    .venv/bin/python benchmarks/security/bounded_decode.py [--frames 200] [--side 1024]

Writes benchmarks/security/BOUNDED_DECODE.md (or --out). Run with another checkout's Python
(``cd ../main && .venv/bin/python ../security/benchmarks/security/bounded_decode.py --out ...``) to
measure that version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import llmcodec
from llmcodec.codecs.vvc import VVC
from llmcodec.sysinfo import describe, markdown

HERE = Path(__file__).parent


def craft(folder: Path, frames: int, side: int) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(0)
    state = {"m.weight": torch.from_numpy((rng.standard_normal((64, 64)) * 0.02).astype(np.float32))}
    honest = folder / "honest.llmc"
    llmcodec.save(llmcodec.compress_state_dict(state, llmcodec.CompressSettings(qp=35)), honest)
    with safe_open(str(honest), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(f.metadata()["llmcodec"])
    codec = VVC()
    stream = codec.encode([[np.full((side, side), 512, np.uint16)]] * frames, 40, codec.profile(None))
    tensors["m.weight::bitstream"] = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
    header["tensors"]["m.weight"]["sha256"]["bitstream"] = hashlib.sha256(stream).hexdigest()
    text = json.dumps(header)
    crafted = folder / "crafted.llmc"
    sha = hashlib.sha256(text.encode()).hexdigest()
    save_file(tensors, str(crafted), metadata={"llmcodec": text, "llmcodec.sha256": sha})
    return honest, crafted, frames * side * side * 3  # yuv420p10le bytes the stream really holds


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run(path: Path) -> tuple[int, float, float, str]:
    """Exit code, seconds and peak RSS (MB, VmHWM polled every 20 ms) of ``llmcodec verify``."""
    cmd = [sys.executable, "-m", "llmcodec.cli", "verify", str(path), "--quiet"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while p.poll() is None:
        peak = max(peak, _hwm_mb(p.pid) or 0.0)
        time.sleep(0.02)
    out, err = p.communicate()
    secs = time.perf_counter() - t0
    msg = next((line for line in err.splitlines() if line.startswith("llmcodec: error")), "")
    return p.returncode, secs, peak, msg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=HERE / "BOUNDED_DECODE.md")
    args = ap.parse_args()
    info = describe()
    info["load"] = os.getloadavg().__repr__()
    info["llmcodec from"] = str(Path(llmcodec.__file__).parent)
    with tempfile.TemporaryDirectory() as d:
        honest, crafted, real_bytes = craft(Path(d), args.frames, args.side)
        rows = []
        for label, p in (("honest", honest), ("crafted", crafted)):
            rc, secs, peak, err = run(p)
            rows.append(f"| {label} | {p.stat().st_size:,} | {rc} | {secs:.1f} | {peak:.0f} | {err[:110]} |")
    text = "\n".join([
        "# Bounded decoding: verify on a crafted artifact",
        "",
        f"The crafted artifact's bitstream holds {args.frames} frames of {args.side}x{args.side} "
        f"({real_bytes / 1e6:,.0f} MB of raw decoder output) where its header declares one frame of a 64x64 "
        "matrix's layout. Peak RSS: the verify process's VmHWM (FFmpeg children not counted).",
        "",
        "| artifact | bytes | exit | seconds | peak RSS (MB) | message |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        markdown(info),
        "",
    ])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

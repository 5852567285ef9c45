"""Relative weight error of llama.cpp's files against the F32 GGUF they were made from.

Tells apart what an importance matrix buys in weight error and in perplexity: run after run.py (it
reuses the F32 GGUF and the importance matrix in build/). Decoder matrices only (blk.*, 2-D);
``exact blocks`` is the share of 32-weight blocks reproduced to 1e-6 (the built-in model's weights
lie on a Q4_1 grid of 16 values per block of 32).

    python benchmarks/peers/llamacpp/weight_error.py --types Q4_0,IQ4_XS,Q2_K,Q3_K_M
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from gguf_files import dequantize  # noqa: E402
from quantize import BUILD, quantized_file  # noqa: E402

from llmcodec import sysinfo  # noqa: E402

OUT = HERE.parent / "w40" / "weight-error.csv"


def decoder_error(source: dict[str, np.ndarray], path: Path) -> tuple[float, float]:
    """Global relative Frobenius error over the decoder matrices and the share of exact blocks."""
    from gguf import GGUFReader

    num = den = 0.0
    exact = blocks = 0
    for t in GGUFReader(str(path)).tensors:
        if not t.name.startswith("blk.") or len(t.shape) < 2:
            continue
        a = source[t.name]
        b = dequantize(np.asarray(t.data), t.tensor_type).reshape(-1).astype(np.float64)
        num += float(((a - b) ** 2).sum())
        den += float((a**2).sum())
        worst = np.abs(a - b).reshape(-1, 32).max(1)
        exact += int((worst <= 1e-6 * np.abs(a).reshape(-1, 32).max(1)).sum())
        blocks += worst.size
    return (num / den) ** 0.5, exact / blocks


def main() -> None:
    from gguf import GGUFReader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="Q4_0,IQ4_XS,Q2_K,Q3_K_M")
    ap.add_argument("--imatrix", type=Path, default=BUILD / "imatrix-ptb-train-32x512.gguf")
    ap.add_argument("--csv", type=Path, default=OUT)
    args = ap.parse_args()
    print("\n".join(f"{k}: {v}" for k, v in sysinfo.describe().items()), flush=True)
    f32 = BUILD / "model-f32.gguf"
    for need in (f32, args.imatrix):
        if not need.is_file():
            raise SystemExit(f"{need} is missing: run benchmarks/peers/run.py first")
    source = {t.name: np.asarray(t.data, dtype=np.float64).reshape(-1) for t in GGUFReader(str(f32)).tensors
              if t.name.startswith("blk.") and len(t.shape) >= 2}
    rows = []
    for qtype in args.types.split(","):
        for imatrix in (None, args.imatrix):
            path, tail = quantized_file(f32, qtype, imatrix)
            if path is None:
                print(f"{qtype}: refused: {tail}", flush=True)
                continue
            rel, exact = decoder_error(source, path)
            rows.append({"type": qtype, "imatrix": "yes" if imatrix else "no", "decoder_rel_error": f"{rel:.4f}",
                         "exact_blocks": f"{exact:.4f}"})
            print(rows[-1], flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()

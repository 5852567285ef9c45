"""How efficient is VVC as a quantizer + entropy coder of weights? Matrix by matrix, at equal rate.

    .venv/bin/python benchmarks/experiments/efficiency.py [--qps 22,26,30,34]
        [--profiles ai-faster-coef,ai-medium-coef-dq,...]

For a few SmolLM2-135M matrices (its weights were already 4-bit, GGUF Q4_1), each coded as the
default codes it (column balance applied first, W * c), VVC in the coefficient domain at fixed
QPs against uniform scalar quantization with a step per row proportional to the row's RMS (ECSQ
`row`) at exactly VVC's bitstream rate. Rates are bitstream bits per weight only (no side
information on either side, so the comparison is of the quantizer and the entropy coder alone);
ECSQ's rate is the empirical entropy of its symbols plus its model table (what a range coder
reaches within a fraction of a per cent, see benchmarks/rd/RESULTS.md). Errors are relative
(balanced domain, the matrix the codec saw); ECSQ is restored at each level's centroid, as
llmcodec's reconstruction tables restore VVC's levels. Writes benchmarks/experiments/EFFICIENCY.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402
from run import balance_multipliers  # noqa: E402

import llmcodec  # noqa: E402
from llmcodec import baselines as B  # noqa: E402
from llmcodec import sysinfo  # noqa: E402
from llmcodec.modelio import load  # noqa: E402
from llmcodec.quant import relative_error  # noqa: E402

NAMES = ("model.layers.3.self_attn.v_proj.weight", "model.layers.10.mlp.gate_proj.weight",
         "model.layers.20.mlp.down_proj.weight")


def ecsq_row(w: np.ndarray, bits: float) -> tuple[float, np.ndarray]:
    """(bits per weight, restored matrix) of ECSQ row at ``bits`` in all, each level restored at
    its centroid."""
    coder = B.RangeCoder()
    step = B.step_for_bits(w, bits, "row", coder.estimate_bits)
    sym = B.uniform_symbols(w, step, "row")
    units = w.astype(np.float64) / sym.step
    _, inverse = np.unique(sym.q, return_inverse=True)
    centroids = np.bincount(inverse.ravel(), units.ravel()) / np.bincount(inverse.ravel())
    return coder.estimate_bits(sym.q) / w.size, (centroids[inverse].reshape(w.shape) * sym.step).astype(np.float32)


def ecsq_at(w: np.ndarray, bits: float) -> tuple[float, float]:
    """(bits per weight, relative error with centroid restoration) of ECSQ row at ``bits`` in all."""
    rate, restored = ecsq_row(w, bits)
    return rate, relative_error(w, restored)


def balanced_matrices() -> list[tuple[str, np.ndarray]]:
    """``NAMES`` of SmolLM2-135M, each times its balance column multipliers (as the default codes it)."""
    src = load("smollm2-135m")
    out = []
    for name in NAMES:
        w = src.get(name).float().numpy()
        out.append((name, (w * balance_multipliers(w)[None, :]).astype(np.float32)))
    return out


def _by_profile_qp(rows: list[tuple]) -> dict[tuple[str, int], list[tuple]]:
    out: dict[tuple[str, int], list[tuple]] = {}
    for r in rows:
        out.setdefault((r[1], r[2]), []).append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qps", default="22,26,30,34")
    ap.add_argument(
        "--profiles",
        default="ai-faster-coef,ai-faster-coef-sq,ai-faster-coef-dq,ai-medium-coef-rdoq,ai-medium-coef-dq,"
        "ai-faster-coef-half,ai-medium-coef-dq-half",
    )
    args = ap.parse_args()
    info = sysinfo.describe()
    rows = []
    for name, wb in balanced_matrices():
        for profile in args.profiles.split(","):
            for qp in map(int, args.qps.split(",")):
                s = llmcodec.CompressSettings(qp=qp, profile=profile, weighting="none")
                ct = llmcodec.compress_tensor(torch.from_numpy(wb), s)
                rate = 8 * len(ct.bitstream) / wb.size
                e_rate, e_err = ecsq_at(wb, 8 * len(ct.bitstream))
                # the rate ECSQ would need for VVC's error (high-rate slope: 1 bit halves the error)
                extra = math.log2(ct.rel_error / e_err)
                rows.append((name.removeprefix("model."), profile, qp, rate, ct.rel_error, e_rate, e_err, extra))
                print(rows[-1], flush=True)
    lines = [
        "# VVC as quantizer + entropy coder of weights, against ECSQ at equal rate",
        "",
        f"Regenerate: `{info['command']}`. " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        "`bits` = bitstream bits per weight (VVC) and entropy + model table (ECSQ row, at VVC's rate);",
        "`VVC excess` = how many bits per weight VVC spends beyond what ECSQ needs for VVC's error, at",
        "the high-rate slope of 6.02 dB per bit (negative: VVC is better).",
        "",
        "Mean over the matrices, by profile and QP:",
        "",
        "| VVC profile | QP | bits | VVC excess (bits) |",
        "|---|---|---|---|",
        *[f"| `{p}` | {q} | {np.mean([r[3] for r in g]):.3f} | {np.mean([r[7] for r in g]):+.3f} |"
          for (p, q), g in _by_profile_qp(rows).items()],
        "",
        "| matrix | VVC profile | QP | bits | VVC rel. error | ECSQ bits | ECSQ rel. error | VVC excess (bits) |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {n} | `{p}` | {q} | {r:.3f} | {e:.4f} | {er:.3f} | {ee:.4f} | {x:+.3f} |"
          for n, p, q, r, e, er, ee, x in rows],
    ]
    write_markdown(HERE / "EFFICIENCY.md", lines, info)
    print("wrote", HERE / "EFFICIENCY.md")


if __name__ == "__main__":
    main()

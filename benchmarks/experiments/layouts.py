"""Where in a 32x32 transform block the weights go: full blocks against partly filled ones.

    .venv/bin/python benchmarks/experiments/layouts.py [--qps 22,26,30,34] [--profile ai-medium-coef-dq]

For a few SmolLM2-135M matrices (its weights were already 4-bit, GGUF Q4_1), each balanced as the
default codes it (W * c), the weights are rearranged so that each 32x32 coefficient block holds them
in only some of its positions, zeros elsewhere, and coded with the full-block profile at fixed QPs:
`left-k` = the first k coefficient columns, `top-16` = the first 16 rows, `scan-half` = the first
512 positions of VVC's scan (diagonal within 4x4 groups, groups diagonally). The rearrangement is
done on the matrix, so the library's coefficient-domain path codes it unchanged; `left-16` is what
the `-half` profiles do inside the library (coefdomain.place). `gain` = bits per weight saved at
equal error against the full-block curve of the same matrix (interpolated in log error between
QPs, extrapolated from the nearest two past its ends;
positive: the layout is better). Bitstream only, no side information. Writes
benchmarks/experiments/LAYOUTS.md.
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
from efficiency import NAMES  # noqa: E402
from run import balance_multipliers  # noqa: E402

import llmcodec  # noqa: E402
from llmcodec import sysinfo  # noqa: E402
from llmcodec.modelio import load  # noqa: E402
from llmcodec.quant import relative_error  # noqa: E402

N = 32


def _diagonal(n: int) -> list[tuple[int, int]]:
    """VVC's up-right diagonal scan of an n x n grid, as (row, column)."""
    return [(y, d - y) for d in range(2 * n - 1) for y in range(min(d, n - 1), -1, -1) if d - y < n]


def positions(layout: str) -> list[tuple[int, int]]:
    """The block positions a layout fills, in the order the weights are put there."""
    if layout.startswith("left-"):
        k = int(layout.split("-")[1])
        return [(y, x) for y in range(N) for x in range(k)]
    if layout == "top-16":
        return [(y, x) for y in range(16) for x in range(N)]
    if layout == "scan-half":
        scan = [(4 * cy + y, 4 * cx + x) for cy, cx in _diagonal(N // 4) for y, x in _diagonal(4)]
        return scan[: N * N // 2]
    raise ValueError(f"unknown layout {layout!r}")


def _indices(layout: str) -> tuple[int, np.ndarray, np.ndarray]:
    """Weight columns per block, and the block rows and columns of the layout's positions."""
    pos = positions(layout)
    ys, xs = map(np.array, zip(*pos, strict=True))
    return len(pos) // N, ys, xs


def arrange(w: np.ndarray, layout: str) -> np.ndarray:
    """Each band of 32 rows, taken len(positions) // 32 columns at a time, into one block's positions."""
    per, ys, xs = _indices(layout)
    rows, cols = -(-w.shape[0] // N) * N, -(-w.shape[1] // per) * per
    wp = np.zeros((rows, cols), np.float32)
    wp[: w.shape[0], : w.shape[1]] = w
    out = np.zeros((rows, cols // per * N), np.float32)
    for i in range(0, rows, N):
        for b in range(cols // per):
            out[i + ys, b * N + xs] = wp[i : i + N, b * per : (b + 1) * per].ravel()
    return out


def restore(x: np.ndarray, layout: str, shape: tuple[int, int]) -> np.ndarray:
    per, ys, xs = _indices(layout)
    blocks = x.shape[1] // N
    wp = np.zeros((x.shape[0], blocks * per), np.float32)
    for i in range(0, x.shape[0], N):
        for b in range(blocks):
            wp[i : i + N, b * per : (b + 1) * per] = x[i + ys, b * N + xs].reshape(N, per)
    return wp[: shape[0], : shape[1]]


def gain(full: list[tuple[float, float]], rate: float, log_err: float) -> float:
    """Bits saved at equal error against the full-block curve (rate, log2 error), interpolated."""
    pts = sorted(full)
    rs, es = [p[0] for p in pts], [p[1] for p in pts]
    i = min(max(int(np.searchsorted(rs, rate)), 1), len(rs) - 1)
    slope = (es[i] - es[i - 1]) / (rs[i] - rs[i - 1])
    full_err = es[i - 1] + slope * (rate - rs[i - 1])  # the full blocks' log2 error at this rate
    return (full_err - log_err) / -slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qps", default="22,26,30,34")
    ap.add_argument("--profile", default="ai-medium-coef-dq")
    ap.add_argument("--layouts", default="left-16,left-20,left-24,top-16,scan-half")
    ap.add_argument("--matrices", default=",".join(NAMES[1:]))
    args = ap.parse_args()
    info = sysinfo.describe()
    src = load("smollm2-135m")
    rows = []
    for name in args.matrices.split(","):
        w = src.get(name).float().numpy()
        w = (w * balance_multipliers(w)[None, :]).astype(np.float32)
        full: list[tuple[float, float]] = []
        for layout in ["full", *args.layouts.split(",")]:
            for qp in map(int, args.qps.split(",")):
                x = w if layout == "full" else arrange(w, layout)
                s = llmcodec.CompressSettings(qp=qp, profile=args.profile, weighting="none")
                ct = llmcodec.compress_tensor(torch.from_numpy(x), s)
                back = llmcodec.decompress_tensor(ct, profile=args.profile).numpy()
                back = back if layout == "full" else restore(back, layout, w.shape)
                rate, log_err = 8 * len(ct.bitstream) / w.size, math.log2(relative_error(w, back))
                if layout == "full":
                    full.append((rate, log_err))
                rows.append((name.removeprefix("model."), layout, qp, rate, 2**log_err,
                             None if layout == "full" else gain(full, rate, log_err)))
                print(rows[-1], flush=True)
    lines = [
        "# Layouts inside a transform block",
        "",
        f"Regenerate: `{info['command']}`. " + " ".join(__doc__.split("\n\n")[2].split()),
        f"Profile `{args.profile}`.",
        "",
        "| matrix | layout | QP | bits | rel. error | gain (bits) |",
        "|---|---|---|---|---|---|",
        *[f"| {n} | {lay} | {q} | {r:.3f} | {e:.4f} | {'—' if g is None else f'{g:+.3f}'} |"
          for n, lay, q, r, e, g in rows],
    ]
    write_markdown(HERE / "LAYOUTS.md", lines, info)
    print("wrote", HERE / "LAYOUTS.md")


if __name__ == "__main__":
    main()

"""Where each quantizer puts its error: error by weight size, VVC's RDOQ against dependent quantization.

    .venv/bin/python benchmarks/experiments/error_by_size.py [--qp 26] [--profiles ai-faster-coef,ai-faster-coef-dq,...]

For a few SmolLM2-135M matrices (its weights were already 4-bit, GGUF Q4_1), each coded as the
default codes it (column balance applied first, W * c), VVC in the coefficient domain at one QP,
and ECSQ row (round to nearest, step per row proportional to the row's RMS, centroid restoration)
at the first profile's rate (the default's: half-filled blocks below 3.25 bits per weight). Weights
are put in bins by their size relative to their row's RMS; each cell is the RMS error of the
weights in that bin, also relative to their row's RMS. Dependent
quantization has the lower error overall, but a trellis spreads its error evenly over weights of
every size, while rounding (and RDOQ) leaves weights near zero near zero; a language model minds
the error on small weights (README, "Where the error goes"). Writes benchmarks/experiments/ERROR_BY_SIZE.md.
"""

from __future__ import annotations

import argparse
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
from efficiency import balanced_matrices, ecsq_row  # noqa: E402

import llmcodec  # noqa: E402
from llmcodec import sysinfo  # noqa: E402
from llmcodec.quant import relative_error  # noqa: E402

EDGES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, np.inf)  # |w| / row RMS


def error_by_size(w: np.ndarray, w_hat: np.ndarray) -> list[float]:
    """RMS of ``(w_hat - w) / row RMS`` over the weights in each ``EDGES`` bin of ``|w| / row RMS``."""
    w64 = w.astype(np.float64)
    rms = np.sqrt(np.mean(np.square(w64), axis=1, keepdims=True))
    size, err = np.abs(w64) / rms, (w_hat.astype(np.float64) - w64) / rms
    out = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        sel = (size >= lo) & (size < hi)
        out.append(float(np.sqrt(np.mean(np.square(err[sel])))) if sel.any() else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qp", type=int, default=26)
    ap.add_argument("--profiles", default="default,ai-faster-coef,ai-faster-coef-dq,ai-medium-coef-dq")
    args = ap.parse_args()
    info = sysinfo.describe()
    rows = []
    for name, wb in balanced_matrices():
        ref_bits = None
        for profile in args.profiles.split(","):
            s = llmcodec.CompressSettings(qp=args.qp, profile=profile, weighting="none")
            ct = llmcodec.compress_tensor(torch.from_numpy(wb), s)
            w_hat = llmcodec.decompress_tensor(ct, "vvc", profile).float().numpy()
            bits = 8 * len(ct.bitstream)
            ref_bits = bits if ref_bits is None else ref_bits
            rows.append((name.removeprefix("model."), f"VVC `{profile}`", bits / wb.size, ct.rel_error,
                         error_by_size(wb, w_hat)))
            print(rows[-1], flush=True)
        rate, restored = ecsq_row(wb, ref_bits)
        rows.append((name.removeprefix("model."), "ECSQ row (centroids)", rate, relative_error(wb, restored),
                     error_by_size(wb, restored)))
        print(rows[-1], flush=True)
    head = " | ".join(f"{lo:g}-{hi:g}" for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True))
    lines = [
        "# Where the error lands: error by weight size",
        "",
        f"Regenerate: `{info['command']}`. " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        f"VVC at QP {args.qp}; ECSQ row at the rate of the first VVC profile. `bits` = bitstream (or entropy) "
        "bits per weight, no side information. Columns after `rel. error`: weights whose size |w| / row RMS "
        "is in that range, their RMS error / row RMS.",
        "",
        f"| matrix | method | bits | rel. error | {head} |",
        "|---|---|---|---|" + "---|" * (len(EDGES) - 1),
        *[f"| {n} | {m} | {b:.3f} | {e:.4f} | " + " | ".join(f"{x:.3f}" for x in cells) + " |"
          for n, m, b, e, cells in rows],
    ]
    write_markdown(HERE / "ERROR_BY_SIZE.md", lines, info)
    print("wrote", HERE / "ERROR_BY_SIZE.md")


if __name__ == "__main__":
    main()

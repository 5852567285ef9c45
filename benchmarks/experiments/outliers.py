"""Does keeping the largest weights exact pay for its side information? (issue 4, "a small exact
side channel for the largest-magnitude weights")

    .venv/bin/python benchmarks/experiments/outliers.py [--budgets 2.45,2.5,2.55,2.95,3.0,3.05] [--fractions 0,0.001]

Measured on the quantizer that stands in for llmcodec's default here, because it costs a minute a
point instead of ten: ECSQ row (uniform scalar quantization, step per row proportional to its RMS,
range coded) on ``W diag(c)`` with llmcodec's balance column multipliers (``ecsq-range row+balance``
in RESULTS.md). The given fraction of each matrix's weights, largest magnitude in the balanced
domain, is set to zero before quantizing and restored afterwards as fp16, and its cost (16 bits of
value plus a Golomb-coded position, ``2 + log2(1 / fraction)`` bits) comes out of the matrix's
budget: rows at one target have equal bits per weight. SmolLM2-135M (**its weights were already
4-bit, GGUF Q4_1**), PTB test, 8 windows of 512 tokens (RESULTS.md's protocol). Near a budget a
single point moves by several per cent with a few thousandths of a bit (NOISE.md), so the script
measures a few targets around each budget and compares pairs at the same target. Writes
benchmarks/experiments/outliers.csv and benchmarks/experiments/OUTLIERS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

import run as R  # noqa: E402
from common import ResultsCSV, measuring_command, write_markdown  # noqa: E402

from llmcodec import baselines as B  # noqa: E402
from llmcodec import sysinfo  # noqa: E402

FIELDS = ["target_bpw", "fraction", "bpw", "rel_error", "perplexity", "tokens", "seconds"]


def outlier_bits(fraction: float) -> float:
    """Bits per kept weight: its fp16 value and its position (Golomb-coded gaps at this density)."""
    return 16 + 2 + math.log2(1 / fraction)


class KeepLargest:
    """ECSQ row at ``bpw`` on a matrix whose ``fraction`` largest weights are kept exact in fp16."""

    def __init__(self, bpw: float, fraction: float) -> None:
        self.bpw, self.fraction = bpw, fraction

    def __call__(self, w: np.ndarray) -> tuple[np.ndarray, float]:
        k = int(round(self.fraction * w.size))
        cost = k * outlier_bits(self.fraction) if k else 0.0
        quantizer = R._Shrunk(B.ECSQ, self.bpw - cost / w.size, coder="range", scope="row")
        if k == 0:
            return quantizer(w)
        flat = w.ravel().copy()
        idx = np.argpartition(np.abs(flat), -k)[-k:]
        kept = flat[idx].astype(np.float16).astype(np.float32)
        flat[idx] = 0
        w_hat, bits = quantizer(flat.reshape(w.shape))
        w_hat = w_hat.ravel().copy()
        w_hat[idx] = kept
        return w_hat.reshape(w.shape), bits + cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="2.45,2.5,2.55,2.95,3.0,3.05")
    ap.add_argument("--fractions", default="0,0.001")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    info = sysinfo.describe()
    csv = ResultsCSV(HERE / "outliers.csv", FIELDS, ("target_bpw", "fraction"))
    budgets, fractions = args.budgets.split(","), args.fractions.split(",")
    model = None
    for b in budgets if not args.report_only else []:
        for f in fractions:
            if csv.has(b, f):
                continue
            model = model or R.Smol(args.windows)
            e = R.Entry("ecsq-range", f"row+balance keep={f} bpw={b}", float(b),
                        R.balanced_method(KeepLargest(float(b), float(f))))
            row = R.run_point(model, e)
            csv.add({"target_bpw": b, "fraction": f, "bpw": row["bpw"], "rel_error": row["rel_error"],
                     "perplexity": row["perplexity"], "tokens": row["tokens"], "seconds": row["seconds"]})
    lines = ["# Keeping the largest weights exact (ECSQ row + balance, SmolLM2-135M)", "",
             f"Regenerate: `{measuring_command(info)}`.", "",
             " ".join(__doc__.split("\n\n")[2].split()), "",
             "| target bpw | kept fraction | bits/weight | rel. weight error | perplexity | change |",
             "|---|---|---|---|---|---|"]
    for b in budgets:
        base = csv.rows.get((b, fractions[0]))
        for f in fractions:
            r = csv.rows.get((b, f))
            if r is None:
                continue
            ratio = None if base is None or r is base else float(r["perplexity"]) / float(base["perplexity"])
            change = "" if ratio is None else f"{ratio - 1:+.1%}"
            lines.append(f"| {b} | {f} | {float(r['bpw']):.4f} | {float(r['rel_error']):.4f} | "
                         f"{float(r['perplexity']):.2f} | {change} |")
    lines += ["", "Over the targets, against no kept weights at the same target:", "",
              "| kept fraction | targets | lower perplexity at | mean change (geometric) |", "|---|---|---|---|"]
    for f in fractions[1:]:
        pairs = [(csv.rows[b, f], csv.rows[b, fractions[0]]) for b in budgets
                 if (b, f) in csv.rows and (b, fractions[0]) in csv.rows]
        logs = [math.log(float(r["perplexity"]) / float(base["perplexity"])) for r, base in pairs]
        if logs:
            mean = math.exp(sum(logs) / len(logs)) - 1
            lines.append(f"| {f} | {len(logs)} | {sum(v < 0 for v in logs)} | {mean:+.1%} |")
    write_markdown(HERE / "OUTLIERS.md", lines, info, measured=not args.report_only)
    print("wrote", HERE / "OUTLIERS.md")


if __name__ == "__main__":
    main()

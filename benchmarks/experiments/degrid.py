"""The built-in model without its 4-bit grid: does the default's ranking survive a grid-free source?

    .venv/bin/python benchmarks/experiments/degrid.py [--budgets 3.5,4.0] [--windows 40] [--only REGEX]
                                             [--extra 'NAME:key=value,...']
    .venv/bin/python benchmarks/experiments/degrid.py --report-only

SmolLM2-135M's weights come from a Q4_1 GGUF: in every block of 32 weights along a row they sit
exactly on 16 levels ``m + k d`` (k = 0..15, ``d = (max - min) / 15``). Near 3.5-4 bits per weight a
quantizer's step is about ``d``, and which grid points land on which side of a rounding boundary
moves perplexity by several per cent (NOISE.md). This script takes that grid away: each weight
gets a uniform draw from the interval that Q4_1 rounded to it (``[k - 1/2, k + 1/2] d``, the half
inside the block's range for its extreme levels k = 0 and 15), one seeded draw per matrix. The
result is one full-precision model consistent with the GGUF file, a stand-in for the full-precision
SmolLM2 that is not installable here. It is a noisier model than the original (the draw adds
about Q4_1's own error again), so it has its own uncompressed perplexity, and every method is
measured against it, on the same PTB windows, with run.py's methods and bit accounting.

Writes ``degrid/results.csv`` (resumable, run.py's columns) and ``DEGRID.md``.
"""

from __future__ import annotations

import argparse
import re
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
from report import all_points_table, budget_table, fmt_ppl, strongest_table  # noqa: E402
from run import (  # noqa: E402
    SMOL,
    Smol,
    codable_names,
    default_methods,
    extra_entries,
    log,
    measure,
    pending,
    read_rows,
)

from llmcodec import sysinfo  # noqa: E402

KEY = "smollm2-135m-degrid"
GRIDDED = RD / "w40" / "results.csv"  # the built-in model at the 40 windows
BLOCK, LEVELS = 32, 15  # Q4_1: blocks of 32 along each row, levels 0..15
DEFAULT_ONLY = (r"^(llmcodec-vvc default|ecsq-range (row|row\+balance|shared-step|tensor) |hqq b=[34]"
                r"|rtn b=[34] g=(32|64|128)$)")


def model_key(seed: int) -> str:
    """The model column of the CSV: each seed is another de-gridded model."""
    return KEY if seed == 0 else f"{KEY}-seed{seed}"


def degrid(w: np.ndarray, rng: np.random.Generator, name: str = "matrix") -> np.ndarray:
    """``w`` (rows, cols) on a Q4_1 grid per block of 32 columns, each weight moved to a uniform
    draw inside the rounding interval of its level. Raises ValueError if ``w`` is not on such a grid."""
    rows, cols = w.shape
    if cols % BLOCK:
        raise ValueError(f"{name}: {cols} columns are not whole blocks of {BLOCK}")
    b = w.astype(np.float64).reshape(rows, cols // BLOCK, BLOCK)
    lo, hi = b.min(axis=2, keepdims=True), b.max(axis=2, keepdims=True)
    d = (hi - lo) / LEVELS
    flat = d == 0  # constant blocks: one level, nothing to spread
    k = (b - lo) / np.where(flat, 1.0, d)
    off = float(np.abs(k - np.rint(k)).max())
    if off > 1e-3:
        raise ValueError(f"{name}: not on a 4-bit grid per block of {BLOCK} (a level {off:.3g} off)")
    k = np.rint(k)
    u = rng.uniform(-0.5, 0.5, size=b.shape)
    # The block's extremes were its own min and max before rounding: their interval is one-sided.
    u = np.where(k == 0, np.abs(u), np.where(k == LEVELS, -np.abs(u), u))
    out = np.where(flat, b, b + u * d)
    return out.reshape(rows, cols).astype(w.dtype)


class DegridSmol(Smol):
    """SmolLM2-135M with every coded matrix moved off its Q4_1 grid (``degrid``), seeded."""

    def __init__(self, windows: int, seed: int) -> None:
        super().__init__(windows)
        self.key = model_key(seed)
        for i, n in enumerate(codable_names(self.state)):
            w = self.state[n].float().numpy()
            moved = degrid(w, np.random.default_rng([seed, i]), n)
            self.state[n] = torch.from_numpy(moved).to(self.state[n].dtype)


def _beside_gridded(rows: list[dict], gridded: list[dict]) -> list[str]:
    """Each de-gridded point next to the same method and setting on the built-in model."""
    by_key = {(r["method"], r["setting"]): r for r in gridded if r["model"] == SMOL}
    out = ["| method | setting | built-in: bpw | perplexity | de-gridded: bpw | perplexity |",
           "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"] != "uncompressed", r["target_bpw"] or "9", r["method"])):
        g = by_key.get((r["method"], r["setting"]))
        gcells = ["—", "—"] if g is None else [f"{float(g['bpw']):.3f}", fmt_ppl(float(g["perplexity"]))]
        out.append(f"| {r['method']} | {r['setting']} | " + " | ".join(
            [*gcells, f"{float(r['bpw']):.3f}", fmt_ppl(float(r["perplexity"]))]) + " |")
    return out


def report(path: Path, rows: list[dict], info: dict, windows: int, seed: int, measured: bool = True,
           regenerate: str = "") -> None:
    rows = [r for r in rows if r["model"] == model_key(seed) and r.get("windows") == str(windows)]
    gridded = [r for r in read_rows(GRIDDED) if r.get("windows") == str(windows)]
    ref = next((r for r in rows if r["method"] == "uncompressed"), None)
    ref_txt = f"{float(ref['perplexity']):.2f}" if ref else "not measured"
    lines = [
        "# Without the source's 4-bit grid (SmolLM2-135M, de-gridded)",
        "",
        "Regenerate: `" + (regenerate or f".venv/bin/python benchmarks/experiments/degrid.py --windows {windows} "
                           f"--seed {seed}") + "` "
        "(resumable; `--report-only` redraws). What is done to the model: the docstring of `degrid.py`. "
        "In short, every weight of the 210 decoder matrices is moved to a uniform draw inside the "
        "Q4_1 rounding interval it came from, so no method can gain from the GGUF file's grid of 16 "
        "levels per block of 32; the de-gridded model is a different (noisier) model than the "
        f"built-in one. Its uncompressed perplexity on these tokens: {ref_txt} "
        f"(PTB test, {windows} windows of 512 tokens). Methods, bit accounting and tokens are run.py's "
        "(RESULTS.md); the row+balance reference is ECSQ on llmcodec's balance weighting, not a peer.",
        "",
        "## Perplexity at each budget (bits per weight, relative weight error)",
        "",
        *budget_table(rows, "perplexity", True, fmt_ppl),
        "",
        "## Strongest peer at each budget",
        "",
        *strongest_table(rows, "perplexity", True, fmt_ppl),
        "",
        f"## Beside the built-in model (`{GRIDDED.relative_to(HERE.parent.parent)}`, the same tokens)",
        "",
        "The same method and setting on the built-in SmolLM2 (on its Q4_1 grid) and on the de-gridded one; "
        "—: not measured on the built-in model at these tokens.",
        "",
        *_beside_gridded(rows, gridded),
        "",
        "## All points",
        "",
        *all_points_table(rows, [("rel. error", "rel_error", lambda x: f"{x:.4f}"),
                                 ("perplexity", "perplexity", fmt_ppl)]),
    ]
    write_markdown(path, lines, info, measured)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budgets", default="3.5,4.0,3.0,2.5")
    ap.add_argument("--only", default=DEFAULT_ONLY, help="regular expression on 'method setting' of the peers")
    ap.add_argument("--extra", action="append", default=[], help="llmcodec config 'name:key=value,...' (run.py's)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--csv", type=Path, default=HERE / "degrid" / "results.csv")
    ap.add_argument("--report", type=Path, default=None, help="default: DEGRID.md (seed 0), DEGRID-seedN.md")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--regenerate", default="", help="the command the report names (default: the main run's)")
    args = ap.parse_args()
    info = sysinfo.describe()
    if args.report is None:
        args.report = HERE / ("DEGRID.md" if args.seed == 0 else f"DEGRID-seed{args.seed}.md")
    if args.report_only:
        report(args.report, read_rows(args.csv), info, args.windows, args.seed, measured=False,
               regenerate=args.regenerate)
        return
    log(" | ".join(f"{k}: {v}" for k, v in info.items()))
    budgets = tuple(float(b) for b in args.budgets.split(","))
    entries = [e for e in default_methods(budgets, [], args.workers) if re.search(args.only, f"{e.method} {e.setting}")]
    entries += extra_entries(args.extra, budgets, args.workers)
    # the budgets in the order given: the first ones are measured first
    entries.sort(key=lambda e: budgets.index(e.target_bpw) if e.target_bpw in budgets else len(budgets))
    def redraw(measured: bool = True) -> None:
        report(args.report, read_rows(args.csv), info, args.windows, args.seed, measured, args.regenerate)

    todo = pending(args.csv, model_key(args.seed), str(args.windows), entries)
    log(f"{model_key(args.seed)}: {len(entries)} points, {len(todo or [])} to measure")
    if todo is None:  # building the de-gridded model takes a while: only when something is left
        return redraw(measured=False)
    measure(DegridSmol(args.windows, args.seed), entries, args.csv, after_point=redraw)
    redraw()


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main()

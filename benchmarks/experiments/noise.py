"""Realization noise: how far SmolLM2 perplexity moves between quantizations of nearly equal rate.

The built-in model's weights were already quantized to 4 bits (GGUF Q4_1, blocks of 32). Near 3.5
to 4 bits per weight a quantizer's step is about the size of that source grid's step, and which
source values land on which side of a rounding boundary changes with the smallest change of step.
This script measures the size of that effect: each method is run at a few targets a few
thousandths of a bit apart, all at or below the budget (steps differ by well under 1%, weight
errors by under 1.5%), and the spread of their perplexities is the noise floor of any single
point in RESULTS.md at that budget. ECSQ row + balance is also run with one relative step shared
by all matrices instead of a rate per matrix (llmcodec's equal-QP allocation does the same): the
rates per matrix differ from equal by under 0.02 bits.

Points at the budget itself are taken from results.csv (the same settings); the others land in
noise.csv. Writes benchmarks/experiments/NOISE.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

import run as R  # noqa: E402
from common import measuring_command, write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402


def entries(targets: list[float], with_llmcodec: bool, extra: list[str], workers: int) -> list[tuple[str, R.Entry]]:
    """(group, entry): the group names the method whose draws are pooled. The entries are run.py's."""
    groups = [("ecsq-range row", "ecsq-range row"), ("ecsq-range row+balance", "ecsq-range row+balance"),
              ("ecsq-range row+balance, shared relative step", "ecsq-range row+balance shared-relative")]
    if with_llmcodec:
        groups.append(("llmcodec-vvc default", "llmcodec-vvc default"))
    out = []
    for b in targets:
        known = {f"{e.method} {e.setting}": e for e in R.default_methods((b,), [], workers)}
        out += [(group, known[f"{name} bpw={b}"]) for group, name in groups]
        for e in R.extra_entries(extra, (b,), workers):
            out.append((f"{e.method} {e.setting.rpartition(' bpw=')[0]}", e))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="3.5", help="comma-separated; a section of NOISE.md each")
    ap.add_argument("--offsets", default="0,0.005,0.01", help="targets = budget minus each offset")
    ap.add_argument("--windows", type=int, default=8, help="PTB windows, as in the RESULTS.md run")
    ap.add_argument("--llmcodec", action="store_true", help="also llmcodec's default (about 10 min a point)")
    ap.add_argument("--extra", action="append", default=[], help="llmcodec config 'name:key=value,...' (run.py's)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    info = sysinfo.describe()
    budgets = [float(b) for b in args.budgets.split(",")]
    noise_csv, main_csv = HERE / "noise.csv", RD / "results.csv"
    win = str(args.windows)

    def known() -> dict[tuple, dict]:
        return {R.row_key(r): r for r in R.read_rows(main_csv) + R.read_rows(noise_csv)}

    plans = {}
    for budget in budgets:
        targets = [round(budget - float(o), 4) for o in args.offsets.split(",")]
        plans[budget] = (targets, entries(targets, args.llmcodec, args.extra, args.workers))
    if not args.report_only:
        model = None
        for _, plan in plans.values():
            for _, e in plan:
                if (R.SMOL, e.method, e.setting, win) in known():
                    continue
                model = model or R.Smol(args.windows)
                R.log(f"{e.method} {e.setting} ...")
                row = R.run_point(model, e)
                R.record(noise_csv, row)
                R.log(str(row))
    rows = known()
    lines = [
        "# Realization noise of SmolLM2 perplexity near a budget",
        "",
        f"Regenerate: `{measuring_command(info)}` (`--report-only` redraws this file).",
        "",
        " ".join(__doc__.split("\n\n")[1].split()),
        "",
    ]
    for budget, (targets, plan) in plans.items():
        lines += [
            f"## Budget {budget} bits per weight",
            "",
            f"Targets {', '.join(map(str, targets))}; PTB test, {args.windows} windows of 512 tokens (the",
            "RESULTS.md protocol).",
            "",
            "| method | setting | bpw | rel. error | perplexity |",
            "|---|---|---|---|---|",
        ]
        pooled: dict[str, list[float]] = {}
        for group, e in plan:
            r = rows.get((R.SMOL, e.method, e.setting, win))
            if r is None:
                continue
            pooled.setdefault(group, []).append(float(r["perplexity"]))
            lines.append(f"| {e.method} | {e.setting} | {float(r['bpw']):.4f} | {float(r['rel_error']):.4f} | "
                         f"{float(r['perplexity']):.2f} |")
        lines += ["", "| method | draws | perplexity min | mean | max | spread (max/min - 1) |",
                  "|---|---|---|---|---|---|"]
        for group, v in pooled.items():
            lines.append(f"| {group} | {len(v)} | {min(v):.2f} | {statistics.mean(v):.2f} | {max(v):.2f} | "
                         f"{max(v) / min(v) - 1:.1%} |")
        lines.append("")
    write_markdown(HERE / "NOISE.md", lines, info, measured=not args.report_only)
    print("wrote", HERE / "NOISE.md")


if __name__ == "__main__":
    main()

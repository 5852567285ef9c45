"""Draws near each budget, paired: is a perplexity difference larger than the realization noise?

    .venv/bin/python benchmarks/rd/draws.py            # reads w40/results.csv and w40/noise/results.csv

The built-in SmolLM2's weights sit on a 4-bit grid, so near 3.5-4 bits per weight a method's
perplexity moves by per cents when its rate moves by thousandths of a bit (experiments/NOISE.md). One point per
budget therefore ranks two close methods by chance. run.py measures "draws" of the same
configuration at targets a few thousandths of a bit at or below a budget (``w40/noise``); this script
pairs two configurations' draws at the same targets and reports the mean log ratio of their
perplexities with a 95% Student-t interval over the pairs. Nothing here is measured: it reads the
40-window CSVs (the issue's 20,440 tokens) and writes ``w40/DRAWS.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402
from report import BUDGETS, SMOL, series_name  # noqa: E402

from llmcodec import sysinfo  # noqa: E402

CSVS = (HERE / "w40" / "results.csv", HERE / "w40" / "noise" / "results.csv")
OUT = HERE / "w40" / "DRAWS.md"
DEFAULT = "llmcodec-vvc default"
SPAN = 0.04  # a draw belongs to budget B if its target lies in (B - SPAN, B]
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard table values).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float  # mean of log(a / b) over the pairs
    low: float  # 95% interval of that mean; nan with one pair
    high: float
    a_lower: int  # pairs where a's perplexity is the lower


def paired(a: list[float], b: list[float]) -> Paired:
    """Mean log ratio of a to b over pairs (a[i], b[i]), with a 95% t interval."""
    if len(a) != len(b) or not a:
        raise ValueError("need the same number of draws on both sides, at least one")
    d = [math.log(x / y) for x, y in zip(a, b, strict=True)]
    n, m = len(d), sum(d) / len(d)
    if n == 1:
        return Paired(1, m, math.nan, math.nan, int(d[0] < 0))
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)
    return Paired(n, m, m - half, m + half, sum(x < 0 for x in d))


def verdict(p: Paired) -> str:
    if p.n < 2:
        return "one pair: no interval"
    if p.high < 0:
        return "lower"
    if p.low > 0:
        return "higher"
    return "tie (interval spans 0)"


def read(paths=CSVS) -> dict[str, dict[float, float]]:
    """Perplexity of each SmolLM2 configuration by target bits per weight."""
    out: dict[str, dict[float, float]] = {}
    for p in paths:
        if not p.is_file():
            continue
        with p.open(newline="") as f:
            for r in csv.DictReader(f):
                if r["model"] != SMOL or not r["target_bpw"] or not r["perplexity"]:
                    continue
                out.setdefault(series_name(r), {})[float(r["target_bpw"])] = float(r["perplexity"])
    return out


def near(points: dict[float, float], budget: float) -> dict[float, float]:
    return {t: v for t, v in points.items() if budget - SPAN < t <= budget + 1e-9}


def pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * (math.exp(x) - 1):+.1f}%"


def report(series: dict[str, dict[float, float]]) -> list[str]:
    lines = [
        "# Draws near each budget: the default against each configuration, paired",
        "",
        "Regenerate: `.venv/bin/python benchmarks/rd/draws.py` (reads `w40/results.csv` and "
        "`w40/noise/results.csv`; measure more draws with run.py's `--budgets 3.495,3.49,...`, "
        "`benchmarks/rd/README.md`).",
        "",
        "SmolLM2-135M (**its weights were already 4-bit, GGUF Q4_1**), PTB test, 40 windows of 512 "
        "tokens (20,440 predicted tokens, the issue's). A draw is one run of a configuration at a "
        f"target in (B - {SPAN}, B] for budget B; two configurations are paired at the targets both "
        "have. `change` is the geometric mean of the default's perplexity over the other's "
        "(negative: the default is lower), with a 95% Student-t interval over the pairs; `verdict` "
        "says whether that interval excludes no difference. Peers are the issue's (RTN, HQQ, ECSQ); "
        "`ecsq-range row+balance` is ECSQ on llmcodec's own column balance, a reference.",
        "",
    ]
    default = series.get(DEFAULT, {})
    for b in BUDGETS:
        mine = near(default, b)
        if not mine:
            continue
        lines += [f"## {b} bits per weight", "",
                  f"The default's draws: {len(mine)} (targets "
                  f"{', '.join(f'{t:g}' for t in sorted(mine, reverse=True))}), perplexity "
                  f"{', '.join(f'{mine[t]:.2f}' for t in sorted(mine, reverse=True))}.", "",
                  "| configuration | pairs | its perplexity (mean) | default's (same targets) | change | "
                  "95% interval | default lower in | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        rows = []
        for name, pts in series.items():
            other = near(pts, b)
            common = sorted(set(other) & set(mine), reverse=True)
            if name == DEFAULT or not common:
                continue
            p = paired([mine[t] for t in common], [other[t] for t in common])
            mean_o = sum(other[t] for t in common) / len(common)
            mean_d = sum(mine[t] for t in common) / len(common)
            interval = "—" if p.n < 2 else f"{pct(p.low)} to {pct(p.high)}"
            rows.append((-p.n, name, f"| {name} | {p.n} | {mean_o:.2f} | {mean_d:.2f} | {pct(p.mean)} | "
                                     f"{interval} | {p.a_lower} of {p.n} | {verdict(p)} |"))
        lines += [r[2] for r in sorted(rows)] + [""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    series = read()
    if DEFAULT not in series:
        sys.exit(f"no '{DEFAULT}' rows in {', '.join(map(str, CSVS))}")
    # The draws were measured by run.py (its reports name the machine); this names what drew the table.
    write_markdown(args.out, report(series), sysinfo.describe())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

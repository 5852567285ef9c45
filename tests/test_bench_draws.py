"""benchmarks/rd/draws.py: pairing draws and the interval over them."""

import csv
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "rd"))

from draws import DEFAULT, near, paired, read, report, verdict  # noqa: E402


def test_paired_mean_and_interval_of_log_ratios():
    p = paired([90.0, 99.0, 110.0], [100.0, 100.0, 100.0])
    d = [math.log(0.9), math.log(0.99), math.log(1.1)]
    m = sum(d) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 2)
    assert p.n == 3 and p.a_lower == 2
    assert p.mean == pytest.approx(m)
    assert p.high - p.mean == pytest.approx(4.303 * sd / math.sqrt(3))
    assert verdict(p) == "tie (interval spans 0)"
    # consistently lower by about 5%: the interval excludes 0
    q = paired([95.0, 94.8, 95.3, 95.1], [100.0] * 4)
    assert q.high < 0 and verdict(q) == "lower" and q.a_lower == 4
    assert verdict(paired([105.0, 105.5], [100.0, 100.2])) == "higher"
    one = paired([1.0], [2.0])
    assert math.isnan(one.low) and verdict(one).startswith("one pair")
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])


def test_report_pairs_only_targets_both_have(tmp_path):
    path = tmp_path / "r.csv"
    fields = ["model", "method", "setting", "target_bpw", "perplexity"]
    rows = [("llmcodec-vvc", "default", 3.5, 70.0), ("llmcodec-vvc", "default", 3.49, 71.0),
            ("llmcodec-vvc", "default", 3.4, 90.0),  # outside every budget's span: not a draw
            ("ecsq-range", "row", 3.5, 72.0), ("ecsq-range", "row", 3.49, 73.0), ("ecsq-range", "row", 3.48, 60.0)]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for m, s, t, p in rows:
            w.writerow({"model": "smollm2-135m", "method": m, "setting": f"{s} bpw={t}", "target_bpw": t,
                        "perplexity": p})
    series = read([path])
    assert set(near(series[DEFAULT], 3.5)) == {3.5, 3.49}
    text = "\n".join(report(series))
    line = next(x for x in text.splitlines() if x.startswith("| ecsq-range row |"))
    assert "| 2 | 72.50 | 70.50 |" in line and "2 of 2" in line  # 3.48 has no default draw

"""The step-shape family of benchmarks/experiments/tradeoff.py."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))

from common import global_rel_error  # noqa: E402
from tradeoff import Shape, quantize, row_steps  # noqa: E402


def _matrices():
    rng = np.random.default_rng(1)
    scales = np.array([[0.1], [1.0], [3.0], [0.5]] * 16)  # rows of different RMS
    return [rng.standard_normal((64, 96)) * scales, 4.0 * rng.standard_normal((32, 64))]


def test_row_steps_interpolate_between_row_rms_and_one_step():
    x = _matrices()[0]
    rms = np.sqrt(np.mean(np.square(x), axis=1, keepdims=True))
    assert row_steps(x, 1, 1) == pytest.approx(rms)
    assert row_steps(x, 0, 0) == pytest.approx(np.ones_like(rms))
    half = row_steps(x, 0.5, 1)
    assert half / half[0] == pytest.approx(np.sqrt(rms / rms[0]))


def test_quantize_meets_the_budget_and_one_step_has_the_least_error():
    ws = _matrices()
    errors = {}
    for shape in (Shape(0, 1, 1, side=False), Shape(0, 0, 0, side=False), Shape(0, 0, 1, side=False)):
        restored, bpw = quantize(ws, shape, 3.0)
        assert 2.99 <= bpw <= 3.0
        names = [str(i) for i in range(len(ws))]
        errors[shape.label] = global_rel_error(
            {n: torch.from_numpy(w) for n, w in zip(names, ws, strict=True)},
            {n: torch.from_numpy(r) for n, r in zip(names, restored, strict=True)}, names)
    # one step for every weight minimizes squared error at a given entropy (high-rate theory)
    assert errors["(0, 0, 0), no side info"] < min(errors["(0, 1, 1), no side info"], errors["(0, 0, 1), no side info"])
    # side information is paid from the same budget
    _, bpw = quantize(ws, Shape(1, 1, 1), 3.0)
    assert bpw <= 3.0


def test_step_multipliers_move_error_between_matrices_at_the_same_rate():
    ws = _matrices()

    def errors(mults):
        restored, bpw = quantize(ws, Shape(0, 1, 1, side=False), 3.0, mults)
        assert 2.99 <= bpw <= 3.0
        return [float(np.linalg.norm(r - w) / np.linalg.norm(w)) for w, r in zip(ws, restored, strict=True)]

    plain, finer = errors(None), errors([1.0, 0.5])  # the small matrix one octave finer; the large one pays
    assert finer[1] < 0.7 * plain[1] and finer[0] > plain[0]


def test_edges_variants_and_report():
    from edges import BY_NAME, report

    names = [f"model.layers.{i}.self_attn.{k}_proj.weight" for i in range(4) for k in "qv"]
    assert BY_NAME["edge6"].octaves(names) == [1.0, 1.0, 0, 0, 0, 0, 1.0, 1.0]
    assert BY_NAME["vd3"].octaves(names) == [0, 0.5] * 4
    assert BY_NAME["base"].octaves(names) == [0] * 8
    rows = [{"bpw": 3.0, "variant": "base", "reached": 2.9996, "error": 0.15, "valid": 90.0, "test": 92.0},
            {"bpw": 3.0, "variant": "edge6", "reached": 2.9999, "error": 0.156, "valid": 84.6, "test": 85.1}]
    text = "\n".join(report(rows, {"command": "python benchmarks/experiments/edges.py"}))
    assert ("| edge6 | first and last block 1 octave finer | 3.000 | 0.1560 | "
            "84.6 (-6.0%) | 85.1 (-7.5%) |") in text
    assert "Issue 4 asks for rate allocation" in text and "writes EDGES.md" not in text


def test_calibration_report_pairs_the_default_with_the_data_aware_rows(tmp_path):
    from calibration import ppl_rows

    head = "model,method,setting,target_bpw,bpw,rel_error,perplexity\n"
    (tmp_path / "r.csv").write_text(head + "\n".join([
        "smollm2-135m,llmcodec-vvc,default bpw=2.5,2.5,2.4990,0.23,185.40",
        "smollm2-135m,llmcodec-vvc,edge_layers=0 bpw=2.5,2.5,2.4990,0.23,200.0",
        "smollm2-135m,llmcodec-vvc-calib,calibration=ptb-train bpw=2.5,2.5,2.4992,0.25,179.25",
        "smollm2-135m,llmcodec-vvc-nokv,kv_sharing=0.0 bpw=2.5,2.5,2.4990,0.23,203.94",
        "smollm2-135m,llmcodec-vvc,default bpw=3.0,3.0,2.9990,0.17,99.6",  # no data-aware row: left out
    ]) + "\n")
    rows = ppl_rows(tmp_path / "r.csv")
    assert rows[2:] == ["| 2.5 | 2.499, 185.4 | 2.499, 179.2 | -3.3% | — | 203.9 (+10.0%) |"]
    assert ppl_rows(tmp_path / "missing.csv") == []

"""``llmcodec bench``: sweep parsing, resume-safe CSV, measurements and plots on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmcodec import bench
from llmcodec.cli import main


def test_parse_sweep_forms():
    assert bench.parse_sweep(None, quick=True) == bench.QUICK_SWEEP
    got = bench.parse_sweep("x265:ai-fast@20,26,vvc", quick=False)
    assert got["x265:ai-fast"] == (20, 26)
    assert {k for k in got if k.startswith("vvc:")} == {k for k in bench.DEFAULT_SWEEP if k.startswith("vvc:")}
    assert bench.parse_sweep("aom@12;30", quick=False) == {"aom:default": (12, 30)}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchcodec", "unknown codec"),
        ("x265:warp", "no profile"),
        ("x265:ai-fast@20,99", "outside the codec's range"),
        ("x265:ai-fast@twenty", "bad QP list"),
    ],
)
def test_parse_sweep_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        bench.parse_sweep(spec, quick=False)


def test_points_span_each_curve_first():
    assert bench.coarse_first((22, 28, 34, 40)) == [22, 40, 34, 28]
    pts = bench.plan_points({"vvc:ai-faster": (20, 30, 40), "x264:ai-medium": (18, 26)})
    assert [(p.codec, p.qp) for p in pts[:2]] == [("vvc", 20), ("x264", 18)]
    assert len(pts) == 5 and len(set(pts)) == 5


def test_global_rel_error_matches_direct():
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((8, 5)), rng.standard_normal((3, 7)) * 4]
    hats = [w + rng.standard_normal(w.shape) * s for w, s in zip(ws, (0.1, 0.5), strict=True)]
    per = [np.linalg.norm(w - h) / np.linalg.norm(w) for w, h in zip(ws, hats, strict=True)]
    direct = math.sqrt(sum(np.linalg.norm(w - h) ** 2 for w, h in zip(ws, hats, strict=True))) / math.sqrt(
        sum(np.linalg.norm(w) ** 2 for w in ws)
    )
    got = bench.global_rel_error(per, [float(np.sum(w * w)) for w in ws])
    assert got == pytest.approx(direct, rel=1e-12)


def test_interpolate_on_log_scale():
    rows = [{"bits_per_weight": "2", "perplexity": "100"}, {"bits_per_weight": "4", "perplexity": "10"}]
    assert bench.interpolate(rows, 3.0, "perplexity") == pytest.approx(math.sqrt(1000))
    assert bench.interpolate(rows, 5.0, "perplexity") is None


def test_torn_last_row_is_dropped(tmp_path):
    path = tmp_path / "points.csv"
    row = {c: "1" for c in bench.COLUMNS}
    bench.append_point(path, row)
    with open(path, "a") as f:
        f.write("tiny,quick,codec,x264")  # an interrupted write
    assert len(bench.read_points(path)) == 1


def test_quick_sweep_resumes_and_plots(tiny_llama, tmp_path):
    settings = bench.BenchSettings(
        model=str(tiny_llama),
        out=tmp_path / "b",
        sweep={"x264:ai-medium": (20, 34), "jxl:e3": (8, 20)},
        quick=True,
    )
    logs: list[str] = []
    rows = bench.run(settings, log=logs.append)
    codec_rows = [r for r in rows if r["kind"] == "codec"]
    assert len(codec_rows) == 4 and len([r for r in rows if r["kind"] == "rtn"]) == 3
    by = {(r["codec"], int(r["qp"])): r for r in codec_rows}
    for codec, fine, coarse in (("x264", 20, 34), ("jxl", 8, 20)):
        a, b = by[codec, fine], by[codec, coarse]
        assert float(a["bits_per_weight"]) > float(b["bits_per_weight"]) > float(b["side_bits_per_weight"])
        assert 0 < float(a["rel_error"]) < float(b["rel_error"]) < 1
        assert int(a["tensors"]) == bench.QUICK_TENSORS and a["perplexity"] == ""
        assert float(a["encode_mweights_s"]) > 0 and float(a["decode_s"]) > 0
    rtn = sorted((int(r["qp"]), float(r["rel_error"])) for r in rows if r["kind"] == "rtn")
    assert rtn[0][1] > rtn[1][1] > rtn[2][1]
    assert (settings.out / f"weight_error_vs_bpw_{settings.scope}.png").stat().st_size > 1000
    assert "x264:ai-medium" in (settings.out / f"summary_{settings.scope}.md").read_text()
    # a rerun measures nothing new and leaves the CSV as it was
    before = (settings.out / "points.csv").read_text()
    logs.clear()
    bench.run(settings, log=logs.append)
    assert any("7 already in" in m and "0 to measure" in m for m in logs)
    assert (settings.out / "points.csv").read_text() == before


def test_sweep_with_perplexity(tiny_llama, tmp_path):
    settings = bench.BenchSettings(
        model=str(tiny_llama),
        out=tmp_path / "p",
        sweep={"x265:ai-fast": (20, 40)},
        windows=2,
        window=64,
        rtn_bits=(4,),
        max_tensors=6,
    )
    rows = bench.run(settings, log=lambda m: None)
    ref = next(r for r in rows if r["kind"] == "reference")
    fine, coarse = sorted((r for r in rows if r["kind"] == "codec"), key=lambda r: int(r["qp"]))
    assert int(ref["eval_tokens"]) == 2 * 63
    assert float(fine["perplexity"]) > 1 and float(coarse["perplexity"]) > 1
    # much coarser coding moves perplexity away from the uncompressed model's
    assert abs(float(coarse["perplexity"]) - float(ref["perplexity"])) > abs(
        float(fine["perplexity"]) - float(ref["perplexity"])
    )
    assert (settings.out / f"perplexity_vs_bpw_{settings.scope}.png").is_file()


def test_cli_bench_quick(tiny_llama, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["bench", str(tiny_llama), "--out", str(out), "--quick", "--codecs", "svtav1:ai-p8@30"]) == 0
    text = capsys.readouterr().out
    assert "machine:" in text and "ffmpeg:" in text and "torch:" in text and "command:" in text
    assert "svtav1:ai-p8 qp 30" in text
    assert (out / "points.csv").is_file()


def test_cli_bench_bad_codec_is_a_clear_error(tiny_llama, tmp_path, capsys):
    assert main(["bench", str(tiny_llama), "--out", str(tmp_path / "x"), "--quick", "--codecs", "h266x"]) == 2
    assert "unknown codec 'h266x'" in capsys.readouterr().err

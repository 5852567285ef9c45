"""``llmcodec bench``: sweep parsing, resume-safe CSV, rate-controlled measurements and plots on the
tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmcodec import bench
from llmcodec.cli import main


def test_parse_curves_and_budgets():
    assert bench.parse_curves(None, quick=True) == bench.QUICK_SWEEP
    assert bench.parse_curves(None, quick=False) == bench.DEFAULT_SWEEP
    assert bench.parse_curves("x265:ai-fast-coef,vvc,x265:ai-fast-coef", quick=False) == (
        "x265:ai-fast-coef",
        "vvc:default",
    )
    assert bench.parse_budgets(None, quick=False) == (2.0, 2.5, 3.0, 3.5, 4.0)
    assert bench.parse_budgets("3;2.5", quick=False) == (3.0, 2.5)


@pytest.mark.parametrize(
    ("curves", "budgets", "message"),
    [
        ("nosuchcodec", None, "unknown codec"),
        ("x265:warp", None, "no profile"),
        ("x265", "2.5,99", "budgets must be"),
        ("x265", "two", "bad budget list"),
    ],
)
def test_parse_errors(curves, budgets, message):
    with pytest.raises(ValueError, match=message):
        bench.parse_curves(curves, quick=False)
        bench.parse_budgets(budgets, quick=False)


def test_points_fill_each_budget_first():
    pts = bench.plan_points(("vvc:default", "x264:ai-medium"), (2.5, 3.0))
    assert [(p.codec, p.target) for p in pts] == [("vvc", 2.5), ("x264", 2.5), ("vvc", 3.0), ("x264", 3.0)]


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


def test_torn_last_row_is_dropped_and_old_files_are_refused(tmp_path):
    path = tmp_path / "points.csv"
    row = {c: "1" for c in bench.COLUMNS}
    bench.append_point(path, row)
    with open(path, "a") as f:
        f.write("tiny,quick,codec,x264")  # an interrupted write
    assert len(bench.read_points(path)) == 1
    old = tmp_path / "old.csv"
    old.write_text("model,scope,kind,codec,qp\n")
    with pytest.raises(ValueError, match="other columns"):
        bench.append_point(old, row)


def test_quick_sweep_lands_on_budgets_and_resumes(tiny_llama, tmp_path):
    settings = bench.BenchSettings(model=str(tiny_llama), out=tmp_path / "b", quick=True)
    logs: list[str] = []
    rows = bench.run(settings, log=logs.append)
    codec_rows = [r for r in rows if r["kind"] == "codec"]
    assert len(codec_rows) == 4 and len([r for r in rows if r["kind"] == "rtn"]) == 3
    by = {(r["codec"], float(r["target"])): r for r in codec_rows}
    for codec in ("x265", "svtav1"):
        lo, hi = by[codec, 3.0], by[codec, 4.5]
        for r in (lo, hi):
            # rate control: within 1.5% under the budget
            assert 0.985 <= float(r["landed"]) <= 1.0, r
            assert int(r["tensors"]) == bench.QUICK_TENSORS and r["perplexity"] == ""
            assert float(r["encode_mweights_s"]) > 0 and float(r["decode_mweights_s"]) > 0
            assert float(r["file_bits_per_param"]) > 0
        assert 0 < float(hi["rel_error"]) < float(lo["rel_error"]) < 1
    assert by["x265", 3.0]["coef_domain"] == "True" and by["svtav1", 3.0]["coef_domain"] == "False"
    assert (settings.out / f"weight_error_vs_bpw_{settings.scope}.png").stat().st_size > 1000
    text = (settings.out / f"summary_{settings.scope}.md").read_text()
    assert "Budget 3 " in text and "x265:default" in text
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
        curves=("x265:default",),
        budgets=(2.5, 6.0),
        windows=2,
        window=64,
        rtn_bits=(4,),
        max_tensors=6,
    )
    rows = bench.run(settings, log=lambda m: None)
    ref = next(r for r in rows if r["kind"] == "reference")
    coarse, fine = sorted((r for r in rows if r["kind"] == "codec"), key=lambda r: float(r["target"]))
    assert int(ref["eval_tokens"]) == 2 * 63
    assert float(fine["perplexity"]) > 1 and float(coarse["perplexity"]) > 1
    # much coarser coding moves perplexity away from the uncompressed model's
    assert abs(float(coarse["perplexity"]) - float(ref["perplexity"])) > abs(
        float(fine["perplexity"]) - float(ref["perplexity"])
    )
    assert (settings.out / f"perplexity_vs_bpw_{settings.scope}.png").is_file()


def test_cli_bench_quick(tiny_llama, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["bench", str(tiny_llama), "--out", str(out), "--quick", "--codecs", "svtav1", "--budgets", "3"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "machine:" in text and "ffmpeg:" in text and "torch:" in text and "command:" in text
    assert "svtav1:default at 3:" in text
    assert (out / "points.csv").is_file()


def test_cli_bench_bad_codec_is_a_clear_error(tiny_llama, tmp_path, capsys):
    assert main(["bench", str(tiny_llama), "--out", str(tmp_path / "x"), "--quick", "--codecs", "h266x"]) == 2
    assert "unknown codec 'h266x'" in capsys.readouterr().err


def test_grid_marks_the_best_and_the_cells_not_measured():
    base = {"model": "m", "scope": "s", "kind": "codec", "rel_error": "0.2", "encode_mweights_s": "1",
            "decode_mweights_s": "4"}
    rows = [
        {**base, "codec": "vvc", "profile": "default", "target": "2.5", "perplexity": "150"},
        {**base, "codec": "x265", "profile": "default", "target": "2.5", "perplexity": "170"},
        {**base, "codec": "x265", "profile": "default", "target": "3", "perplexity": "90"},
    ]
    text = bench.grid(rows, "s", ("vvc:default", "x265:default"), (2.5, 3.0))
    assert "| vvc:default | **150.0** / 0.200 | not measured | 1.00 | 4.00 |" in text
    assert "| x265:default | 170.0 / 0.200 | **90.0** / 0.200 |" in text


def test_refused_points_are_recorded_and_only_encoder_errors_retried(tiny_llama, tmp_path, monkeypatch):
    from llmcodec.codecs import CodecError
    from llmcodec.rate import BudgetError

    def refuse(model, point, settings):
        if point.codec == "j2k":
            raise BudgetError(f"{point.target} is below what j2k reaches\nsecond line")
        raise CodecError("libaom failed")

    monkeypatch.setattr(bench, "measure_codec", refuse)
    settings = bench.BenchSettings(model=str(tiny_llama), out=tmp_path / "r", quick=True,
                                   curves=("j2k:default", "aom:default"), budgets=(2.0,), rtn_bits=())
    logs: list[str] = []
    rows = bench.run(settings, log=logs.append)
    by = {r["codec"]: r for r in rows}
    assert by["j2k"]["status"] == bench.UNREACHABLE and by["j2k"]["note"] == "2.0 is below what j2k reaches"
    assert by["aom"]["status"] == bench.ERROR and by["aom"]["rel_error"] == ""
    assert "| j2k:default | unreachable |" in (settings.out / f"summary_{settings.scope}.md").read_text()
    # a rerun keeps the measured refusal and retries the encoder error; the retry's row replaces it
    logs.clear()
    rows = bench.run(settings, log=logs.append)
    assert any("1 already in" in m and "1 to measure" in m for m in logs)
    assert [r["status"] for r in rows if r["codec"] == "aom"] == [bench.ERROR]
    assert len(bench.read_points(settings.out / "points.csv")) == 3


def test_latest_keeps_the_last_row_of_each_point():
    base = {"model": "m", "scope": "s", "kind": "codec", "codec": "aom", "profile": "default"}
    rows = [{**base, "target": "2", "status": "error"}, {**base, "target": "3", "status": "ok"},
            {**base, "target": "2.0", "status": "ok"}]
    assert [(r["target"], r["status"]) for r in bench.latest(rows)] == [("3", "ok"), ("2.0", "ok")]


def test_off_budget_cells_say_where_they_landed():
    base = {"model": "m", "scope": "s", "kind": "codec", "rel_error": "0.2", "encode_mweights_s": "1",
            "decode_mweights_s": "4", "codec": "jxl", "profile": "default", "target": "4", "perplexity": "70"}
    text = bench.grid([{**base, "status": "off-budget", "landed": "0.9612"}], "s", ("jxl:default",), (4.0,))
    assert "| jxl:default | 70.0 / 0.200 (landed 0.961) |" in text  # shown, not ranked


def test_cli_rtn_list(tiny_llama, tmp_path, capsys):
    out = tmp_path / "n"
    args = ["bench", str(tiny_llama), "--out", str(out), "--quick", "--codecs", "svtav1", "--budgets", "3", "--rtn"]
    assert main([*args, "none"]) == 0
    assert not any(r["kind"] == "rtn" for r in bench.read_points(out / "points.csv"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args, "2,nine"])
    assert "expected bits" in capsys.readouterr().err


def test_an_unexpected_failure_is_recorded_by_its_type():
    row = bench.refused(bench.Point("rav1e", "default", 2.0), bench.ERROR, TimeoutError())
    assert row["note"] == "TimeoutError" and row["status"] == bench.ERROR
    assert bench.refused(bench.Point("aom", "default", 2.0), bench.ERROR, OSError("pipe\nx"))["note"] == "OSError: pipe"

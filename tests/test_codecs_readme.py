"""benchmarks/codecs/make_readme.py: the codec README written from a sweep's CSV alone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "codecs"))

import make_readme  # noqa: E402

from llmcodec import bench  # noqa: E402


def _row(codec, target, ppl, status="ok", **kw):
    row = {"model": "smollm2-135m", "scope": make_readme.SCOPE, "kind": "codec", "codec": codec,
           "profile": "default", "coded_profile": "default", "target": target, "bits_per_weight": target,
           "landed": 0.99, "file_bits_per_param": target * 0.99, "file_bytes": 4e7, "params": 134515008,
           "qp_min": 30, "qp_max": 40, "rel_error": 0.2, "perplexity": ppl, "eval_tokens": 20440,
           "encode_mweights_s": 0.5, "decode_mweights_s": 5.0, "load1": 3.0, "status": status}
    row.update(kw)
    return row


def test_readme_names_winners_findings_and_missing_cells(tmp_path):
    csv = tmp_path / "points.csv"
    rows = [
        {"model": "smollm2-135m", "scope": make_readme.SCOPE, "kind": "reference", "codec": "none",
         "profile": "source", "perplexity": 57.5, "eval_tokens": 20440, "tensors": 0},
        _row("vvc", 2.5, 150.0, encode_mweights_s=0.1, decode_mweights_s=1.0),
        _row("x265", 2.5, 160.0, encode_mweights_s=0.4, decode_mweights_s=9.0),
        _row("svtav1", 2.5, 900.0, encode_mweights_s=2.0, decode_mweights_s=12.0),
        _row("x265", 3.0, 90.0),
        _row("vvc", 3.0, 80.0, status="off-budget", landed=1.02),
        {"model": "smollm2-135m", "scope": make_readme.SCOPE, "kind": "codec", "codec": "j2k", "profile": "default",
         "target": 2.5, "status": "unreachable", "note": "2.5 bits per parameter is below j2k's coarsest QP"},
    ]
    for r in rows:
        bench.append_point(csv, r)
    text = make_readme.render(csv, tmp_path / "no.log")
    assert "- **2.5 bits per parameter: VVC (libvvenc)**, perplexity 150.0" in text
    assert "next HEVC (x265) at 160.0 (1.07x)" in text
    # the off-budget VVC point is shown but does not win 3.0
    assert "- **3 bits per parameter: HEVC (x265)**" in text and "80.0 / 0.200 (landed 1.020)" in text
    assert "| j2k:default | not measured | unreachable |" in text and "below j2k's coarsest QP" in text
    assert "Fastest restore** at usable quality (perplexity within 1.25x of the best at the same budget): " \
           "HEVC (x265)" in text and "fastest of all AV1 (SVT-AV1)" in text
    assert "Not measured" in text and "2.5: kvazaar, aom, x264" in text and "3.5:" in text
    assert "Uncompressed perplexity: 57.50" in text


def test_readme_does_not_judge_the_default_without_its_cell_and_cites_filesize(tmp_path, monkeypatch):
    csv = tmp_path / "points.csv"
    bench.append_point(csv, _row("x265", 2.5, 364.0, encode_mweights_s=0.16, decode_mweights_s=1.4))
    sizes = tmp_path / "filesize.csv"
    sizes.write_text("setting,target_bpw,bits_per_parameter,perplexity,windows\n"
                     "uncompressed,,5.85,57.5,40\nbpw=2.5,2.5,2.4901,290.887,40\n"
                     "bpw=2.5 embedding_offset=-6,2.5,2.49,1344.3,40\n")
    monkeypatch.setattr(make_readme, "FILESIZE", sizes)
    monkeypatch.setattr(make_readme, "HERE", tmp_path / "benchmarks" / "codecs")
    text = make_readme.render(csv, tmp_path / "no.log")
    assert "encode 0.160 / decode 1.40 Mweights/s" in text
    assert "The default (`vvc`) has no measured cell at these budgets yet" in text
    assert "1 of 10 codecs measured)" in text
    # only the default-setting rows of benchmarks/filesize, outside the grid
    assert "2.5: perplexity 290.9 at 2.490 bits per parameter." in text and "1344" not in text
    assert "| vvc:default | not measured | not measured |" in text


def test_readme_ranks_only_cells_of_one_code_and_lists_the_others_as_superseded(tmp_path):
    csv = tmp_path / "points.csv"
    rows = [
        _row("x265", 2.5, 364.0, code="0.1.0+old"),
        _row("aom", 2.5, 100.0, code="0.1.0+old"),
        {"model": "smollm2-135m", "scope": make_readme.SCOPE, "kind": "reference", "codec": "none",
         "profile": "source", "perplexity": 57.5, "eval_tokens": 20440, "tensors": 0, "code": "0.1.0+new"},
        _row("vvc", 2.5, 214.0, code="0.1.0+new"),
        _row("x265", 2.5, 250.0, code="0.1.0+new"),
    ]
    for r in rows:
        bench.append_point(csv, r)
    text = make_readme.render(csv, tmp_path / "no.log")
    ranked, _, old = text.partition("## Superseded cells")
    # aom's old 100.0 would win 2.5, but it is of other code: ranked only apart, as superseded
    assert "- **2.5 bits per parameter: VVC (libvvenc)**, perplexity 214.0" in ranked
    assert "next HEVC (x265) at 250.0" in ranked and "100.0" not in ranked and "364.0" not in ranked
    assert "`0.1.0+new`" in ranked and "Uncompressed perplexity: 57.50 (20440 tokens)." in ranked
    assert "| aom:default | 2.5 | 100.0 | 0.200 | `0.1.0+old` |" in old and "| x265:default | 2.5 | 364.0 |" in old
    # asked for the old code, the old cells are ranked and the new ones superseded
    text = make_readme.render(csv, tmp_path / "no.log", code="0.1.0+old")
    ranked, _, old = text.partition("## Superseded cells")
    assert "- **2.5 bits per parameter: AV1 (libaom)**" in ranked and "measured by code `0.1.0+new`" in ranked
    assert "| vvc:default | 2.5 | 214.0 |" in old


def _minilm_row(codec, target, cos, status="ok", **kw):
    return _row(codec, target, None, status, model="minilm", scope=make_readme.MINILM_SCOPE, cos_mean=cos,
                cos_min=cos - 0.01, sentences=300, eval_tokens=None, params=22713728, **kw)


def test_readme_adds_the_minilm_grid_ranked_by_similarity(tmp_path):
    csv, mini = tmp_path / "points.csv", tmp_path / "minilm.csv"
    bench.append_point(csv, _row("vvc", 2.5, 150.0))
    assert "## MiniLM" not in make_readme.render(csv, tmp_path / "no.log", minilm_csv=mini)  # no sweep yet
    rows = [
        _minilm_row("svtav1", 4.0, 0.9999, code="old"),  # other code: never ranked with the newest code's
        {"model": "minilm", "scope": make_readme.MINILM_SCOPE, "kind": "reference", "codec": "none",
         "profile": "source", "cos_mean": 1.0, "cos_min": 1.0, "sentences": 300, "tensors": 0, "code": "c"},
        _minilm_row("vvc", 2.5, 0.990, code="c", encode_mweights_s=0.2),
        _minilm_row("x265", 2.5, 0.995, code="c", encode_mweights_s=0.7, decode_mweights_s=8.0),
        _minilm_row("x264", 2.5, 0.999, code="c", status="off-budget", landed=0.95),
        _minilm_row("vvc", 4.0, 0.9990, code="c"),
    ]
    for r in rows:
        bench.append_point(mini, r)
    text = make_readme.render(csv, tmp_path / "no.log", minilm_csv=mini)
    section = text[text.index("## MiniLM"):]
    # the highest similarity wins; the off-budget x264 cell is shown, not ranked
    assert "- **2.5 bits per parameter: HEVC (x265)**, mean cosine 0.99500 (least 0.9850)" in section
    assert "encode 0.700 / decode 8.00 Mweights/s; next VVC (libvvenc) at 0.99000, 1 - cosine 2.00x" in section
    assert "| x265:default | not measured | **0.99500** / 0.200 |" in section
    assert "0.99900 / 0.200 (landed 0.950)" in section
    assert "AVC (x264) at 2.5: landed at 0.9500 of the budget." in section
    assert "- **4 bits per parameter: VVC (libvvenc)**" in section and "0.99990" not in section
    assert "- **2**: no rate-controlled cell measured yet." in section
    assert "Uncompressed: 1.00000 (the uncompressed model against itself, 300 sentences)" in section
    assert "HEVC (x265) 1, VVC (libvvenc) 1" in section or "VVC (libvvenc) 1, HEVC (x265) 1" in section
    assert make_readme.MINILM_COMMANDS[0] in section and "--codecs svtav1,aom,x264" in make_readme.MINILM_COMMANDS[1]


def test_readme_compares_profiles_with_their_base_at_equal_budget(tmp_path):
    csv = tmp_path / "points.csv"
    for r in (_row("aom", 3.0, 400.0), _row("aom", 3.0, 440.0, profile="ai-cpu8-8bit", coded_profile="ai-cpu8-8bit"),
              _row("aom", 3.0, 500.0, profile="ai-cpu8-h128", coded_profile="ai-cpu8-h128"),
              _row("x265", 3.0, 90.0, profile="ai-slow-coef", coded_profile="ai-slow-coef")):
        bench.append_point(csv, r)
    text = make_readme.render(csv, tmp_path / "no.log", minilm_csv=tmp_path / "no-minilm.csv")
    assert "| 8 against 10 bit samples | 3 | `aom:default` | `aom:ai-cpu8-8bit` | 400.0 → 440.0 | 1.100 |" in text
    # a pair with one side missing is not compared, and is named as not measured
    assert "`aom:ra-cpu8-h128`" not in text and "x265:ai-slow-coef` |" not in text
    assert "Not on this footing yet: encoder preset, inter against all-intra coding (same tiling)" in text
    # the codec ranking is by default profiles; a profile that beats them all is named apart
    assert "- **3 bits per parameter: AV1 (libaom)**, perplexity 400.0" in text
    assert "- 3: `x265:ai-slow-coef` 90.0 (the best default profile: AV1 (libaom) 400.0)" in text


def test_readme_shows_the_spread_of_a_cell_from_budgets_a_hundredth_apart(tmp_path):
    csv = tmp_path / "points.csv"
    for t, ppl in ((2.49, 230.0), (2.5, 220.0), (2.51, 210.0)):
        bench.append_point(csv, _row("vvc", t, ppl))
    bench.append_point(csv, _row("x265", 2.5, 215.0))
    text = make_readme.render(csv, tmp_path / "no.log", minilm_csv=tmp_path / "no-minilm.csv")
    assert "- 2.5: VVC (libvvenc) 230.0 / 220.0 / 210.0 at targets 2.49 / 2.5 / 2.51 (mean 220.0)" in text
    assert "HEVC (x265) 215.0 at" not in text  # one cell has no spread to show

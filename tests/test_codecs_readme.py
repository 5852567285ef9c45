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

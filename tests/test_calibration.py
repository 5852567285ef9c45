"""The optional data-aware mode: squared gradients on text -> per-matrix QP offsets."""

import numpy as np
import pytest
import torch

import llmcodec
from llmcodec import calibration as C
from llmcodec.compress import CompressSettings


def test_sensitivity_offsets_follow_the_loss_per_weight():
    # full strength: twice the loss per weight gives a step 2^-1/2 times as large, 3 QP finer
    assert C.sensitivity_offsets([1.0, 2.0, 4.0], [100, 100, 100], strength=1.0) == [3, 0, -3]
    # the same loss spread over 4x the weights: each weight matters 1/4 as much, 6 QP coarser
    assert C.sensitivity_offsets([1.0, 1.0, 1.0], [25, 100, 400], strength=1.0) == [-6, 0, 6]
    assert C.sensitivity_offsets([1.0, 1.0, 1.0], [25, 100, 400]) == [-3, 0, 3]  # the default: half
    # clipped to MAX_OCTAVES around the median; a dead matrix gets the coarsest step allowed
    assert C.sensitivity_offsets([1.0, 1.0, 1e-12, 1e12], [1, 1, 1, 1], max_octaves=1.0) == [0, 0, 6, -6]
    assert C.sensitivity_offsets([0.0, 1.0, 1.0], [1, 1, 1]) == [12, 0, 0]
    assert C.sensitivity_offsets([], []) == []
    with pytest.raises(ValueError, match="finite and non-negative"):
        C.sensitivity_offsets([1.0, float("nan")], [1, 1])


def test_error_pattern_and_the_fisher_loss_weight():
    w = np.array([[3.0, 4.0], [0.6, 0.8]])  # row RMS 3.54 and 0.707
    p = C.error_pattern(w)
    np.testing.assert_allclose(p, [[np.sqrt(12.5)] * 2, [np.sqrt(0.5)] * 2])
    np.testing.assert_allclose(C.error_pattern(w, shared_scale=True), np.sqrt(12.5))
    c = np.array([1.0, 2.0], np.float32)  # column 1 coded at twice the size: half the error there
    pc = C.error_pattern(w, c)
    rms = np.sqrt(np.mean(np.square(w * c), axis=1))
    np.testing.assert_allclose(pc, rms[:, None] / c[None, :])
    np.testing.assert_allclose(C.error_pattern(np.arange(8.0).reshape(2, 4), group=2)[:, ::2],
                               [[np.sqrt(0.5), np.sqrt(6.5)], [np.sqrt(20.5), np.sqrt(42.5)]])
    f = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert C.fisher_loss_weight(f, np.array([[1.0, 0.5], [2.0, 1.0]])) == pytest.approx(1 + 0.5 + 12 + 4)


def test_calibration_text_and_windows(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        C.calibration_text(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        C.calibration_text(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="Penn Treebank split"):
        C.calibration_text("ptb-dev")
    assert C.calibration_text("ptb-valid").startswith(" consumers may want")

    class Tok:
        def __call__(self, text, add_special_tokens, return_tensors):
            return {"input_ids": torch.arange(len(text.split()))[None]}

    w = C.calibration_windows(Tok(), "a " * 300, tokens=1000, window=128)
    assert w.shape == (2, 128) and int(w[1, 0]) == 128
    assert C.calibration_windows(Tok(), "a " * 300, tokens=130, window=128).shape == (1, 128)
    with pytest.raises(ValueError, match="at least 128 tokens"):
        C.calibration_windows(Tok(), "a " * 100, tokens=1000, window=128)


def test_settings_refuse_what_calibration_does_not_model():
    assert CompressSettings(calibration="ptb-train", bpw=2.5).resolved_edge_octaves() == 0.0
    assert CompressSettings(calibration="ptb-train", bpw=2.5, edge_octaves=0.5).resolved_edge_octaves() == 0.5
    for kw, what in (({"rotate": True, "weighting": "none"}, "rotate"), ({"compand": 0.8}, "compand"),
                     ({"allocation": "equal-error"}, "allocation equal-error"), ({"lossless": True}, "lossless")):
        with pytest.raises(ValueError, match=f"does not combine with {what}"):
            CompressSettings(calibration="ptb-train", **kw)
    with pytest.raises(ValueError, match="calibration tokens"):
        CompressSettings(calibration="ptb-train", calibration_tokens=0)
    with pytest.raises(ValueError, match="needs a model config"):
        llmcodec.compress_state_dict({"a.weight": torch.ones(32, 32)}, CompressSettings(calibration="ptb-train"))


def test_calibrated_compression_records_itself_and_sets_qps(tiny_llama):
    from llmcodec.api import compress_source
    from llmcodec.modelio import load

    names = [n for n in load(tiny_llama).names() if n.endswith("_proj.weight")]
    art = compress_source(load(tiny_llama), CompressSettings(calibration="ptb-train", calibration_tokens=512, qp=30))
    assert len({art.coded[n].qp for n in names}) > 1  # not one QP for all
    assert art.settings["calibration"] == "ptb-train"  # the artifact says it was data-aware
    plain = compress_source(load(tiny_llama), CompressSettings(qp=30))
    assert {c.qp for c in plain.coded.values()} == {30}


def test_a_matrix_with_a_larger_loss_weight_gets_a_finer_qp_and_less_error():
    from llmcodec.compress import compress_matrices

    rng = np.random.default_rng(5)
    mats = [(f"m{i}.weight", rng.standard_normal((64, 64)).astype(np.float32), "float32") for i in range(3)]
    s = CompressSettings(qp=30, weighting="none", calibration="given")
    coded = compress_matrices(mats, s, loss_weights=[1.0, 16.0, 1.0])
    assert [c.qp for c in coded] == [30, 30 - 6, 30]  # 16x the loss per weight: one octave finer at half strength
    assert coded[1].rel_error < 0.6 * min(coded[0].rel_error, coded[2].rel_error)
    with pytest.raises(ValueError, match="only with a calibration text"):
        compress_matrices(mats, CompressSettings(qp=30), loss_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="needs the whole model"):
        llmcodec.compress_tensor(mats[0][1], s)


def test_per_position_fisher_is_the_window_gradient_when_one_position_is_scored(tiny_llama):
    """With two-token windows only position 0 is scored, and causal attention keeps position 1 out
    of its loss: the weight gradient is that one position's ``g x^T``, so both estimators agree.
    Longer windows give a different (per-position) estimate."""
    from llmcodec.api import load_tokenizer
    from llmcodec.modelio import build_model, load

    src = load(tiny_llama)
    model = build_model(dict(src.items()), src.config)
    names = [n for n in src.names() if n.endswith("_proj.weight")]
    tok = load_tokenizer(src.config, src.files)
    text = C.calibration_text("ptb-train")
    short = C.calibration_windows(tok, text, tokens=16, window=2)
    pos = C.squared_gradients(model, short, names, per="position")
    win = C.squared_gradients(model, short, names)
    for n in names:
        np.testing.assert_allclose(pos[n], win[n], rtol=1e-4, atol=1e-12 * float(win[n].max()))
    long = C.calibration_windows(tok, text, tokens=256, window=64)
    pos, win = C.squared_gradients(model, long, names, per="position"), C.squared_gradients(model, long, names)
    assert not np.allclose(pos[names[0]], win[names[0]], rtol=0.1)
    with pytest.raises(ValueError, match="unknown estimator"):
        C.squared_gradients(model, long, names, per="token")
    with pytest.raises(ValueError, match="no parameter"):
        C.squared_gradients(model, long, ["nope.weight"])


def test_cli_calibration_options_and_a_missing_text(tiny_llama, tmp_path, capsys):
    from llmcodec.cli import build_parser, main, settings_from_args

    args = build_parser().parse_args(["compress", "m", "o.llmc", "--calibration", "ptb-valid",
                                      "--calibration-tokens", "512"])
    s = settings_from_args(args)
    assert (s.calibration, s.calibration_tokens, s.resolved_edge_octaves()) == ("ptb-valid", 512, 0.0)
    assert settings_from_args(build_parser().parse_args(["compress", "m", "o.llmc"])).calibration is None
    out = tmp_path / "o.llmc"
    rc = main(["compress", str(tiny_llama), str(out), "--qp", "30", "--quiet",
               "--calibration", str(tmp_path / "nope.txt")])
    assert rc == 2 and "no such file" in capsys.readouterr().err
    assert not out.exists()


def test_streamed_loss_weights_match_the_full_fisher_and_free_every_gradient(tiny_llama):
    """Accumulating each matrix's loss weight directly (what compression does) gives the loss
    weight of the full Fisher diagonal against the full error pattern, for both estimators, with
    groups and column multipliers, and leaves no gradient behind."""
    from llmcodec.api import load_tokenizer
    from llmcodec.modelio import build_model, load

    src = load(tiny_llama)
    model = build_model(dict(src.items()), src.config)
    names = [n for n in src.names() if n.endswith("_proj.weight")]
    windows = C.calibration_windows(load_tokenizer(src.config, src.files), C.calibration_text("ptb-train"),
                                    tokens=128, window=32)
    rng = np.random.default_rng(0)
    ws = {n: src.get(n).float().numpy() for n in names}
    for per, group in (("window", None), ("window", 8), ("position", None)):
        cs = {n: rng.uniform(0.5, 2.0, ws[n].shape[1]).astype(np.float32) for n in names}
        full = C.squared_gradients(model, windows, names, per=per)
        reduce = {n: C.loss_weight_reducer(C.pattern_factors(ws[n], cs[n], group)) for n in names}
        stale = dict(model.named_parameters())[names[0]]
        stale.grad = torch.ones_like(stale)  # left over from elsewhere: must not be counted
        got = C.squared_gradients(model, windows, names, per=per, reduce=reduce)
        for n in names:
            want = C.fisher_loss_weight(full[n], C.error_pattern(ws[n], cs[n], group))
            assert want > 0 and float(got[n]) == pytest.approx(want, rel=1e-5)
        assert all(p.grad is None for p in model.parameters())

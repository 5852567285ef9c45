"""The optional data-aware mode: squared gradients on text -> per-matrix QP offsets."""

import numpy as np
import pytest
import torch

import llmcodec
from llmcodec import calibration as C
from llmcodec.compress import CompressSettings


def test_sensitivity_offsets_follow_the_loss_per_weight():
    # twice the loss per weight: a step 2^-1/2 times as large, i.e. 3 QP finer at 6 QP per octave
    assert C.sensitivity_offsets([1.0, 2.0, 4.0], [100, 100, 100]) == [3, 0, -3]
    # the same loss weight spread over 4x the weights: 6 QP coarser per weight... of the smaller one
    assert C.sensitivity_offsets([1.0, 1.0, 1.0], [25, 100, 400]) == [-6, 0, 6]
    # clipped to MAX_OCTAVES around the median; a dead matrix gets the coarsest step allowed
    assert C.sensitivity_offsets([1.0, 1.0, 1e-12, 1e12], [1, 1, 1, 1], max_octaves=1.0) == [0, 0, 6, -6]
    assert C.sensitivity_offsets([0.0, 1.0, 1.0], [1, 1, 1]) == [12, 0, 0]
    assert C.sensitivity_offsets([], []) == []
    with pytest.raises(ValueError, match="finite and non-negative"):
        C.sensitivity_offsets([1.0, float("nan")], [1, 1])


def test_loss_weight_is_the_fisher_weighted_error_pattern():
    f = np.array([[1.0, 2.0], [3.0, 4.0]])
    # rows with steps 1 and 2, columns multiplied by 1 and 2 (error 1/2 as large there)
    assert C.loss_weight(f, np.array([1.0, 2.0]), np.array([1.0, 2.0], np.float32)) == pytest.approx(
        1 * 1 + 2 * 1 / 4 + 3 * 4 + 4 * 4 / 4)
    assert C.loss_weight(f, np.array([1.0, 1.0]), None) == pytest.approx(10.0)


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


def test_squared_gradients_set_the_offsets_of_a_real_model(tiny_llama):
    from llmcodec.api import _squared_gradients, compress_source
    from llmcodec.modelio import load

    src = load(tiny_llama)
    names = [n for n in src.names() if n.endswith("_proj.weight")]
    s = CompressSettings(calibration="ptb-train", calibration_tokens=512, qp=30, weighting="none")
    fisher = _squared_gradients(src, names, s, None)
    assert [f.shape for f in fisher] == [tuple(src.get(n).shape) for n in names]
    assert all(np.isfinite(f).all() and f.sum() > 0 for f in fisher)

    art = compress_source(src, s)
    assert len({art.coded[n].qp for n in names}) > 1  # not one QP for all
    assert art.settings["calibration"] == "ptb-train"  # the artifact says it was data-aware
    plain = compress_source(load(tiny_llama), CompressSettings(qp=30, weighting="none"))
    assert {c.qp for c in plain.coded.values()} == {30}


def test_a_matrix_with_larger_gradients_gets_a_finer_qp_and_less_error():
    from llmcodec.compress import compress_matrices

    rng = np.random.default_rng(5)
    mats = [(f"m{i}.weight", rng.standard_normal((64, 64)).astype(np.float32), "float32") for i in range(3)]
    fisher = [np.ones((64, 64), np.float32), np.full((64, 64), 8.0, np.float32), np.ones((64, 64), np.float32)]
    s = CompressSettings(qp=30, weighting="none", calibration="given")
    coded = compress_matrices(mats, s, fisher=fisher)
    assert [c.qp for c in coded] == [30, 30 - 9, 30]  # 8x the loss per weight: 1.5 octaves finer
    assert coded[1].rel_error < 0.6 * min(coded[0].rel_error, coded[2].rel_error)
    with pytest.raises(ValueError, match="go with a calibration text"):
        compress_matrices(mats, CompressSettings(qp=30), fisher=fisher)
    with pytest.raises(ValueError, match="go with a calibration text"):
        compress_matrices(mats, s)

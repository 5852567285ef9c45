"""The whole file is the budget: --bpw counts every stored byte over the model's parameters; every
matrix is coded (embeddings, stacks of 3-D tensors); kept tensors are stored at 16 bits."""

import numpy as np
import pytest
import torch

import llmcodec
from llmcodec import artifact, budget, kept, stacks
from llmcodec.budget import whole_file
from llmcodec.cli import main


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """A tiny Llama large enough (1.3 M parameters) that the header is a small part of the file."""
    from conftest import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("wide") / "wide", hidden=192, layers=2, vocab_words=2000)


@pytest.mark.parametrize("bpw", [2.5, 4.0])
def test_whole_file_holds_the_budget(wide_llama, tmp_path, bpw):
    out = tmp_path / "w.llmc"
    art = llmcodec.compress_model(wide_llama, out, llmcodec.CompressSettings(bpw=bpw))
    whole = whole_file(out)
    params = whole["parameters"]
    assert params > 1_000_000
    # the bound: the file is at most 1.01 x B x parameters / 8 bytes plus config and tokenizer
    assert whole["file_bytes"] <= 1.01 * bpw * params / 8 + whole["files_bytes"]
    # and rate control uses the budget: not more than a few per cent below it
    assert whole["bits_per_parameter"] >= 0.95 * bpw
    # the embedding (tied to the head) is coded, norms are stored as fp16 and restored as float32
    assert "model.embed_tokens.weight" in art.coded and "lm_head.weight" not in art.coded
    norm = "model.layers.0.input_layernorm.weight"
    assert art.raw[norm].dtype == torch.float16 and art.source_dtypes[norm] == "float32"
    state = llmcodec.load_state_dict(out)
    assert state[norm].dtype == torch.float32
    # the bits per coded weight are what the budget leaves after kept tensors and the header
    st = art.stats()
    assert st["bits_per_weight"] * st["coded_weights"] < bpw * params - 8 * st["raw_bytes"]


def test_header_bound_is_an_upper_bound(wide_llama, tmp_path):
    for settings in (llmcodec.CompressSettings(qp=30), llmcodec.CompressSettings(qp=30, side="fp16", rotate=True,
                                                                                   weighting="none", group=64)):
        art = llmcodec.api.compress_source(llmcodec.modelio.load(wide_llama), settings)
        out = tmp_path / "h.llmc"
        llmcodec.save(art, out)
        actual = out.stat().st_size - sum(artifact.piece_bytes(out).values())
        coded = {n: c.shape for n, c in art.coded.items()}
        base = artifact.Artifact(codec=art.codec, settings=art.settings, raw=art.raw, aliases=art.aliases,
                                 config=art.config, files=art.files, order=art.order)
        bound = artifact.header_bound(base, coded, settings.group, llmcodec.__version__)
        assert actual <= bound - 8 * len(coded) < 2 * actual


def test_budget_below_the_kept_tensors_is_refused(wide_llama, tmp_path, capsys):
    out = tmp_path / "x.llmc"
    assert main(["compress", str(wide_llama), str(out), "--bpw", "0.05", "--quiet", "--keep-embeddings"]) == 2
    assert "tensors kept uncoded" in capsys.readouterr().err and not out.exists()


def test_old_budget_and_exact_kept_tensors(wide_llama, tmp_path):
    """--budget coded: bits per coded weight as before; --exact-kept and --keep-embeddings keep them exact."""
    out = tmp_path / "c.llmc"
    s = llmcodec.CompressSettings(bpw=3.0, budget="coded", exact_kept=True, include_embeddings=False)
    art = llmcodec.compress_model(wide_llama, out, s)
    assert 3.0 * 0.985 <= art.stats()["bits_per_weight"] <= 3.0
    assert "model.embed_tokens.weight" in art.raw and not art.source_dtypes
    src = llmcodec.modelio.load(wide_llama)
    state = llmcodec.load_state_dict(out)
    assert torch.equal(state["model.embed_tokens.weight"], src.get("model.embed_tokens.weight"))
    assert whole_file(out)["bits_per_parameter"] > 8  # the float32 embedding dominates


def test_stacks_split_and_join():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    parts = stacks.split(t)
    assert len(parts) == stacks.count(t.shape) == 6 and parts[4].shape == (4, 5)
    assert torch.equal(parts[4], t[1, 1]) and torch.equal(stacks.member(t, 4), t[1, 1])
    assert torch.equal(stacks.join(parts, t.shape), t)
    assert stacks.member_names("e", (3, 4, 5)) == ["e[0]", "e[1]", "e[2]"]
    with pytest.raises(ValueError, match="needs 6 matrices"):
        stacks.join(parts[:5], t.shape)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        stacks.count((7,))


def test_storage_dtypes():
    assert kept.storage_dtype(torch.ones(4)) == torch.float16
    assert kept.storage_dtype(torch.ones(4), exact=True) == torch.float32
    assert kept.storage_dtype(torch.full((4,), 1e6)) == torch.bfloat16  # beyond fp16's range
    assert kept.storage_dtype(torch.full((4,), 1e300, dtype=torch.float64)) == torch.float64
    assert kept.storage_dtype(torch.tensor([1.0, float("inf")])) == torch.float16  # fp16 holds inf
    assert kept.storage_dtype(torch.ones(4, dtype=torch.bfloat16)) == torch.bfloat16
    assert kept.storage_dtype(torch.arange(4)) == torch.int64
    assert kept.storage_dtype(torch.tensor([-7e4, 1.0])) == torch.bfloat16  # the peak is a negative value
    assert kept.storage_dtype(torch.tensor([float("nan"), -7e4])) == torch.bfloat16  # NaN aside
    assert kept.storage_dtype(torch.tensor([float("-inf"), 3.0, float("nan")])) == torch.float16


def _experts_state(rng):
    return {
        "model.embed_tokens.weight": torch.from_numpy((rng.standard_normal((256, 64)) * 0.02).astype(np.float32)),
        "model.layers.0.mlp.experts.gate_up_proj": torch.from_numpy(
            (rng.standard_normal((4, 128, 64)) * 0.02).astype(np.float32)).bfloat16(),
        "model.layers.0.mlp.experts.down_proj": torch.from_numpy(
            (rng.standard_normal((4, 64, 64)) * 0.02).astype(np.float32)).bfloat16(),
        "model.layers.0.mlp.gate.weight": torch.from_numpy((rng.standard_normal((4, 64)) * 0.02).astype(np.float32)),
        "model.layers.0.input_layernorm.weight": torch.ones(64) * 1.5,
        "conv.weight": torch.from_numpy((rng.standard_normal((2, 3, 32, 32)) * 0.1).astype(np.float32)),
    }


def test_fused_experts_are_coded_as_stacks_and_restored(tmp_path, capsys):
    state = _experts_state(np.random.default_rng(0))
    art = llmcodec.compress_state_dict(state, llmcodec.CompressSettings(qp=24))
    assert art.stacks == {"model.layers.0.mlp.experts.gate_up_proj": (4, 128, 64),
                          "model.layers.0.mlp.experts.down_proj": (4, 64, 64), "conv.weight": (2, 3, 32, 32)}
    assert "model.layers.0.mlp.experts.gate_up_proj[3]" in art.coded and "conv.weight[5]" in art.coded
    assert "model.layers.0.mlp.gate.weight" in art.raw  # 4 rows: below the smallest coded side
    out = tmp_path / "moe.llmc"
    llmcodec.save(art, out)
    back = llmcodec.load_state_dict(out)
    assert list(back) == list(state)
    for name, t in state.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        err = float((back[name].float() - t.float()).norm() / t.float().norm())
        assert err < 0.1, (name, err)
    # every expert restores to its own slot (a shuffled join would give an error near 1.4)
    e = state["model.layers.0.mlp.experts.gate_up_proj"].float()
    b = back["model.layers.0.mlp.experts.gate_up_proj"].float()
    assert all(float((b[i] - e[i]).norm() / e[i].norm()) < 0.1 for i in range(4))
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stack" in text and "experts" in text
    assert main(["verify", str(out)]) == 0


def test_tensor_kinds():
    k = budget.tensor_kind
    assert k("model.embed_tokens.weight", [10, 4]) == "embeddings/head" == k("lm_head.weight", [10, 4])
    assert k("model.layers.0.self_attn.q_proj.weight", [4, 4]) == "attention" == k("h.0.attn.c_attn.weight", [4, 4])
    assert k("model.layers.0.mlp.down_proj.weight", [4, 4]) == "MLP" == k("encoder.layer.1.output.dense.weight", [4, 4])
    assert k("model.layers.0.mlp.experts.gate_up_proj[1]", [4, 4]) == "experts"
    assert k("model.norm.weight", [4]) == "norms/biases" == k("h.0.attn.c_attn.bias", [12])
    assert k("score.weight", [2, 4]) == "other"


def test_a_budget_above_qp_13s_reach_is_met_with_finer_qps(wide_llama, tmp_path):
    """Every matrix at VVC's QP 13 gives this model about 5.6 bits per coded weight; --bpw 6 used to be
    refused. The coefficient-domain default goes below QP 13 for it, lands within the tolerance and
    restores with less error than the --bpw 5 file; at both the embedding keeps its QP offset."""
    errs = {}
    for bpw in (5.0, 6.0):
        out = tmp_path / f"b{bpw}.llmc"
        art = llmcodec.compress_model(wide_llama, out, llmcodec.CompressSettings(bpw=bpw))
        # 6 is above what QP 13 gives (5.6); it lands within 3% below (5 within the usual 5%)
        assert (1 - (0.03 if bpw == 6.0 else 0.05)) * bpw <= whole_file(out)["bits_per_parameter"] <= bpw
        errs[bpw] = float(np.mean([c.rel_error for c in art.coded.values()]))
        # the embedding's QP offset puts it under 13 at both (the others are at 13 or above at 5): it goes there
        assert art.coded["model.embed_tokens.weight"].qp < 13
        if bpw == 6.0:
            assert min(c.qp for c in art.coded.values()) < 13
            state = llmcodec.load_state_dict(out)
            src = llmcodec.modelio.load(wide_llama)
            w, w_hat = src.get("model.layers.1.mlp.up_proj.weight"), state["model.layers.1.mlp.up_proj.weight"]
            assert float((w - w_hat).norm() / w.norm()) == pytest.approx(
                art.coded["model.layers.1.mlp.up_proj.weight"].rel_error, rel=1e-3)
    assert errs[6.0] < 0.8 * errs[5.0]



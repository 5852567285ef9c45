"""The data-free rate-distortion options: column weighting, shared steps, equal-error QPs."""

import numpy as np
import pytest
import torch

import llmcodec
from llmcodec import sideinfo
from llmcodec.compress import CompressSettings
from llmcodec.importance import column_importance, column_scales
from llmcodec.priors import capped_steps, qp_offsets
from llmcodec.quant import affine_bits
from llmcodec.rate import allocate


def _llama_state(rng, hidden=64, inter=96, heads=4, kv=2):
    hd = hidden // heads
    p = "model.layers.0."
    return {
        p + "input_layernorm.weight": rng.uniform(0.1, 3.0, hidden),
        p + "post_attention_layernorm.weight": rng.uniform(0.1, 3.0, hidden),
        p + "self_attn.q_proj.weight": rng.standard_normal((hidden, hidden)),
        p + "self_attn.k_proj.weight": rng.standard_normal((kv * hd, hidden)),
        p + "self_attn.v_proj.weight": rng.standard_normal((kv * hd, hidden)) * rng.uniform(0.1, 2, (kv * hd, 1)),
        p + "self_attn.o_proj.weight": rng.standard_normal((hidden, hidden)),
        p + "mlp.gate_proj.weight": rng.standard_normal((inter, hidden)),
        p + "mlp.up_proj.weight": rng.standard_normal((inter, hidden)),
        p + "mlp.down_proj.weight": rng.standard_normal((hidden, inter)),
    }


def test_importance_rules_follow_the_llama_dataflow():
    rng = np.random.default_rng(0)
    st = _llama_state(rng)
    cfg = {"num_attention_heads": 4, "num_key_value_heads": 2}
    p = "model.layers.0."

    def imp(n):
        return column_importance(p + n, st.__getitem__, set(st), cfg)

    g_attn, g_mlp = st[p + "input_layernorm.weight"], st[p + "post_attention_layernorm.weight"]
    assert np.allclose(imp("self_attn.q_proj.weight"), g_attn**2)
    assert np.allclose(imp("mlp.up_proj.weight"), g_mlp**2)
    o = imp("self_attn.o_proj.weight")
    v_energy = ((st[p + "self_attn.v_proj.weight"] * g_attn) ** 2).sum(1)
    # query heads 0,1 read kv head 0; heads 2,3 read kv head 1 (16 channels each)
    assert np.allclose(o[:16], v_energy[:16]) and np.allclose(o[16:32], v_energy[:16])
    assert np.allclose(o[32:48], v_energy[16:])
    d = imp("mlp.down_proj.weight")
    assert d.shape == (96,) and np.all(d > 0)
    assert column_importance("model.embed_tokens.weight", st.__getitem__, set(st), cfg) is None


def test_column_scales_are_normalized_and_clipped():
    c = column_scales(np.array([1.0, 4.0, 16.0, 1e-12]), alpha=1.0, clip=16.0).astype(np.float64)
    assert c.dtype == np.float64 and c.max() <= 16 and c.min() >= 1 / 16
    assert c[1] / c[0] == pytest.approx(2.0, rel=1e-3)  # sqrt of the importance ratio
    assert column_scales(np.ones(5)).astype(float) == pytest.approx(np.ones(5))


def test_qp_offsets_equalize_absolute_error():
    assert qp_offsets([1.0, 2.0, 0.5, 1.0]) == [0, -6, 6, 0]


def test_capped_steps_only_touch_tensors_far_below_the_median():
    # median RMS 1.0; with cap 2 only the tensor below half of it gets a finer step, in proportion
    steps, rms = [1.0, 2.0, 1.0, 1.0, 1.0], [1.0, 1.2, 1.0, 0.6, 0.125]
    out = capped_steps(steps, rms, cap=2.0)
    np.testing.assert_allclose(out, [1.0, 2.0, 1.0, 1.0, 4.0])
    assert qp_offsets(out) == [0, -6, 0, 0, -12]  # the small tensor: 2 octaves finer than equal error
    # equalizing ``out`` leaves tensor i a weight step of steps[i] / out[i]: relative to its RMS, the
    # small tensor's is then cap times the median tensor's
    rel = np.asarray(steps) / np.asarray(out) / np.asarray(rms)
    assert rel[4] == pytest.approx(2.0 * rel[0])
    with pytest.raises(ValueError, match="relative error cap"):
        CompressSettings(error_cap=0)


def test_capped_error_gives_a_small_tensor_a_finer_qp():
    rng = np.random.default_rng(3)
    st = {f"m{i}.weight": torch.from_numpy(rng.standard_normal((64, 64)).astype(np.float32)) for i in range(3)}
    st["small.weight"] = st["m0.weight"] * 0.05
    qps, errs = {}, {}
    for alloc in ("equal-error", "capped-error"):
        art = llmcodec.compress_state_dict(st, CompressSettings(qp=30, allocation=alloc, weighting="none"))
        qps[alloc] = {n: c.qp for n, c in art.coded.items()}
        back = llmcodec.decompress_tensor(art.coded["small.weight"]).numpy()
        errs[alloc] = float(np.sqrt(np.mean((back - st["small.weight"].numpy()) ** 2)))
    assert qps["capped-error"]["small.weight"] <= qps["equal-error"]["small.weight"] - 12
    assert qps["capped-error"]["m1.weight"] == qps["equal-error"]["m1.weight"]
    assert errs["capped-error"] < 0.5 * errs["equal-error"]


def test_allocation_respects_offsets():
    numel = [1000] * 10

    def bpw(i, qp):
        return max(0.05, 8 - qp / 6)

    off = [(-6 if i % 2 else 0) for i in range(10)]
    a = allocate(numel, [0] * 10, 3.0, (0, 63), lambda jobs: [bpw(i, q) * 1000 for i, q in jobs],
                 lambda jobs: [bpw(i, q) for i, q in jobs], qp_offsets=off)
    assert 3.0 * 0.97 <= a.total_bits / 10_000 <= 3.0
    gaps = [a.qps[i] - a.qps[i + 1] for i in range(0, 10, 2)]
    assert all(5 <= g <= 7 for g in gaps)  # odd tensors stay about 6 QP finer


def test_weighted_shared_equal_error_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    st = {k: torch.from_numpy(v.astype(np.float32)) for k, v in _llama_state(rng, hidden=128, inter=192).items()}
    cfg = {"num_attention_heads": 4, "num_key_value_heads": 2}
    s = CompressSettings(bpw=4.0, weighting="data-free", shared_scale=True, allocation="equal-error",
                         profile="ai-faster-dq", budget="coded")
    art = llmcodec.compress_state_dict(st, s, config=cfg)
    assert all(c.col_scale is not None for c in art.coded.values())
    assert all(c.spec.shared_scale for c in art.coded.values())
    assert 4.0 * 0.97 <= art.stats()["bits_per_weight"] <= 4.0
    path = tmp_path / "w.llmc"
    llmcodec.save(art, path)
    back = llmcodec.load_state_dict(path)
    for n, c in art.coded.items():
        err = float((back[n] - st[n]).norm() / st[n].norm())
        assert err == pytest.approx(c.rel_error, rel=1e-3)  # the stored error is the true-domain error
        assert err < 0.3
    # weighting puts less error on columns that matter more (q_proj: columns with a large norm weight)
    name = "model.layers.0.self_attn.q_proj.weight"
    g = st["model.layers.0.input_layernorm.weight"].numpy()
    col_err = ((back[name] - st[name]) ** 2).mean(0).numpy()
    big, small = g > np.quantile(g, 0.75), g < np.quantile(g, 0.25)
    assert col_err[big].mean() < col_err[small].mean()


def test_compand_round_trip_and_error_grows_with_magnitude():
    from llmcodec.quant import compand, expand

    rng = np.random.default_rng(3)
    w = (rng.laplace(size=(50, 70)) * 0.02).astype(np.float32)
    for p in (1.0, 0.8, 0.5):
        np.testing.assert_allclose(expand(compand(w, p), p), w, rtol=1e-5, atol=1e-9)
    assert np.array_equal(np.sign(compand(w, 0.8)), np.sign(w))
    with pytest.raises(ValueError, match="companding exponent"):
        CompressSettings(compand=0.0)
    with pytest.raises(ValueError, match="do not combine"):
        CompressSettings(rotate=True, weighting="data-free")
    with pytest.raises(ValueError, match="weighting='none'"):
        CompressSettings(rotate=True)  # the default balance weighting is per column too


@pytest.mark.parametrize(
    "kw", [{"compand": 0.8, "rotate": False}, {"compand": 1.0, "rotate": True}, {"compand": 0.8, "rotate": True}]
)
def test_value_transforms_are_stored_and_undone(tmp_path, kw):
    rng = np.random.default_rng(4)
    st = {k: torch.from_numpy(v.astype(np.float32)) for k, v in _llama_state(rng, hidden=128, inter=192).items()}
    # the sample-domain profile, whose even transform-domain error companding reshapes
    plain = llmcodec.compress_state_dict(
        st, CompressSettings(qp=30, compand=1.0, profile="ai-faster-dq", weighting="none")
    )
    art = llmcodec.compress_state_dict(st, CompressSettings(qp=30, profile="ai-faster-dq", weighting="none", **kw))
    path = tmp_path / "t.llmc"
    llmcodec.save(art, path)
    back = llmcodec.load_state_dict(path)
    for n, c in art.coded.items():
        assert c.compand == (None if kw["compand"] == 1.0 else kw["compand"])
        assert (c.rotation is not None) == kw["rotate"]
        err = float((back[n] - st[n]).norm() / st[n].norm())
        assert err == pytest.approx(c.rel_error, rel=1e-3)  # stored error = error of the restored weights
        assert err < 2 * plain.coded[n].rel_error + 0.02  # undone: same order of error as without
    if kw["compand"] < 1:
        # companding trades error on large weights for error on small ones
        n = "model.layers.0.mlp.up_proj.weight"
        a = st[n].abs().numpy()
        small = a < np.quantile(a, 0.25)
        e_plain = np.abs(llmcodec.load_state_dict(_saved(plain, tmp_path))[n].numpy() - st[n].numpy())
        e_comp = np.abs(back[n].numpy() - st[n].numpy())
        assert e_comp[small].mean() < e_plain[small].mean()


def _saved(art, tmp_path):
    path = tmp_path / "plain.llmc"
    llmcodec.save(art, path)
    return path


def test_equal_relative_allocation_equalizes_relative_error():
    """Two matrices of the same shape but very different sample peaks: at one QP the coefficient
    domain's peak normalization gives the peaky one a coarser relative step; equal-relative offsets
    undo it. A constant 32x32 block of weights is one large sample after the inverse transform."""
    rng = np.random.default_rng(5)
    smooth = rng.standard_normal((128, 128)).astype(np.float32)
    spiky = rng.standard_normal((128, 128)).astype(np.float32)
    spiky[:32, :32] += 3.0  # raises the peak sample, hence the step at a fixed QP
    st = {"a.weight": torch.from_numpy(smooth), "b.weight": torch.from_numpy(spiky)}
    errs = {}
    for alloc in ("equal-qp", "equal-relative"):
        art = llmcodec.compress_state_dict(st, CompressSettings(qp=32, allocation=alloc))
        errs[alloc] = art.coded
    qp = {k: {n: c.qp for n, c in v.items()} for k, v in errs.items()}
    assert qp["equal-qp"]["a.weight"] == qp["equal-qp"]["b.weight"]
    assert qp["equal-relative"]["b.weight"] < qp["equal-relative"]["a.weight"]  # finer QP for the spiky one

    def rel_bulk(coded):  # error on the ordinary weights, relative to their RMS
        back = llmcodec.decompress_tensor(coded["b.weight"]).numpy()
        return float(np.sqrt(np.mean((back - spiky)[32:] ** 2)))

    assert rel_bulk(errs["equal-relative"]) < 0.8 * rel_bulk(errs["equal-qp"])


def test_group_rms():
    from llmcodec.quant import group_rms

    w = np.array([[1.0, 3.0, 5.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_allclose(group_rms(w, None)[:, 0], [np.sqrt(2.75), 1.0], rtol=1e-3)
    np.testing.assert_allclose(group_rms(w, 2), [[1.0, 1.0], [1.0, 1.0]], rtol=1e-3)


def test_balance_weighting_codes_small_columns_finer():
    """weighting="balance": columns with small weights (which meet large inputs in a trained layer)
    get multipliers above 1, so their restored error shrinks with them."""
    from llmcodec.importance import balance_importance

    rng = np.random.default_rng(9)
    w = rng.standard_normal((128, 160)).astype(np.float32)
    w[:, :8] *= 0.05  # eight columns of small weights
    imp = balance_importance(w)
    assert imp[:8].min() > 100 * np.median(imp[8:])
    st = {"layer.weight": torch.from_numpy(w)}
    plain = llmcodec.compress_state_dict(st, CompressSettings(qp=34, weighting="none"))
    bal = llmcodec.compress_state_dict(st, CompressSettings(qp=34, weighting="balance"))
    c = bal.coded["layer.weight"].col_scale.astype(np.float64)
    assert c[:8].min() > 4 * np.median(c[8:])

    def small_col_err(art):
        back = llmcodec.decompress_tensor(art.coded["layer.weight"]).numpy()
        return float(np.sqrt(np.mean((back - w)[:, :8] ** 2)))

    assert small_col_err(bal) < 0.5 * small_col_err(plain)
    # the multipliers are side information: packed log codes and the code offset
    def side(art):
        ct = art.coded["layer.weight"]
        return ct.side_bits - (0 if ct.recon is None else ct.recon.bits)

    ct = bal.coded["layer.weight"]
    assert plain.coded["layer.weight"].col_scale is None and ct.col_scale.size == 160
    assert side(bal) == affine_bits(ct.scale, ct.offset, ct.spec) + sideinfo.bits(ct.col_scale)
    assert 16 < sideinfo.bits(ct.col_scale) <= 8 * 160 + 2 * 8 + 16


def test_default_vvc_profile_follows_the_budget():
    from llmcodec.codecs import get_codec

    vvc = get_codec("vvc")
    for bpw in (2.0, 2.5, 3.5, 4.0, None):  # None: a fixed QP
        p = vvc.profile_for(None, bpw)
        assert p.name == "default" and p.preset == "faster" and ("DepQuant", "1") not in p.options
        assert p.coef_block == 32 and p.coef_cols == 16  # half-filled blocks
    for bpw in (4.5, 6.0):
        hi = vvc.profile_for(None, bpw)
        assert hi.name == "default-dq" and ("DepQuant", "1") in hi.options and hi.coef_block == 32
        assert hi.coef_cols is None
    assert vvc.profile_for("ai-faster-coef", 5.0).name == "ai-faster-coef"  # a profile asked for is kept
    # a default profile is a named copy: asking for its original codes the same, at its budget only
    half = "ai-faster-coef-half"
    for bpw in (2.5, 4.0):
        assert CompressSettings(bpw=bpw).same_encoding(CompressSettings(bpw=bpw, profile=half, workers=1))
    assert not CompressSettings(bpw=5.0).same_encoding(CompressSettings(bpw=5.0, profile=half))
    assert CompressSettings(bpw=5.0).same_encoding(CompressSettings(bpw=5.0, profile="ai-medium-coef-dq-lean"))
    assert not CompressSettings(bpw=2.5).same_encoding(CompressSettings(bpw=2.5, profile=half, group=64))
    w = np.random.default_rng(0).standard_normal((96, 128)).astype(np.float32) * 0.02
    for bpw, name in ((3.5, "default"), (5.0, "default-dq")):
        art = llmcodec.compress_state_dict({"m.w": torch.from_numpy(w)}, CompressSettings(bpw=bpw, budget="coded"))
        assert art.codec["profile"]["name"] == name
        back = llmcodec.api.restore_state_dict(art)["m.w"].numpy()
        assert np.linalg.norm(back - w) / np.linalg.norm(w) < 0.2


def test_objectives_name_their_settings_and_explicit_ones_win():
    from llmcodec.compress import OBJECTIVES

    assert CompressSettings.for_objective("model", bpw=3.0) == CompressSettings(bpw=3.0)
    w = CompressSettings.for_objective("weights", bpw=3.0)
    assert (w.allocation, w.shared_scale, w.alpha, w.profile) == ("equal-error", True, 0.3, "ai-medium-coef-dq-half")
    assert w.weighting == "balance" and w.edge_layers == 0
    assert set(OBJECTIVES["weights"]) == {"allocation", "shared_scale", "alpha", "edge_layers", "kv_sharing"}
    assert CompressSettings.for_objective("weights", alpha=0.5).alpha == 0.5
    assert CompressSettings.for_objective("weights", codec="x265").profile is None  # its profile is VVC's
    assert CompressSettings.for_objective("weights", codec="vvc", profile="ai-faster-dq").profile == "ai-faster-dq"
    with pytest.raises(ValueError, match="unknown objective 'mse'; choose one of model, weights"):
        CompressSettings.for_objective("mse")


def test_cli_objective_fills_only_the_options_left_unset():
    from llmcodec.cli import build_parser, settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args(["compress", "m", "o.llmc", *argv]))

    assert settings() == CompressSettings(bpw=2.5)
    assert settings("--objective", "weights", "--bpw", "3") == CompressSettings.for_objective("weights", bpw=3.0)
    s = settings("--objective", "weights", "--alpha", "0.5", "--no-shared-scale", "--profile", "ai-faster-coef")
    assert (s.alpha, s.shared_scale, s.allocation, s.profile) == (0.5, False, "equal-error", "ai-faster-coef")
    assert settings("--alpha", "0.5").allocation == "equal-qp"


def test_weights_objective_has_less_weight_error_at_the_same_budget():
    """Matrices whose rows and tensors differ in scale: the model objective gives every row the
    same relative error, the weights objective one absolute step (least squared error at a rate)."""
    rng = np.random.default_rng(11)
    st = {}
    for i, scale in enumerate((0.3, 1.0, 3.0)):
        rows = np.exp(rng.uniform(-1.5, 1.5, (64, 1)))  # row RMS over a 20x range
        st[f"m{i}.weight"] = torch.from_numpy((scale * rows * rng.standard_normal((64, 128))).astype(np.float32))
    err, bpw = {}, {}
    for objective in ("model", "weights"):
        art = llmcodec.compress_state_dict(st, CompressSettings.for_objective(objective, bpw=3.0, budget="coded"))
        bpw[objective] = art.stats()["bits_per_weight"]
        back = {n: llmcodec.decompress_tensor(c) for n, c in art.coded.items()}
        err[objective] = float(np.sqrt(sum(float(((back[n] - st[n]) ** 2).sum()) for n in st)
                                       / sum(float((st[n] ** 2).sum()) for n in st)))
    assert all(3.0 * 0.97 <= b <= 3.0 for b in bpw.values())
    assert err["weights"] < 0.85 * err["model"]


def test_edge_offsets_code_the_ends_of_the_stack_finer():
    from llmcodec.priors import edge_offsets, layer_index

    names = ("model.layers.12.mlp.up_proj.weight", "encoder.layer.0.attention.self.query.weight",
             "transformer.h.3.attn.c_attn.weight", "lm_head.weight", "players.1.weight")
    assert [layer_index(n) for n in names] == [12, 0, 3, None, None]
    names = [f"model.layers.{i}.self_attn.{k}_proj.weight" for i in range(6) for k in "qv"] + ["x.weight"]
    off = edge_offsets(names, layers=1, octaves=0.5)
    assert off == [-3, -3] + [0] * 8 + [-3, -3] + [0]  # half an octave: 3 QP at 6 QP per doubling of the step
    assert edge_offsets(names, layers=2, octaves=1.0)[:6] == [-6, -6, -6, -6, 0, 0]
    assert edge_offsets(names, layers=0, octaves=0.5) == [0] * len(names)
    assert edge_offsets(["a.weight", "b.weight"], layers=1, octaves=0.5) == [0, 0]  # no stack: nothing to do
    with pytest.raises(ValueError, match="edge layers and octaves"):
        CompressSettings(edge_layers=-1)
    # the default: one octave below 3.25 bits per weight, none from there or without a budget
    assert [CompressSettings(bpw=b).resolved_edge_octaves() for b in (2.0, 3.0, 3.25, 4.0)] == [1.0, 1.0, 0.0, 0.0]
    assert CompressSettings(qp=30).resolved_edge_octaves() == 0.0
    assert CompressSettings(bpw=4.0, edge_octaves=0.5).resolved_edge_octaves() == 0.5


def test_edge_layers_get_a_finer_qp_and_less_error():
    rng = np.random.default_rng(4)
    st = {f"model.layers.{i}.mlp.up_proj.weight": torch.from_numpy(rng.standard_normal((64, 64)).astype(np.float32))
          for i in range(4)}
    art = llmcodec.compress_state_dict(st, CompressSettings(qp=32, weighting="none", edge_octaves=1.0))
    qp = [art.coded[f"model.layers.{i}.mlp.up_proj.weight"].qp for i in range(4)]
    err = [art.coded[f"model.layers.{i}.mlp.up_proj.weight"].rel_error for i in range(4)]
    assert qp == [26, 32, 32, 26]  # one octave finer: 6 QP
    assert max(err[0], err[3]) < 0.85 * min(err[1], err[2])
    off = llmcodec.compress_state_dict(st, CompressSettings(qp=32, weighting="none"))  # off with a fixed QP
    assert {c.qp for c in off.coded.values()} == {32}


def test_kv_offsets_follow_the_grouped_query_sharing():
    from llmcodec.priors import kv_offsets

    pre = "model.layers.0.self_attn."
    names = [pre + k + "_proj.weight" for k in "qkvo"] + ["model.layers.0.mlp.up_proj.weight"]
    gqa = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576)]  # SmolLM2: 9 heads, 3 kv heads
    assert kv_offsets(names, gqa, 1.0) == [0, -5, -5, 0, 0]  # 6 * log2(3) / 2 = 4.75
    assert kv_offsets(names, gqa, 0.5) == [0, -2, -2, 0, 0]
    assert kv_offsets(names, gqa, 0.0) == [0] * 5
    mha = [(576, 576)] * 4 + [(1536, 576)]
    assert kv_offsets(names, mha, 1.0) == [0] * 5  # no sharing, nothing to do
    # without q_proj the heads' width comes from o_proj's columns; with neither, nothing
    assert kv_offsets(names[1:], gqa[1:], 1.0) == [-5, -5, 0, 0]
    assert kv_offsets(names[1:3], gqa[1:3], 1.0) == [0, 0]
    bert = ["encoder.layer.0.attention.self.key.weight", "encoder.layer.0.attention.self.query.weight"]
    assert kv_offsets(bert, [(384, 384), (384, 384)], 1.0) == [0, 0]
    with pytest.raises(ValueError, match="sharing strength"):
        CompressSettings(kv_sharing=-1.0)
    assert [CompressSettings(bpw=b).resolved_kv_sharing() for b in (2.0, 3.0, 3.25, 4.0)] == [1.0, 1.0, 0.0, 0.0]
    assert CompressSettings(bpw=4.0, kv_sharing=1.0).resolved_kv_sharing() == 1.0
    assert CompressSettings(qp=30).resolved_kv_sharing() == 0.0
    assert CompressSettings(bpw=3.0, calibration="ptb-train").resolved_kv_sharing() == 0.0
    assert CompressSettings(qp=30, kv_sharing=0.5).resolved_kv_sharing() == 0.5
    assert CompressSettings.for_objective("weights").resolved_kv_sharing() == 0.0


def test_kv_sharing_gives_shared_heads_a_finer_qp_and_less_error():
    rng = np.random.default_rng(5)
    pre = "model.layers.0.self_attn."
    shapes = {"q": (64, 64), "k": (16, 64), "v": (16, 64), "o": (64, 64)}  # 4 query heads per kv head
    st = {f"{pre}{k}_proj.weight": torch.from_numpy(rng.standard_normal(s).astype(np.float32))
          for k, s in shapes.items()}
    art = llmcodec.compress_state_dict(st, CompressSettings(qp=32, weighting="none", kv_sharing=1.0))
    qp = {k: art.coded[f"{pre}{k}_proj.weight"].qp for k in shapes}
    err = {k: art.coded[f"{pre}{k}_proj.weight"].rel_error for k in shapes}
    assert qp == {"q": 32, "k": 26, "v": 26, "o": 32}  # step 4^-1/2: one octave
    assert max(err["k"], err["v"]) < 0.85 * min(err["q"], err["o"])
    off = llmcodec.compress_state_dict(st, CompressSettings(qp=32, weighting="none"))  # off with a fixed QP
    assert {c.qp for c in off.coded.values()} == {32}


def test_head_importance_reads_the_final_norm_for_heads_and_tied_embeddings_only():
    from llmcodec.importance import head_importance

    g = np.array([0.5, 2.0, 1.0, 3.0])
    mats = {"model.embed_tokens.weight": np.ones((10, 4)), "lm_head.weight": np.ones((10, 4)),
            "model.norm.weight": g, "model.layers.0.input_layernorm.weight": np.ones(4)}
    get = mats.__getitem__
    untied = set(mats)
    assert np.allclose(head_importance("lm_head.weight", 4, get, untied, {}), g ** 2)
    assert head_importance("model.embed_tokens.weight", 4, get, untied, {}) is None
    tied = {"lm_head.weight": "model.embed_tokens.weight"}
    assert np.allclose(head_importance("model.embed_tokens.weight", 4, get, untied, {}, tied), g ** 2)
    alone = untied - {"lm_head.weight"}  # a folder of a tied model holds the embedding only
    assert np.allclose(head_importance("model.embed_tokens.weight", 4, get, alone, {}), g ** 2)
    assert np.allclose(head_importance("model.embed_tokens.weight", 4, get, alone, {"model_type": "gemma3_text"}),
                       (1 + g) ** 2)
    assert head_importance("model.embed_tokens.weight", 4, get, alone - {"model.norm.weight"}, {}) is None

"""KV cache: save a prompt's cache coded, load it into a DynamicCache, score a continuation."""

from __future__ import annotations

import math

import pytest
import torch

import llmcodec
from llmcodec import cli
from llmcodec.artifact import ArtifactError
from llmcodec.kv import (
    KVOptions,
    build_cache,
    compress_kv,
    continuation_nll,
    layer_tensors,
    load_kv,
    prefill,
)
from llmcodec.tensors import tensor_settings


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 128, (n,), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def test_exact_cache_scores_like_the_full_sequence(model):
    prompt, cont = _ids(80), _ids(20, 1)
    kv = layer_tensors(prefill(model, prompt[:-1]))
    assert len(kv) == 2 and kv[0][0].shape == (1, 2, 79, 32)
    nll, n = continuation_nll(model, build_cache(model, kv), int(prompt[-1]), cont)
    full = torch.cat([prompt, cont])[None]
    logits = model(input_ids=full).logits[0, len(prompt) - 1 : -1]
    ref = torch.nn.functional.cross_entropy(logits, cont, reduction="sum")
    assert n == 20 and nll == pytest.approx(float(ref), rel=1e-4)


@pytest.mark.parametrize("layout", [KVOptions(), KVOptions("tokens", "channels")])
def test_coded_cache_round_trip(model, tmp_path, layout):
    prompt, cont = _ids(300), _ids(24, 1)
    kv = layer_tensors(prefill(model, prompt[:-1]))
    art = compress_kv(kv, int(prompt[-1]), tensor_settings(bpw=4.0), layout)
    path = tmp_path / "kv.llmc"
    llmcodec.save(art, path)
    elements = sum(k.numel() + v.numel() for k, v in kv)
    assert 4.0 * 0.985 <= 8 * path.stat().st_size / elements <= 4.0
    loaded = load_kv(path, model)
    assert loaded.prompt_tokens == 300 and loaded.last_token == int(prompt[-1])
    for (k, v), layer in zip(kv, loaded.cache.layers, strict=True):
        assert layer.keys.shape == k.shape and layer.values.shape == v.shape
        assert float((layer.keys - k).norm() / k.norm()) < 0.25
        assert float((layer.values - v).norm() / v.norm()) < 0.25
    exact, n = continuation_nll(model, build_cache(model, kv), loaded.last_token, cont)
    coded, _ = continuation_nll(model, loaded.cache, loaded.last_token, cont)
    assert abs(math.exp(coded / n) / math.exp(exact / n) - 1) < 0.05


def test_wrong_model_and_wrong_artifact(model, tmp_path, tiny_llama):
    from transformers import LlamaConfig, LlamaForCausalLM

    kv = layer_tensors(prefill(model, _ids(40)))
    path = tmp_path / "kv.llmc"
    llmcodec.save(compress_kv(kv, 3, tensor_settings(qp=30)), path)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match="another model"):
        load_kv(path, other)
    t = tmp_path / "t.llmc"
    llmcodec.save(llmcodec.tensors.compress_tensors({"w": torch.randn(32, 32)}, tensor_settings(qp=30)), t)
    with pytest.raises(ArtifactError, match="not a KV cache artifact"):
        load_kv(t, model)


def test_cli_kv_save_eval(tiny_llama, tmp_path, capsys):
    import treebank

    words = treebank.penn["test"].split()
    prompt, cont = tmp_path / "prompt.txt", tmp_path / "cont.txt"
    prompt.write_text(" ".join(words[:480]))  # the tiny model has 512 positions
    cont.write_text(" ".join(words[480:510]))
    out = tmp_path / "kv.llmc"
    assert cli.main(["kv", "save", str(tiny_llama), str(prompt), str(out), "--bpw", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "bits per element over the whole file" in text
    assert cli.main(["kv", "eval", str(tiny_llama), str(out), str(cont), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "continuation perplexity" in text and "30 tokens scored" in text
    assert cli.main(["kv", "eval", str(tiny_llama), str(tmp_path / "none.llmc"), str(cont), "--quiet"]) == 2


def test_sink_tokens_kept_in_16_bits(model, tmp_path):
    prompt = _ids(300)
    kv = layer_tensors(prefill(model, prompt[:-1]))
    elements = sum(k.numel() + v.numel() for k, v in kv)
    path = tmp_path / "kv.llmc"
    llmcodec.save(compress_kv(kv, int(prompt[-1]), tensor_settings(bpw=3.0), KVOptions(sinks=4)), path)
    assert 3.0 * 0.985 <= 8 * path.stat().st_size / elements <= 3.0  # the sinks are counted in the budget
    loaded = load_kv(path, model)
    for (k, v), layer in zip(kv, loaded.cache.layers, strict=True):
        assert layer.keys.shape == k.shape and layer.values.shape == v.shape
        for got, ref in ((layer.keys, k), (layer.values, v)):
            sink, rest = got[:, :, :4] - ref[:, :, :4], got[:, :, 4:] - ref[:, :, 4:]
            assert float(sink.abs().max()) <= 1e-3 * float(ref[:, :, :4].abs().max())  # fp16, not coded
            assert 0 < float(rest.norm() / ref[:, :, 4:].norm()) < 0.5
    # a cache no longer than the sinks is stored whole in 16 bits
    short = [(k[:, :, :3], v[:, :, :3]) for k, v in kv]
    llmcodec.save(compress_kv(short, 5, tensor_settings(bpw=3.0), KVOptions(sinks=4)), path)
    for (k, _), layer in zip(short, load_kv(path, model).cache.layers, strict=True):
        assert torch.allclose(layer.keys, k, atol=1e-3 * float(k.abs().max()))
    with pytest.raises(ValueError, match="sink tokens"):
        KVOptions(sinks=-1)
    assert KVOptions().sinks > 0  # kv save keeps sinks by default (--sinks 0 turns it off)


def test_key_bits_shift_the_budget_from_values_to_keys(model, tmp_path):
    prompt = _ids(300)
    kv = layer_tensors(prefill(model, prompt[:-1]))
    elements = sum(k.numel() + v.numel() for k, v in kv)
    errors = []
    for key_bits in (0.0, 1.0):
        path = tmp_path / f"kv{key_bits}.llmc"
        llmcodec.save(compress_kv(kv, int(prompt[-1]), tensor_settings(bpw=3.0), KVOptions(key_bits=key_bits)), path)
        assert 3.0 * 0.97 <= 8 * path.stat().st_size / elements <= 3.0
        layers = load_kv(path, model).cache.layers
        pairs = [((lay.keys, lay.values), ref) for lay, ref in zip(layers, kv, strict=True)]
        errors.append([math.sqrt(sum(float((got[j] - ref[j]).pow(2).sum()) for got, ref in pairs)
                                 / sum(float(ref[j].pow(2).sum()) for ref in kv)) for j in (0, 1)])
    (k0, v0), (k1, v1) = errors
    assert k1 < 0.8 * k0 and v1 > 1.2 * v0
    with pytest.raises(ValueError, match="key_bits"):
        KVOptions(key_bits=float("nan"))


def test_recent_tokens_kept_in_16_bits(model, tmp_path):
    prompt = _ids(300)
    kv = layer_tensors(prefill(model, prompt[:-1]))
    elements = sum(k.numel() + v.numel() for k, v in kv)
    path = tmp_path / "kv.llmc"
    opts = KVOptions(sinks=2, recent=8)
    llmcodec.save(compress_kv(kv, int(prompt[-1]), tensor_settings(bpw=4.0), opts), path)
    assert 4.0 * 0.985 <= 8 * path.stat().st_size / elements <= 4.0  # the recent tokens are counted
    for (k, v), layer in zip(kv, load_kv(path, model).cache.layers, strict=True):
        assert layer.keys.shape == k.shape and layer.values.shape == v.shape
        for got, ref in ((layer.keys, k), (layer.values, v)):
            for kept in (slice(0, 2), slice(-8, None)):  # sinks and recent tokens: fp16, not coded
                assert float((got[:, :, kept] - ref[:, :, kept]).abs().max()) <= 1e-3 * float(ref.abs().max())
            mid = ref[:, :, 2:-8]
            assert 0 < float((got[:, :, 2:-8] - mid).norm() / mid.norm()) < 0.4  # coded, in its place
    # sinks and recent tokens covering the whole cache: nothing coded, everything in 16 bits
    short = [(k[:, :, :9], v[:, :, :9]) for k, v in kv]
    llmcodec.save(compress_kv(short, 5, tensor_settings(bpw=30.0), opts), path)
    for (k, _), layer in zip(short, load_kv(path, model).cache.layers, strict=True):
        assert torch.allclose(layer.keys, k, atol=1e-3 * float(k.abs().max()))
    with pytest.raises(ValueError, match="recent tokens"):
        KVOptions(recent=-1)


def test_layer_bits_move_the_budget_to_a_layer(model, tmp_path):
    prompt = _ids(300)
    kv = layer_tensors(prefill(model, prompt[:-1]))
    elements = sum(k.numel() + v.numel() for k, v in kv)
    errors = []
    for opts in (KVOptions(), KVOptions(layer_bits=((0, 1.0),))):
        path = tmp_path / "kv.llmc"
        llmcodec.save(compress_kv(kv, int(prompt[-1]), tensor_settings(bpw=3.0), opts), path)
        assert 3.0 * 0.97 <= 8 * path.stat().st_size / elements <= 3.0
        layers = load_kv(path, model).cache.layers
        # each layer's keys and values together: rate control may split a layer's bits between them
        errors.append([float(torch.sqrt(((lay.keys - k).norm() ** 2 + (lay.values - v).norm() ** 2)
                                        / (k.norm() ** 2 + v.norm() ** 2)))
                       for lay, (k, v) in zip(layers, kv, strict=True)])
    (a0, a1), (b0, b1) = errors
    assert b0 < 0.8 * a0 and b1 > 1.2 * a1, errors
    for bad in (((0, 1.0), (0, 2.0)), ((-1, 1.0),), ((0, float("inf")),)):
        with pytest.raises(ValueError, match="layer_bits"):
            KVOptions(layer_bits=bad)


def test_cli_layer_bits_errors(capsys):
    for bad in ("0", "x:1", "0:1,0:2", "-1:1", "0:nan"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["kv", "save", "m", "p", "o", "--layer-bits", bad])
        assert "--layer-bits" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["kv", "save", "m", "p", "o", "--layer-bits", "0:1, 3:-0.5", "--recent", "8"])
    assert args.layer_bits == ((0, 1.0), (3, -0.5)) and args.recent == 8

"""A config that ties the output head to the token embedding, in a folder that writes the head out
as a tensor of its own: stored once when the two hold the same bits, as two tensors (as transformers
loads them) when they differ; either way the artifact restores."""

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

import llmcodec
from llmcodec.budget import whole_file
from llmcodec.modelcheck import ConfigMismatch, check_config, config_ties

HEAD, EMBED = "lm_head.weight", "model.embed_tokens.weight"


def _head_written_out(folder, shift: float = 0.0):
    """The tiny Llama (tie_word_embeddings true) with lm_head.weight stored beside the embedding."""
    from conftest import make_tiny_llama

    make_tiny_llama(folder)
    state = load_file(str(folder / "model.safetensors"))
    assert HEAD not in state  # transformers writes a tied head once
    state[HEAD] = state[EMBED].clone() + shift
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_config_ties_and_a_stored_tied_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    assert config_ties(cfg.to_dict()) == {HEAD: EMBED}
    assert config_ties({**cfg.to_dict(), "tie_word_embeddings": False}) == {}
    shapes = {n: (tuple(t.shape), t.dtype) for n, t in LlamaForCausalLM(cfg).state_dict().items()}
    check_config(shapes, cfg.to_dict())  # the head stored too: transformers loads it (untied if it differs)
    check_config({n: s for n, s in shapes.items() if n != HEAD}, cfg.to_dict())  # the head left to the tie
    with pytest.raises(ConfigMismatch, match="parameters"):
        check_config({**shapes, "extra.weight": ((3, 4), torch.float32)}, cfg.to_dict())


def test_tied_head_stored_with_the_same_bits_is_stored_once(tmp_path):
    folder = _head_written_out(tmp_path / "tied")
    src = llmcodec.modelio.load(folder)
    assert src.tied() == {HEAD: EMBED}
    out = tmp_path / "t.llmc"
    art = llmcodec.compress_model(folder, out, llmcodec.CompressSettings(bpw=4.0))
    assert art.aliases == {HEAD: EMBED} and HEAD not in art.coded and EMBED in art.coded
    # the whole-file budget counts the head once: the parameters are the config's model's
    whole = whole_file(out)
    model, _ = llmcodec.api.load_source_model(folder)
    assert whole["parameters"] == sum(p.numel() for p in model.parameters())
    assert whole["file_bytes"] <= 1.01 * 4.0 * whole["parameters"] / 8 + whole["files_bytes"]
    # decompress writes the source's layout, the head as the decoded embedding; transformers ties them
    restored = llmcodec.decompress(out, tmp_path / "out")
    state = load_file(str(restored / "model.safetensors"))
    assert torch.equal(state[HEAD], state[EMBED])
    source = load_file(str(folder / "model.safetensors"))
    assert _rel(state[EMBED], source[EMBED]) == pytest.approx(art.coded[EMBED].rel_error, rel=1e-3)
    back, _ = llmcodec.load_model(out)
    assert back.lm_head.weight is back.model.embed_tokens.weight
    assert torch.equal(back.lm_head.weight, state[EMBED])


def test_tied_head_stored_with_other_values_stays_its_own_tensor(tmp_path, caplog):
    folder = _head_written_out(tmp_path / "untied", shift=0.01)
    with caplog.at_level(logging.WARNING, logger="llmcodec"):
        src = llmcodec.modelio.load(folder)
    assert src.tied() == {}
    assert any(HEAD in r.getMessage() and EMBED in r.getMessage() and "untied" in r.getMessage()
               for r in caplog.records)
    out = tmp_path / "u.llmc"
    art = llmcodec.compress_model(folder, out, llmcodec.CompressSettings(qp=20))
    assert not art.aliases and HEAD in art.coded and EMBED in art.coded
    # transformers loads the source untied despite the config, and the restored model too
    want, _ = llmcodec.api.load_source_model(folder)
    assert want.lm_head.weight is not want.model.embed_tokens.weight
    for back in (llmcodec.load_model(out)[0],
                 llmcodec.api.load_source_model(llmcodec.decompress(out, tmp_path / "out"))[0]):
        assert back.lm_head.weight is not back.model.embed_tokens.weight
        with torch.no_grad():
            assert _rel(back.lm_head.weight, want.lm_head.weight) == pytest.approx(art.coded[HEAD].rel_error, rel=1e-3)
            assert _rel(back.model.embed_tokens.weight, want.model.embed_tokens.weight) == pytest.approx(
                art.coded[EMBED].rel_error, rel=1e-3)

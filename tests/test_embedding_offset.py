"""The default QP offset of token embeddings and heads follows whether they get per-token steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_tokenrows import bpe_tokenizer

import llmcodec
from llmcodec.settings import EMBEDDING_OFFSET, EMBEDDING_OFFSET_FLAT, CompressSettings


def test_offset_is_the_row_steps_one_only_where_they_apply():
    assert CompressSettings(codec="vvc", bpw=2.5).resolved_embedding_offset() == EMBEDDING_OFFSET
    assert CompressSettings(codec="x265", bpw=2.5).resolved_embedding_offset() == EMBEDDING_OFFSET
    # sample-domain default profiles and token_rows 0 code every row at the offset's step
    assert CompressSettings(codec="x264", bpw=2.5).resolved_embedding_offset() == EMBEDDING_OFFSET_FLAT
    assert CompressSettings(codec="vvc", bpw=2.5, token_rows=0).resolved_embedding_offset() == EMBEDDING_OFFSET_FLAT
    assert CompressSettings(codec="vvc", bpw=2.5).resolved_embedding_offset(row_steps=False) == EMBEDDING_OFFSET_FLAT
    # scaled to the codec's QP steps per octave; an explicit offset and a fixed QP stay as they are
    svt = llmcodec.codecs.registry.get_codec("svtav1")
    assert CompressSettings(codec="svtav1", bpw=2.5).resolved_embedding_offset() == round(
        EMBEDDING_OFFSET_FLAT * svt.qp_per_octave / 6)
    assert CompressSettings(codec="x264", bpw=2.5, embedding_offset=-16).resolved_embedding_offset() == -16
    assert CompressSettings(codec="vvc", qp=30).resolved_embedding_offset() == 0
    assert EMBEDDING_OFFSET < EMBEDDING_OFFSET_FLAT < 0


@pytest.mark.parametrize(("codec", "tokenizer", "steps"),
                         [("vvc", True, True), ("vvc", False, False), ("x264", True, False)])
def test_compress_places_the_embedding_by_the_steps_it_got(embedding_offset_calls, codec, tokenizer, steps):
    rng = np.random.default_rng(0)
    state = {"model.embed_tokens.weight": torch.from_numpy((rng.standard_normal((256, 32)) * 0.02).astype(np.float32))}
    files = {"tokenizer.json": bpe_tokenizer(256)} if tokenizer else {}
    llmcodec.compress_state_dict(state, CompressSettings(codec=codec, qp=30), config=None, files=files)
    assert embedding_offset_calls == [steps]

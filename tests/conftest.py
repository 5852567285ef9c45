"""Shared fixtures: a tiny Llama model folder with a real (word-level) tokenizer, built offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def make_tiny_llama(
    folder: Path,
    hidden: int = 64,
    layers: int = 2,
    vocab_words: int = 500,
    dtype: torch.dtype = torch.float32,
    tie: bool = True,
    shard: bool = False,
) -> Path:
    import treebank
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = {}
    for w in treebank.penn["train"][:200_000].split():
        words[w] = words.get(w, 0) + 1
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w, _ in sorted(words.items(), key=lambda x: -x[1])[:vocab_words]:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), max_shard_size="200KB" if shard else "5GB")
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llama_sharded_bf16(tmp_path_factory) -> Path:
    folder = make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-bf16", dtype=torch.bfloat16, shard=True)
    assert (folder / "model.safetensors.index.json").is_file(), json.dumps(sorted(p.name for p in folder.iterdir()))
    return folder


@pytest.fixture
def fresh_ffmpeg_cache():
    """Forget the FFmpeg executable and its capabilities after a test that swaps in a fake one."""
    from llmcodec.codecs import base

    yield
    base.ffmpeg_exe.cache_clear()
    base.ffmpeg_capabilities.cache_clear()


@pytest.fixture
def embedding_offset_calls(monkeypatch) -> list:
    """The ``row_steps`` argument of each ``CompressSettings.resolved_embedding_offset`` call of the
    test (whether compression gave the embedding per-token steps)."""
    from llmcodec.settings import CompressSettings

    seen: list = []
    original = CompressSettings.resolved_embedding_offset

    def spy(self, row_steps=None):
        seen.append(row_steps)
        return original(self, row_steps)

    monkeypatch.setattr(CompressSettings, "resolved_embedding_offset", spy)
    return seen

"""Does a config fit a set of weights? Checked on the meta device: nothing is allocated.

The restore builds a model from the config and loads the weights into it (``modelbuild.build_model``);
running that same code on meta tensors finds a config that does not fit the weights (missing or
extra weights, other shapes, fields transformers refuses) before anything is decoded.
"""

from __future__ import annotations

import math

import torch

from . import limits
from .modelbuild import ModelError, make_config, model_class


class ConfigMismatch(ValueError):
    """The config cannot hold these weights; the message says where."""


def _meta_model(config: dict):
    """The config's model on the meta device (nothing allocated), or ConfigMismatch."""
    try:
        cfg = make_config(config)
        with torch.device("meta"):
            return model_class(cfg)._from_config(cfg)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as e:  # the config is untrusted: transformers raises many kinds (pyo3 panics too)
        raise ConfigMismatch(f"the model config does not fit the weights ({_reason(e)})") from None


def config_ties(config: dict) -> dict[str, str]:
    """Weights the config's model ties to an earlier one (``lm_head.weight`` -> the token embedding
    under ``tie_word_embeddings``): name -> the name it shares its parameter with. Empty when the
    config cannot build a model (``check_config`` says why)."""
    try:
        model = _meta_model(config)
    except ConfigMismatch:
        return {}
    first: dict[int, str] = {}
    out = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[n] = first[id(p)]
        else:
            first[id(p)] = n
    return out


def check_config(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], config: dict) -> None:
    """``shapes``: name -> (shape, dtype) of every weight the restore would load (aliases left out).

    The config's model is built on the meta device (nothing allocated). transformers may rename and
    fuse checkpoint tensors when it loads them (mixture-of-experts experts), so names are compared
    only where they agree; the parameter count must agree in any case. A weight the config ties to
    another counts only when the weights hold it: stored with other values than the one it is tied
    to, transformers loads it untied."""
    model = _meta_model(config)
    params = dict(model.named_parameters(remove_duplicate=False))
    first = dict(model.named_parameters())
    own = dict(params)
    own.update((n, b) for n, b in model.named_buffers() if n in model.state_dict())
    for n, (shape, _) in shapes.items():
        if n in own and tuple(own[n].shape) != tuple(shape):
            raise ConfigMismatch(f"the model config does not fit the weights: {n} is {tuple(shape)} in the "
                                 f"artifact, {tuple(own[n].shape)} in the config's model")
    have = sum(math.prod(s) for s, _ in shapes.values())
    want = sum(t.numel() for n, t in own.items() if n in first or n in shapes)
    if have != want:
        raise ConfigMismatch(f"the model config does not fit the weights: {want:,} parameters in the config's "
                             f"model, {have:,} in the artifact")


def _reason(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 500 characters of it)."""
    msg = str(e).strip().splitlines()[0][:500] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {msg}"


def build_checked(build, *args):
    """``build(*args)`` (``modelbuild.build_model`` or ``load_folder_model``), with whatever transformers
    raises for a config that does not fit turned into a ModelError naming it."""
    try:
        return build(*args)
    except (KeyboardInterrupt, SystemExit, MemoryError, ModelError):
        raise
    except BaseException as e:
        raise ModelError(f"the model config does not fit the weights ({_reason(e)})") from None


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        v = f.contents()
    except Exception:  # a malformed field: treated as absent, the tensor checks still apply
        return None
    return v


def _count(reader, key: str) -> int | None:
    v = _field(reader, key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def check_gguf(path) -> None:
    """Refuse a GGUF file whose tensors do not cover the model its metadata describes, before
    transformers builds (and allocates) that model: no tensors, a block without tensors, no token
    embedding, or far fewer parameters than the metadata implies (``limits.MIN_GGUF_COVERAGE``)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        tensors = {t.name: int(t.n_elements) for t in reader.tensors}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the gguf reader raises many kinds for a damaged file
        raise ModelError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    if not tensors:
        raise ModelError(f"{path}: the GGUF file holds no tensors: there are no weights to compress")
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"{path}: the GGUF file names no architecture (general.architecture)")
    blocks = _count(reader, f"{arch}.block_count")
    if blocks is None:
        raise ModelError(f"{path}: the GGUF file gives no {arch}.block_count")
    if blocks > limits.MAX_GGUF_BLOCKS:
        raise ModelError(f"{path}: {blocks} blocks, over the {limits.MAX_GGUF_BLOCKS} limit")
    if "token_embd.weight" not in tensors:
        raise ModelError(f"{path}: the GGUF file has no token embedding (token_embd.weight)")
    have = {name.split(".")[1] for name in tensors if name.startswith("blk.") and name.count(".") >= 2}
    missing = [i for i in range(blocks) if str(i) not in have]
    if missing:
        raise ModelError(f"{path}: the GGUF file declares {blocks} blocks but has no tensors for "
                         f"{len(missing)} of them (first: block {missing[0]})")
    expected = _expected_parameters(reader, arch, blocks, tensors)
    total = sum(tensors.values())
    if expected is not None:
        if expected > limits.MAX_TOTAL_ELEMENTS:
            raise ModelError(f"{path}: the metadata describes {expected} parameters, over the "
                             f"{limits.MAX_TOTAL_ELEMENTS} limit")
        if total < limits.MIN_GGUF_COVERAGE * expected:
            raise ModelError(f"{path}: the GGUF file holds {total:,} parameters where its metadata implies about "
                             f"{expected:,}: most weights are missing")


def _expected_parameters(reader, arch: str, blocks: int, tensors: dict[str, int]) -> int | None:
    """About how many parameters a decoder stack of this shape has (attention with grouped keys and
    values, a gated MLP, the embedding); None when the metadata lacks a size."""
    emb = _count(reader, f"{arch}.embedding_length")
    ff = _count(reader, f"{arch}.feed_forward_length")
    heads = _count(reader, f"{arch}.attention.head_count")
    kv = _count(reader, f"{arch}.attention.head_count_kv") or heads
    if not emb or not ff or not heads:
        return None
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _count(reader, f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else 0)
    attn = 2 * emb * emb + 2 * emb * (emb * kv // heads)
    return vocab * emb + blocks * (attn + 3 * emb * ff)

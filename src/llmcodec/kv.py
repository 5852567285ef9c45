"""A model's KV cache as a compressed artifact: run a prompt, code its keys and values, load them back.

Each layer's keys and values (``[1, kv_heads, tokens, head_dim]`` in transformers' ``DynamicCache``)
are coded as stacks of one matrix per head (``tensors.py``): with the ``tokens`` layout a head's
matrix has tokens as rows and head channels as columns, with ``channels`` the transpose. Keys are
stored as the cache holds them, after the rotary embedding.

The cache covers every prompt token but the last; that token's id is stored, so that scoring a
continuation feeds it first and every continuation token is predicted from the cache.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import artifact
from .artifact import ArtifactError
from .compress import CompressSettings, Progress
from .tensors import TensorOptions, compress_tensors, restore_tensors, tensor_settings

LAYOUTS = ("tokens", "channels")
KV_FILE = "kv.json"
KV_VERSION = 1


@dataclass(frozen=True)
class KVOptions:
    key_layout: str = "channels"  # rows of each head's key matrix: head channels (columns: tokens)
    value_layout: str = "tokens"  # rows of each head's value matrix: tokens (columns: head channels)
    # the first ``sinks`` tokens' keys and values (attention sinks) are kept in 16 bits, not coded
    sinks: int = 4
    # bits per element moved from the values to the keys (keys: the budget + key_bits, values: - key_bits)
    key_bits: float = 0.0
    # the last ``recent`` tokens' keys and values (the newest, which the next tokens attend to most) kept
    # in 16 bits, not coded, like KIVI's full-precision window; counted in the budget
    recent: int = 0
    # (layer, bits) pairs: that layer's keys and values get ``bits`` per element more than the other
    # layers (negative: fewer) within the same budget
    layer_bits: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.key_bits, (int, float)) and math.isfinite(self.key_bits)):
            raise ValueError(f"key_bits must be a finite number, got {self.key_bits!r}")
        if not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"the number of sink tokens must be a whole number >= 0, got {self.sinks!r}")
        if not isinstance(self.recent, int) or self.recent < 0:
            raise ValueError(f"the number of recent tokens must be a whole number >= 0, got {self.recent!r}")
        layers = [p[0] for p in self.layer_bits if isinstance(p, tuple) and len(p) == 2]
        if len(layers) != len(self.layer_bits) or len(set(layers)) != len(layers) or not all(
                isinstance(i, int) and i >= 0 and isinstance(b, (int, float)) and math.isfinite(b)
                for i, b in self.layer_bits):
            raise ValueError(f"layer_bits must be distinct (layer >= 0, finite bits) pairs, got {self.layer_bits!r}")

    def bits_offset(self, layer: int, keys: bool) -> float:
        """Bits per element a layer's keys (or values) get over the budget's base."""
        return (self.key_bits if keys else -self.key_bits) + dict(self.layer_bits).get(layer, 0.0)
        for what, v in (("key", self.key_layout), ("value", self.value_layout)):
            if v not in LAYOUTS:
                raise ValueError(f"unknown {what} layout {v!r}; choose one of {', '.join(LAYOUTS)}")


@dataclass
class LoadedKV:
    """A restored cache, ready to pass to the model, and what continues it."""

    cache: object  # transformers DynamicCache
    last_token: int  # the prompt's last token: feed it first (the cache holds the tokens before it)
    prompt_tokens: int


@dataclass
class KVReport:
    tokens: int
    layers: int
    elements: int
    bytes: int
    bits_per_element: float
    prefill_seconds: float
    code_seconds: float


def _cache_kwarg(model) -> str:
    # transformers 5.x names the argument ``cache``; earlier versions ``past_key_values``
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def layer_tensors(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every layer, each ``[1, heads, tokens, head_dim]``."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def build_cache(model, kv: list[tuple[torch.Tensor, torch.Tensor]]):
    """A new DynamicCache holding ``kv`` (one (keys, values) pair per layer)."""
    cache = new_cache(model)
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


@torch.inference_mode()
def prefill(model, ids: torch.Tensor):
    """Run token ids ``[n]`` through the model: the exact cache of all ``n`` tokens."""
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError("the prompt must be a non-empty 1-D sequence of token ids")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(ids) > limit:
        raise ValueError(f"the prompt has {len(ids)} tokens, more than the model's {limit} positions")
    out = model(input_ids=ids[None], use_cache=True, **{_cache_kwarg(model): new_cache(model)})
    return _output_cache(out)


def _to_rows(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``[1, heads, tokens, dim]`` -> the stack coded: ``[heads, tokens, dim]`` or ``[heads, dim, tokens]``."""
    t = t[0]
    return t.transpose(1, 2) if layout == "channels" else t


def _from_rows(t: torch.Tensor, layout: str) -> torch.Tensor:
    return (t.transpose(1, 2) if layout == "channels" else t)[None]


def _kept_tokens(tokens: int, options: KVOptions) -> tuple[int, int]:
    """(sink, recent) tokens kept in 16 bits out of a cache of ``tokens``: sinks first, the rest recent."""
    s = min(options.sinks, tokens)
    return s, min(options.recent, tokens - s)


def kv_tensors(kv: list[tuple[torch.Tensor, torch.Tensor]], options: KVOptions) -> dict[str, torch.Tensor]:
    """The named tensors ``compress_tensors`` stores (batch size 1 only): per layer the coded 3-D stacks
    of keys and values between the sink and the recent tokens, and the sink and recent tokens' keys and
    values flattened to 1-D (1-D tensors are kept in 16 bits)."""
    out = {}
    for i, (k, v) in enumerate(kv):
        if k.shape[0] != 1 or v.shape[0] != 1:
            raise ValueError(f"only a cache of batch size 1 can be stored, layer {i} has {k.shape[0]}")
        t = k.shape[2]
        s, r = _kept_tokens(t, options)
        if s:
            out[f"layers.{i}.sink_keys"] = k[0, :, :s].reshape(-1)
            out[f"layers.{i}.sink_values"] = v[0, :, :s].reshape(-1)
        if s + r < t:
            out[f"layers.{i}.keys"] = _to_rows(k[:, :, s:t - r], options.key_layout)
            out[f"layers.{i}.values"] = _to_rows(v[:, :, s:t - r], options.value_layout)
        if r:
            out[f"layers.{i}.recent_keys"] = k[0, :, t - r:].reshape(-1)
            out[f"layers.{i}.recent_values"] = v[0, :, t - r:].reshape(-1)
    return out


def compress_kv(
    kv: list[tuple[torch.Tensor, torch.Tensor]],
    last_token: int,
    settings: CompressSettings | None = None,
    options: KVOptions = KVOptions(),
    progress: Progress | None = None,
) -> artifact.Artifact:
    """Code a cache's (keys, values) per layer; ``settings.bpw`` counts the whole file."""
    sinks, recent = _kept_tokens(int(kv[0][0].shape[-2]), options)
    meta = {"version": KV_VERSION, "layers": len(kv), "tokens": int(kv[0][0].shape[-2]) + 1,
            "last_token": int(last_token), "key_layout": options.key_layout, "value_layout": options.value_layout,
            "sinks": sinks, "recent": recent, "head_dim": int(kv[0][0].shape[-1])}
    files = {KV_FILE: json.dumps(meta, sort_keys=True).encode()}
    settings = settings or tensor_settings()
    tensors = kv_tensors(kv, options)
    offsets = None
    if settings.bpw is not None:  # a fixed QP or lossless has no budget to share
        offsets = {n: options.bits_offset(int(n.split(".")[1]), n.endswith(".keys")) for n in tensors
                   if n.endswith((".keys", ".values")) and not n.split(".")[-1].startswith(("sink", "recent"))}
        offsets = offsets if any(offsets.values()) else None
    return compress_tensors(tensors, settings, TensorOptions(stack_axis=0), progress, extra_files=files,
                            bits_offsets=offsets)


def _meta(art: artifact.Artifact, where: str) -> dict:
    raw = art.files.get(KV_FILE)
    if raw is None:
        raise ArtifactError(f"{where}: not a KV cache artifact (no {KV_FILE}); 'llmcodec kv save' writes those")
    try:
        meta = json.loads(raw)
        ok = (meta.get("version") == KV_VERSION and isinstance(meta.get("layers"), int)
              and isinstance(meta.get("last_token"), int) and isinstance(meta.get("tokens"), int)
              and meta.get("key_layout") in LAYOUTS and meta.get("value_layout") in LAYOUTS
              and isinstance(meta.get("sinks", 0), int) and isinstance(meta.get("recent", 0), int)
              and meta.get("sinks", 0) >= 0 and meta.get("recent", 0) >= 0
              and meta.get("sinks", 0) + meta.get("recent", 0) < meta["tokens"]
              and (meta.get("sinks", 0) + meta.get("recent", 0) == 0
                   or isinstance(meta.get("head_dim"), int) and meta["head_dim"] > 0))
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise ArtifactError(f"{where}: {KV_FILE} is malformed: the file is corrupt or too new")
    return meta


def restore_kv(art: artifact.Artifact, workers: int = 0, progress: Progress | None = None,
               where: str = "artifact") -> tuple[list[tuple[torch.Tensor, torch.Tensor]], dict]:
    """The (keys, values) of every layer as the model's cache holds them, and the stored metadata."""
    meta = _meta(art, where)
    tensors = restore_tensors(art, workers, progress, where)
    sinks, recent = meta.get("sinks", 0), meta.get("recent", 0)
    rest = meta["tokens"] - 1 - sinks - recent
    kv = []
    for i in range(meta["layers"]):
        try:
            parts = []
            for name, layout in (("keys", meta["key_layout"]), ("values", meta["value_layout"])):
                coded = _from_rows(tensors[f"layers.{i}.{name}"], layout) if rest else None
                sink, tail = (tensors[f"layers.{i}.{kept}_{name}"].reshape(1, -1, n, meta["head_dim"]) if n else None
                              for kept, n in (("sink", sinks), ("recent", recent)))
                pieces = [p for p in (sink, coded, tail) if p is not None]
                dtype = pieces[0].dtype if coded is None else coded.dtype
                parts.append(torch.cat([p.to(dtype) for p in pieces], dim=2))
        except KeyError:
            raise ArtifactError(f"{where}: layer {i}'s keys or values are missing: the file is corrupt") from None
        except RuntimeError:
            raise ArtifactError(f"{where}: layer {i}'s sink or recent tokens do not fit its cache: the file is "
                                "corrupt") from None
        kv.append((parts[0], parts[1]))
    return kv, meta


def check_model(model, kv: list[tuple[torch.Tensor, torch.Tensor]], where: str = "the cache") -> None:
    """The cache must come from a model of this shape (layers, key/value heads, head size)."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    layers = cfg.num_hidden_layers
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if len(kv) != layers:
        raise ValueError(f"{where} has {len(kv)} layers, the model {layers}: it was made with another model")
    for i, (k, _) in enumerate(kv):
        if k.shape[1] != heads or k.shape[3] != dim:
            raise ValueError(f"{where}: layer {i} has {k.shape[1]} heads of {k.shape[3]}, the model {heads} of "
                             f"{dim}: it was made with another model")


def load_kv(path: str | os.PathLike, model, workers: int = 0, progress: Progress | None = None) -> LoadedKV:
    """An artifact written by ``save_kv`` -> a ready DynamicCache for ``model``."""
    kv, meta = restore_kv(artifact.read(path), workers, progress, str(path))
    check_model(model, kv, str(path))
    dtype = next(model.parameters()).dtype
    cache = build_cache(model, [(k.to(dtype), v.to(dtype)) for k, v in kv])
    return LoadedKV(cache, meta["last_token"], meta["tokens"])


@torch.inference_mode()
def continuation_nll(model, cache, last_token: int, continuation: torch.Tensor) -> tuple[float, int]:
    """Summed negative log-likelihood of ``continuation`` (token ids) after a cache, and its token count.
    The cache is extended in place."""
    if continuation.ndim != 1 or len(continuation) == 0:
        raise ValueError("the continuation must hold at least one token")
    x = torch.cat([torch.tensor([last_token], dtype=continuation.dtype), continuation[:-1]])[None]
    logits = model(input_ids=x, use_cache=True, **{_cache_kwarg(model): cache}).logits[0].float()
    loss = torch.nn.functional.cross_entropy(logits, continuation, reduction="sum")
    return float(loss), len(continuation)


def tokenize(tokenizer, text: str, special: bool) -> torch.Tensor:
    return tokenizer(text, add_special_tokens=special, return_tensors="pt")["input_ids"][0]


def save_kv(model_spec: str | os.PathLike, prompt: str, out: str | os.PathLike,
            settings: CompressSettings | None = None, options: KVOptions = KVOptions(),
            progress: Progress | None = None) -> KVReport:
    """Run ``prompt`` through a model (folder, .gguf or built-in name), code its cache into ``out``."""
    from .api import load_source_model, save

    model, tok = load_source_model(model_spec)
    ids = tokenize(tok, prompt, special=True)
    if len(ids) < 2:
        raise ValueError("the prompt must hold at least two tokens")
    t0 = time.perf_counter()
    kv = layer_tensors(prefill(model, ids[:-1]))
    t1 = time.perf_counter()
    art = compress_kv(kv, int(ids[-1]), settings, options, progress)
    save(art, out)
    t2 = time.perf_counter()
    size = Path(out).stat().st_size
    elements = sum(k.numel() + v.numel() for k, v in kv)
    return KVReport(len(ids), len(kv), elements, size, 8 * size / elements, t1 - t0, t2 - t1)


@dataclass
class KVEval:
    perplexity: float
    tokens: int
    prompt_tokens: int
    load_seconds: float


def eval_kv(model_spec: str | os.PathLike, path: str | os.PathLike, continuation: str, workers: int = 0,
            progress: Progress | None = None) -> KVEval:
    """Load the cache in ``path`` into the model and score ``continuation`` (perplexity)."""
    from .api import load_source_model

    model, tok = load_source_model(model_spec)
    ids = tokenize(tok, continuation, special=False)
    t0 = time.perf_counter()
    loaded = load_kv(path, model, workers, progress)
    secs = time.perf_counter() - t0
    nll, n = continuation_nll(model, loaded.cache, loaded.last_token, ids)
    return KVEval(math.exp(nll / n), n, loaded.prompt_tokens, secs)

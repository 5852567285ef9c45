"""The .llmc artifact: one safetensors file (no pickle), settings and an index as JSON metadata.

Layout of the safetensors tensors:
  ``<name>::bitstream`` uint8    coded matrix        ``<name>::scale`` / ``::offset`` fp16 side info
  ``<name>::raw``       any      uncompressed tensor ``file::<filename>`` uint8 config/tokenizer files
The metadata key ``llmcodec`` holds a JSON header (see ``HEADER_KEYS``) with each tensor's shape,
dtype, QP, frame layout, quantization and the SHA-256 of every stored piece. Readers check the
format name and version, all offsets (safetensors does), and every checksum before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .coder import CodedTensor
from .frames import FrameLayout
from .quant import QuantSpec

FORMAT_NAME = "llmcodec"
FORMAT_VERSION = 1
HEADER_KEYS = ("format", "format_version", "llmcodec_version", "codec", "settings", "tensors", "model", "stats")


class ArtifactError(ValueError):
    """The file is not a readable llmcodec artifact (foreign, corrupt, truncated or too new)."""


@dataclass
class Artifact:
    codec: dict  # {"name", "encoder", "profile": {...}}
    settings: dict
    coded: dict[str, CodedTensor] = field(default_factory=dict)
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # tied weights: name -> stored name
    config: dict | None = None  # Hugging Face config of the source model
    files: dict[str, bytes] = field(default_factory=dict)  # tokenizer and other model files
    order: list[str] = field(default_factory=list)  # tensor names in source order

    def stats(self) -> dict:
        n_coded = sum(c.numel for c in self.coded.values())
        bits = sum(c.bits for c in self.coded.values())
        side = sum(16 * (c.scale.size + c.offset.size) for c in self.coded.values())
        n_raw = sum(t.numel() for t in self.raw.values())
        raw_bytes = sum(t.numel() * t.element_size() for t in self.raw.values())
        src_bytes = sum(c.numel * _itemsize(c.dtype) for c in self.coded.values())
        return {
            "coded_tensors": len(self.coded),
            "coded_weights": n_coded,
            "coded_bits": bits,
            "side_bits": side,
            "bits_per_weight": bits / n_coded if n_coded else 0.0,
            "coded_source_bytes": src_bytes,
            "raw_tensors": len(self.raw),
            "raw_weights": n_raw,
            "raw_bytes": raw_bytes,
            "aliases": len(self.aliases),
        }


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def _sha(t: torch.Tensor | np.ndarray | bytes) -> str:
    if isinstance(t, bytes):
        return hashlib.sha256(t).hexdigest()
    if isinstance(t, torch.Tensor):
        t = t.contiguous().view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
    return hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest()


def _u8(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.zeros(0, dtype=torch.uint8)


def write(path: str | os.PathLike, art: Artifact, version: str) -> dict:
    """Write atomically (temporary file in the same folder, then rename). Returns the header."""
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict] = {}
    for name in art.order:
        if name in art.coded:
            c = art.coded[name]
            tensors[f"{name}::bitstream"] = _u8(c.bitstream)
            tensors[f"{name}::scale"] = torch.from_numpy(np.ascontiguousarray(c.scale))
            tensors[f"{name}::offset"] = torch.from_numpy(np.ascontiguousarray(c.offset))
            index[name] = {
                "kind": "coded",
                "shape": list(c.shape),
                "dtype": c.dtype,
                "qp": c.qp,
                "layout": c.layout.to_dict(),
                "quant": {"bits": c.spec.bits, "group": c.spec.group},
                "bits": c.bits,
                "rel_error": c.rel_error,
                "sha256": {"bitstream": _sha(c.bitstream), "scale": _sha(c.scale), "offset": _sha(c.offset)},
            }
        elif name in art.raw:
            t = art.raw[name].contiguous()
            tensors[f"{name}::raw"] = t
            index[name] = {
                "kind": "raw",
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "sha256": {"raw": _sha(t)},
            }
        elif name in art.aliases:
            index[name] = {"kind": "alias", "of": art.aliases[name]}
        else:
            raise ValueError(f"tensor {name!r} is listed but has no data")
    for fname, data in art.files.items():
        tensors[f"file::{fname}"] = _u8(data)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "llmcodec_version": version,
        "codec": art.codec,
        "settings": art.settings,
        "tensors": index,
        "model": {"config": art.config, "files": {f: _sha(d) for f, d in art.files.items()}},
        "stats": art.stats(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={FORMAT_NAME: json.dumps(header)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return header


def read_header(path: str | os.PathLike) -> dict:
    """Parse and check the header only (cheap: no tensor data is read)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable llmcodec artifact (safetensors: {e})") from None
    if FORMAT_NAME not in meta:
        raise ArtifactError(f"{path}: a safetensors file, but not an llmcodec artifact (no '{FORMAT_NAME}' header)")
    try:
        header = json.loads(meta[FORMAT_NAME])
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: the llmcodec header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: the llmcodec header is malformed")
    ver = header.get("format_version")
    if not isinstance(ver, int):
        raise ArtifactError(f"{path}: the llmcodec header has no format version")
    if ver > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: made by a newer llmcodec (format version {ver}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade llmcodec"
        )
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ArtifactError(f"{path}: the llmcodec header lacks {', '.join(missing)}")
    return header


def read(path: str | os.PathLike) -> Artifact:
    """Read and verify a whole artifact; raises ArtifactError naming the first bad tensor."""
    header = read_header(path)
    art = Artifact(codec=header["codec"], settings=header["settings"], config=header["model"].get("config"))
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())

            def get(key: str, what: str, sha: str | None) -> torch.Tensor:
                if key not in keys:
                    raise ArtifactError(f"{path}: {what} is missing from the file")
                t = f.get_tensor(key)
                if sha is not None and _sha(t) != sha:
                    raise ArtifactError(f"{path}: checksum mismatch in {what}: the file is corrupt")
                return t

            for name, e in header["tensors"].items():
                art.order.append(name)
                kind = e.get("kind")
                if kind == "coded":
                    sums = e["sha256"]
                    bs = get(f"{name}::bitstream", f"tensor {name!r} (bitstream)", sums["bitstream"])
                    scale = get(f"{name}::scale", f"tensor {name!r} (scale)", sums["scale"]).numpy()
                    offset = get(f"{name}::offset", f"tensor {name!r} (offset)", sums["offset"]).numpy()
                    layout = FrameLayout.from_dict(e["layout"])
                    shape = tuple(int(x) for x in e["shape"])
                    if (layout.rows, layout.cols) != shape:
                        raise ArtifactError(f"{path}: tensor {name!r} has a layout that does not match its shape")
                    art.coded[name] = CodedTensor(
                        name,
                        shape,
                        e["dtype"],
                        e["qp"],
                        layout,
                        QuantSpec(bits=e["quant"]["bits"], group=e["quant"]["group"]),
                        bs.numpy().tobytes(),
                        scale,
                        offset,
                        e.get("rel_error"),
                    )
                elif kind == "raw":
                    art.raw[name] = get(f"{name}::raw", f"tensor {name!r}", e["sha256"]["raw"])
                elif kind == "alias":
                    art.aliases[name] = e["of"]
                else:
                    raise ArtifactError(f"{path}: tensor {name!r} has unknown kind {kind!r}")
            for fname, sha in header["model"].get("files", {}).items():
                art.files[fname] = get(f"file::{fname}", f"model file {fname!r}", sha).numpy().tobytes()
    except ArtifactError:
        raise
    except (SafetensorError, KeyError, TypeError, ValueError, OSError) as e:
        raise ArtifactError(f"{path}: the artifact is corrupt or truncated ({type(e).__name__}: {e})") from None
    for name, of in art.aliases.items():
        if of not in art.coded and of not in art.raw:
            raise ArtifactError(f"{path}: tensor {name!r} is tied to {of!r}, which the file does not hold")
    return art

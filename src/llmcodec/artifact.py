"""The .llmc artifact: one safetensors file (no pickle), settings and an index as JSON metadata.

Layout of the safetensors tensors:
  ``<name>::bitstream`` uint8    coded matrix        ``<name>::scale`` / ``::offset`` fp16 side info
  ``<name>::raw``       any      uncompressed tensor ``file::<filename>`` uint8 config/tokenizer files
  ``<name>::colscale``  fp16     optional column multipliers (the coded matrix was W * colscale)
With compact side information (format 6, ``quant.compact``) ``::scale`` holds uint8 logarithmic
codes (``sideinfo.py``, the tensor's ``scale_lo`` in the header) and ``::offset`` is there only
for matrices that keep offsets; column multipliers with a ``col_lo`` in the header are uint8
codes too. From format 8, with ``packed`` in the tensor's ``quant`` header, both are stored packed
(``sideinfo.pack``, a 1-D uint8 stream) instead of a byte per code.
From format 10: tensors of three or more dimensions are coded as stacks of matrices (``stacks.py``;
a ``stack`` entry with the shape, whose members ``name[i]`` are entries of their own); kept tensors may
be stored in a narrower float type than the source's (``source_dtype`` in their entry, ``kept.py``);
model files are stored xz-compressed (``files_codec`` in the header's ``model``).
The metadata key ``llmcodec`` holds a JSON header (see ``HEADER_KEYS``) with each tensor's shape,
dtype, QP, frame layout, quantization and the SHA-256 of every stored piece; ``llmcodec.sha256`` is
the SHA-256 of that JSON text (format version 2 on), so a damaged header is caught too.

Readers never trust the file: they check the declared safetensors header size against the file
size and a cap before anything is parsed, the format name and version, the header checksum, the
shape and type of every header field (``validate_header``), every piece's dtype and shape against
the header, and every checksum. Anything wrong is an :class:`ArtifactError` naming the tensor.

This module writes the file and is the public face of the format; the parts live in
``artifact_format`` (names, versions, the in-memory :class:`Artifact`), ``artifact_check`` (the
header's fields), ``artifact_read`` (reading and verifying) and ``stfile`` (the safetensors writer).
"""

from __future__ import annotations

import json
import lzma
import os

import numpy as np
import torch

from . import outputs, sideinfo, stacks
from .artifact_check import file_name_problem, validate_header
from .artifact_format import (
    CODED_DTYPES,
    FILES_CODEC,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_SHA_KEY,
    MAX_PAD,
    RAW_DTYPES,
    Artifact,
    ArtifactError,
    digest,
)
from .artifact_read import piece_bytes, read, read_header
from .coder import CodedTensor
from .frames import PACKINGS, FrameLayout
from .quant import RECON_LEVELS, group_count
from .stfile import LazyTensor, Storable, materialize, safetensors_header, write_safetensors
from .untrusted import quoted, strict_json

__all__ = [
    "CODED_DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RAW_DTYPES",
    "Artifact",
    "ArtifactError",
    "LazyTensor",
    "file_name_problem",
    "header_bound",
    "materialize",
    "piece_bytes",
    "read",
    "read_header",
    "strict_json",
    "validate_header",
    "write",
    "write_safetensors",
]


def _coded_entry(name: str, c: CodedTensor) -> tuple[dict[str, Storable], dict]:
    """A coded matrix's stored pieces and its header entry."""
    pieces: dict[str, Storable] = {f"{name}::bitstream": c.bitstream}
    scale, scale_lo = sideinfo.to_codes(c.scale) if c.spec.compact else (c.scale, None)
    if c.spec.compact and c.spec.packed:
        scale = sideinfo.pack(scale)
    pieces[f"{name}::scale"] = torch.from_numpy(np.ascontiguousarray(scale))
    sums = {"bitstream": digest(c.bitstream), "scale": digest(scale)}
    if c.decoded_sha256 is not None:
        sums["decoded"] = c.decoded_sha256
    if not c.spec.compact or np.any(c.offset):  # compact: offsets only where stored (quant.py)
        pieces[f"{name}::offset"] = torch.from_numpy(np.ascontiguousarray(c.offset))
        sums["offset"] = digest(c.offset)
    entry = {
        "kind": "coded",
        "shape": list(c.shape),
        "dtype": c.dtype,
        "qp": c.qp,
        "layout": c.layout.to_dict(),
        "quant": {
            "bits": c.spec.bits,
            "group": c.spec.group,
            "shared_scale": c.spec.shared_scale,
            **({"block": c.spec.block} if c.spec.block is not None else {}),
            **({"block_cols": c.spec.block_cols} if c.spec.block_cols is not None else {}),
            **({"compact": True, "scale_lo": scale_lo} if c.spec.compact else {}),
            **({"packed": True} if c.spec.packed else {}),
        },
        "bits": c.bits,
        "rel_error": c.rel_error,
        "sha256": sums,
    }
    if c.rotation is not None:
        entry["rotation"] = c.rotation
    if c.compand is not None:
        entry["compand"] = c.compand
    if c.recon is not None:
        entry["recon"] = {"step": c.recon.step, "offsets": list(c.recon.offsets)}
    if c.col_scale is not None:
        cols = c.col_scale
        if sideinfo.log_coded(cols):
            cols, entry["col_lo"] = sideinfo.to_codes(cols)
            if c.spec.packed:
                cols = sideinfo.pack(cols)
        pieces[f"{name}::colscale"] = torch.from_numpy(np.ascontiguousarray(cols))
        sums["col_scale"] = digest(cols)
    return pieces, entry


def _raw_entry(art: Artifact, name: str, sha: bool = True) -> tuple[dict[str, Storable], dict]:
    r = art.raw[name]
    entry = {
        "kind": "raw",
        "shape": list(r.shape),
        "dtype": str(r.dtype).removeprefix("torch."),
        # a lazy tensor is read here and again when written
        "sha256": {"raw": digest(materialize(r)) if sha else "0" * 64},
    }
    if name in art.source_dtypes:
        entry["source_dtype"] = art.source_dtypes[name]
    return {f"{name}::raw": r}, entry


def _entries(art: Artifact, name: str) -> list[tuple[str, dict[str, Storable], dict]]:
    """(entry name, pieces, entry) for ``name`` and, for a stack, each of its members after it."""
    if name in art.stacks:
        shape = art.stacks[name]
        members = stacks.member_names(name, shape)
        dtype = next((art.coded[m].dtype for m in members if m in art.coded), None)
        if dtype is None:
            dtype = art.source_dtypes.get(members[0], str(art.raw[members[0]].dtype).removeprefix("torch."))
        out = [(name, {}, {"kind": "stack", "shape": list(shape), "dtype": dtype})]
        for m in members:
            out += _entries(art, m)
        return out
    if name in art.coded:
        return [(name, *_coded_entry(name, art.coded[name]))]
    if name in art.raw:
        return [(name, *_raw_entry(art, name))]
    if name in art.aliases:
        return [(name, {}, {"kind": "alias", "of": art.aliases[name]})]
    raise ValueError(f"tensor {name!r} is listed but has no data")


def _stored_files(art: Artifact) -> dict[str, bytes]:
    """The model files as stored: xz-compressed."""
    for fname in art.files:
        why = file_name_problem(fname)
        if why is not None:
            raise ValueError(f"model file {quoted(fname)} cannot be stored: it is {why}")
    return {f: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME) for f, d in sorted(art.files.items())}


def _header(art: Artifact, version: str, index: dict, files: dict[str, str]) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "llmcodec_version": version,
        "codec": art.codec,
        "settings": art.settings,
        "tensors": index,
        "model": {
            "config": art.config,
            "files": files,
            "files_codec": FILES_CODEC,
            **({"checkpoint": art.checkpoint} if art.checkpoint is not None else {}),
        },
        "stats": art.stats(),
    }


def write(path: str | os.PathLike, art: Artifact, version: str) -> dict:
    """Write atomically (temporary file in the same folder, then rename). Returns the header."""
    tensors: dict[str, Storable] = {}
    index: dict[str, dict] = {}
    for name in art.order:
        for entry_name, pieces, entry in _entries(art, name):
            tensors.update(pieces)
            index[entry_name] = entry
    files = _stored_files(art)
    for fname, data in files.items():
        tensors[f"file::{fname}"] = data
    header = _header(art, version, index, {f: digest(d) for f, d in files.items()})
    path = outputs.check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs.clean_stale(path.parent, path.name)  # a killed writer's temporary of this artifact
    with outputs.replacing(path, outputs.temp_prefix(path.name)) as tmp:
        text = json.dumps(header)
        write_safetensors(tmp, tensors, {FORMAT_NAME: text, HEADER_SHA_KEY: digest(text.encode())})
        outputs.honour_umask(tmp)
    return header


# Worst-case values for a coded entry's fields whose size is only known after coding.
_WORST_FLOAT = -1.2345678901234567e-100
_WORST_INT = -(10**6)


def _worst_coded(shape: tuple[int, int], group: int | None) -> tuple[dict[str, tuple], dict]:
    """A coded entry at least as long as any real one of this shape, and its pieces' (dtype, shape)."""
    r, c = shape
    big = int("9" * len(str(2 * (max(r, c) + MAX_PAD) + MAX_PAD)))
    side = [r, group_count(c, group)]
    entry = {
        "kind": "coded", "shape": [r, c], "dtype": "bfloat16", "qp": -1000,
        "layout": {**{k: big for k in FrameLayout.__dataclass_fields__}, "packing": max(PACKINGS, key=len)},
        "quant": {"bits": 16, "group": group, "shared_scale": False, "block": 1024, "block_cols": 1024,
                  "compact": True, "scale_lo": _WORST_INT, "packed": True},
        "bits": 64 * r * c * 10, "rel_error": _WORST_FLOAT,
        "sha256": {k: "0" * 64 for k in ("bitstream", "scale", "offset", "col_scale", "decoded")},
        "rotation": 2**32 - 1, "compand": _WORST_FLOAT,
        "recon": {"step": _WORST_FLOAT, "offsets": [_WORST_FLOAT] * RECON_LEVELS}, "col_lo": _WORST_INT,
    }
    pieces = {"bitstream": (torch.uint8, [4 * r * c + 2**20]), "scale": (torch.float16, side),
              "offset": (torch.float16, side), "colscale": (torch.float16, [c])}
    return pieces, entry


def header_bound(art: Artifact, coded: dict[str, tuple[int, int]], group: int | None, version: str) -> int:
    """An upper bound on the bytes of everything in the file that is neither a tensor's data nor a
    model file: the safetensors header with the llmcodec header in it, its alignment, and the
    rounding of each coded matrix's side information to whole bytes.

    ``art`` holds what is kept, tied and stacked; ``coded`` the shapes of the matrices still to be
    coded (by the names they will be stored under). Everything known is serialized as it will be;
    what coding decides (QPs, sizes, errors, layouts) is filled in with values longer than any it
    can take."""
    tensors: dict[str, tuple] = {}
    index: dict[str, dict] = {}
    members = art.members()
    for name in art.order:
        if name in art.stacks:
            shape = art.stacks[name]
            index[name] = {"kind": "stack", "shape": list(shape), "dtype": "bfloat16"}
            names = stacks.member_names(name, shape)
        else:
            names = [name]
        for n in names:
            if n in coded:
                pieces, index[n] = _worst_coded(coded[n], group)
                tensors.update({f"{n}::{k}": v for k, v in pieces.items()})
            elif n in art.raw:
                pieces, index[n] = _raw_entry(art, n, sha=False)
                tensors.update({k: (v.dtype, list(v.shape)) for k, v in pieces.items()})
            elif n in art.aliases:
                index[n] = {"kind": "alias", "of": art.aliases[n]}
            elif n not in members:
                raise ValueError(f"tensor {n!r} is listed but has no data")
    files = {f: "0" * 64 for f in _stored_files(art)}
    tensors.update({f"file::{f}": (torch.uint8, [2**40]) for f in files})
    stats = {k: _WORST_FLOAT for k in Artifact(codec={}, settings={}).stats()}
    header = {**_header(art, version, index, files), "stats": stats}
    text = json.dumps(header)
    meta = {FORMAT_NAME: text, HEADER_SHA_KEY: "0" * 64}
    infos = {n: (dt, shape, torch.empty(0, dtype=dt).element_size()) for n, (dt, shape) in tensors.items()}
    head = safetensors_header(infos, meta, start=10**15)
    return 8 + len(head) + 8 + 8 * len(coded)

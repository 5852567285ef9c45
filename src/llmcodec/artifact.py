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
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import sys
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from . import limits, outputs, sideinfo, stacks
from .codecs.base import PIX_FMTS, bit_depth
from .codecs.registry import CODECS
from .coder import CodedTensor
from .coefdomain import padded_shape
from .frames import PACKINGS, FrameLayout, rows_per_frame
from .quant import RECON_LEVELS, QuantSpec, Recon, group_count
from .untrusted import quoted

FORMAT_NAME = "llmcodec"
# 2: the header carries its own checksum (``llmcodec.sha256``); 3: optional rotations and companding;
# 4: optional coefficient-domain coding (``quant.block``); 5: optional reconstruction tables (``recon``);
# 6: optional 8-bit logarithmic side information (``quant.compact``, ``col_lo``); 7: optional partly
# filled transform blocks (``quant.block_cols``), which an older reader would decode wrongly;
# 8: optionally packed log codes (``quant.packed``, ``sideinfo.pack``); 9: every coded tensor carries
# the digest of its decoded integers (``sha256.decoded``), checked on every restore
# 10: stacks of matrices, kept tensors in a narrower type (``source_dtype``), compressed model files
# (``files_codec``)
FORMAT_VERSION = 10
DIGEST_FROM_VERSION = 9
FILES_CODEC = "xz"
HEADER_SHA_KEY = f"{FORMAT_NAME}.sha256"
HEADER_KEYS = ("format", "format_version", "llmcodec_version", "codec", "settings", "tensors", "model", "stats")
MAX_HEADER_BYTES = limits.MAX_HEADER_BYTES
CODED_DTYPES = ("float32", "float16", "bfloat16", "float64")  # source dtypes a coded matrix is restored to
RAW_DTYPES = CODED_DTYPES + ("int8", "int16", "int32", "int64", "uint8", "bool", "float8_e4m3fn", "float8_e5m2")
MAX_DIM = limits.MAX_DIM
MAX_PAD = limits.MAX_PAD
MAX_STACK = 2**20  # matrices in one stacked tensor (experts, kernels, layers x heads)
# log-code offsets whose values stay normal float32 numbers (2^-120 .. 2^120)
LO_RANGE = (-120 * sideinfo.CODES_PER_OCTAVE, 120 * sideinfo.CODES_PER_OCTAVE - sideinfo.SPAN)
STATS_KEYS = ("coded_tensors", "coded_weights", "coded_bits", "side_bits", "bits_per_weight", "raw_tensors")


class ArtifactError(ValueError):
    """The file is not a readable llmcodec artifact (foreign, corrupt, truncated or too new)."""


@dataclass(frozen=True)
class LazyTensor:
    """An uncompressed tensor that is read from its source only while the artifact is written.

    Compressing a safetensors model keeps its raw tensors (often the embedding, the largest tensor
    of all) out of memory this way while the coded ones are being worked on.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    load: Callable[[], torch.Tensor]

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()


def materialize(t: torch.Tensor | LazyTensor) -> torch.Tensor:
    return (t.load() if isinstance(t, LazyTensor) else t).detach().cpu().contiguous()


@dataclass
class Artifact:
    codec: dict  # {"name", "encoder", "profile": {...}}
    settings: dict
    coded: dict[str, CodedTensor] = field(default_factory=dict)
    raw: dict[str, torch.Tensor | LazyTensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # tied weights: name -> stored name
    config: dict | None = None  # Hugging Face config of the source model
    files: dict[str, bytes] = field(default_factory=dict)  # tokenizer and other model files
    order: list[str] = field(default_factory=list)  # tensor names in source order
    # the source folder's on-disk layout (modelio.read_checkpoint): shard file, dtype and metadata
    # of each tensor, and the index's metadata; None for in-memory sources and older artifacts
    checkpoint: dict | None = None
    # tensors of 3+ dimensions coded as matrices: name -> shape; its members (stacks.member_names)
    # are in ``coded`` (or ``raw``) under their own names, and only the stack's name is in ``order``
    stacks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    source_dtypes: dict[str, str] = field(default_factory=dict)  # kept tensors stored in another dtype

    def members(self) -> set[str]:
        return {m for name, shape in self.stacks.items() for m in stacks.member_names(name, shape)}

    def stats(self) -> dict:
        n_coded = sum(c.numel for c in self.coded.values())
        bits = sum(c.bits for c in self.coded.values())
        side = sum(c.side_bits for c in self.coded.values())
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
            "parameters": n_coded + n_raw,
            "stacks": len(self.stacks),
        }


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def _sha(t: torch.Tensor | np.ndarray | bytes) -> str:
    if isinstance(t, bytes):
        return hashlib.sha256(t).hexdigest()
    if isinstance(t, torch.Tensor):
        t = t.contiguous().reshape(-1).view(torch.uint8).numpy()
    # hash the array's own memory: .tobytes() would copy it (the largest tensor again at save time)
    return hashlib.sha256(memoryview(np.ascontiguousarray(t).reshape(-1).view(np.uint8))).hexdigest()


def _unpack(path, what: str, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if data.ndim != 1:
        raise ArtifactError(f"{path}: {what} is not a 1-D packed stream: the file is corrupt")
    if math.prod(shape) > 8 * data.size:  # every packed code takes at least one bit: nothing sized by the header
        raise ArtifactError(f"{path}: {what}: {data.size} bytes cannot hold {math.prod(shape)} codes: corrupt file")
    try:
        return sideinfo.unpack(data, math.prod(shape)).reshape(shape)
    except ValueError as e:
        raise ArtifactError(f"{path}: {what}: {e}: the file is corrupt") from None


def _coded_entry(name: str, c: CodedTensor) -> tuple[dict[str, Storable], dict]:
    """A coded matrix's stored pieces and its header entry."""
    pieces: dict[str, Storable] = {f"{name}::bitstream": c.bitstream}
    scale, scale_lo = sideinfo.to_codes(c.scale) if c.spec.compact else (c.scale, None)
    if c.spec.compact and c.spec.packed:
        scale = sideinfo.pack(scale)
    pieces[f"{name}::scale"] = torch.from_numpy(np.ascontiguousarray(scale))
    sums = {"bitstream": _sha(c.bitstream), "scale": _sha(scale)}
    if c.decoded_sha256 is not None:
        sums["decoded"] = c.decoded_sha256
    if not c.spec.compact or np.any(c.offset):  # compact: offsets only where stored (quant.py)
        pieces[f"{name}::offset"] = torch.from_numpy(np.ascontiguousarray(c.offset))
        sums["offset"] = _sha(c.offset)
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
        sums["col_scale"] = _sha(cols)
    return pieces, entry


def _raw_entry(art: Artifact, name: str, sha: bool = True) -> tuple[dict[str, Storable], dict]:
    r = art.raw[name]
    entry = {
        "kind": "raw",
        "shape": list(r.shape),
        "dtype": str(r.dtype).removeprefix("torch."),
        # a lazy tensor is read here and again when written
        "sha256": {"raw": _sha(materialize(r)) if sha else "0" * 64},
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
    header = _header(art, version, index, {f: _sha(d) for f, d in files.items()})
    path = outputs.check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs.clean_stale(path.parent, path.name)  # a killed writer's temporary of this artifact
    fd, tmp = tempfile.mkstemp(prefix=outputs.temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        text = json.dumps(header)
        write_safetensors(tmp, tensors, {FORMAT_NAME: text, HEADER_SHA_KEY: _sha(text.encode())})
        outputs.honour_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
    head = _safetensors_header(infos, meta, start=10**15)
    return 8 + len(head) + 8 + 8 * len(coded)


_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip


Storable = torch.Tensor | LazyTensor | bytes  # bytes are stored as a 1-D uint8 tensor


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Storable], metadata: dict[str, str]) -> None:
    """Write a standard safetensors file, streaming, with a canonical (sorted) header.

    ``safetensors.torch.save_file`` would copy every tensor into one bytes object first (the
    model's largest tensor again on top of peak memory) and writes its metadata map in hash
    order, so two writes of the same artifact differed; here each tensor's bytes go straight to
    the file (a lazy tensor is read just then) and the same content gives the same bytes.
    The safetensors library reads the file back.
    """

    def info(v: Storable) -> tuple[torch.dtype, list[int], int]:
        if isinstance(v, bytes):
            return torch.uint8, [len(v)], 1
        return v.dtype, list(v.shape), v.element_size()

    infos = {n: info(v) for n, v in tensors.items()}
    names = _layout_order(infos)
    text = _safetensors_header(infos, metadata)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for n in names:
            v = tensors[n]
            if isinstance(v, bytes):
                f.write(v)
                continue
            t = materialize(v)
            if (t.dtype, list(t.shape)) != infos[n][:2]:
                raise ValueError(f"tensor {n!r} changed while the artifact was written")
            if t.numel():
                # a byte view of the tensor's own memory: no copy (works for bf16/fp8 too)
                f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            del t


def _layout_order(infos: dict[str, tuple]) -> list[str]:
    # widest dtypes first, as safetensors itself lays them out, so every tensor stays aligned
    return sorted(infos, key=lambda n: (-infos[n][2], n))


def _safetensors_header(infos: dict[str, tuple], metadata: dict[str, str], start: int = 0) -> bytes:
    """The JSON header of a safetensors file of tensors (dtype, shape, itemsize), padded to 8 bytes
    (``start``: where the first tensor's data begins, 0 in a real file)."""
    head: dict[str, dict] = {"__metadata__": dict(sorted(metadata.items()))}  # type: ignore[dict-item]
    pos = start
    for n in _layout_order(infos):
        dtype, shape, itemsize = infos[n]
        if dtype not in _ST_DTYPES:
            raise ValueError(f"tensor {n!r}: dtype {dtype} cannot be stored")
        size = math.prod(shape) * itemsize
        head[n] = {"dtype": _ST_DTYPES[dtype], "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    text = json.dumps(head, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)  # the data starts 8-byte aligned


class _Bad(Exception):
    """A header field is malformed; turned into an ArtifactError naming where."""


def _is_int(x, lo: int = 0, hi: int = MAX_DIM) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _is_num(x) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    # JSON ints can be arbitrarily large: np.isfinite raises on those instead of saying no
    return math.isfinite(x) if isinstance(x, float) else abs(x) <= sys.float_info.max


def _is_sha(x) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Bad(what)


def _check_shas(e: dict, keys: tuple[str, ...]) -> None:
    s = e.get("sha256")
    _need(isinstance(s, dict) and all(_is_sha(s.get(k)) for k in keys), "bad or missing checksums")


def _check_layout(d, shape: list[int], block: int | None = None, block_cols: int | None = None) -> FrameLayout:
    fields = FrameLayout.__dataclass_fields__
    _need(isinstance(d, dict) and set(d) == set(fields), "layout has the wrong fields")
    ints = {k: v for k, v in d.items() if k != "packing"}
    _need(all(_is_int(v, 1) for v in ints.values()), "layout sizes must be positive integers")
    _need(d["packing"] in PACKINGS, f"unknown plane packing {d['packing']!r}")
    lay = FrameLayout(**d)
    # coefficient domain: blocks padded whole, then spread on a checkerboard (coefdomain.spread)
    want = [2 * x for x in padded_shape(shape[0], shape[1], block, block_cols)] if block else shape
    _need([lay.rows, lay.cols] == want, "layout does not match the shape")
    if block:
        _need(lay.packing == "luma" and lay.tile_h % (2 * block) == 0 and lay.tile_w % (2 * block) == 0,
              "tiles split blocks")
    # The tiles must cover the matrix exactly, and fit (with bounded padding) in the frames.
    _need(lay.tiles_y * lay.tile_h >= lay.rows > (lay.tiles_y - 1) * lay.tile_h, "layout rows do not tile the shape")
    _need(lay.tiles_x * lay.tile_w >= lay.cols > (lay.tiles_x - 1) * lay.tile_w, "layout columns do not tile it")
    _need(lay.tile_w <= lay.frame_w < lay.tile_w + MAX_PAD, "frame width does not fit the tile")
    _need(rows_per_frame(lay.frame_h, lay.packing) >= lay.tile_h, "frame height does not fit the tile")
    _need(lay.frame_h < lay.tile_h + MAX_PAD, "frame height does not fit the tile")
    if lay.packing == "yuv420":
        _need(lay.frame_h % 4 == 0 and lay.frame_w % 2 == 0, "yuv420 frames need a height of 4k and even width")
    _need(lay.n_frames * lay.frame_h * lay.frame_w <= limits.MAX_FRAME_SAMPLES,
          f"frames of more than {limits.MAX_FRAME_SAMPLES} samples (the limit)")
    return lay


def _check_recon(rc, block) -> None:
    if rc is None:
        return
    _need(block is not None, "a reconstruction table outside the coefficient domain")
    _need(isinstance(rc, dict) and set(rc) == {"step", "offsets"}, "reconstruction table is not {step, offsets}")
    # a real step is a few sample units or more (quant.fit_recon); far smaller ones only come from a bad file
    _need(_is_num(rc["step"]) and 2**-10 <= rc["step"] < 2**20, "reconstruction step is not a number in [2^-10, 2^20)")
    offs = rc["offsets"]
    _need(isinstance(offs, list) and len(offs) <= RECON_LEVELS, f"reconstruction offsets: at most {RECON_LEVELS}")
    _need(all(_is_num(x) and abs(x) <= 0.5 for x in offs), "reconstruction offsets must be numbers in [-0.5, 0.5]")


def _check_entry(
    name: str, e, version: int = FORMAT_VERSION, bits: int | None = None, packing: str | None = None
) -> None:
    """``bits``, ``packing``: the sample depth of the header's pixel format and its profile's packing,
    which every coded tensor must share."""
    _need(isinstance(e, dict), "entry is not an object")
    kind = e.get("kind")
    if kind == "coded":
        shape = e.get("shape")
        _need(isinstance(shape, list) and len(shape) == 2 and all(_is_int(x, 1) for x in shape), "bad shape")
        _need(shape[0] * shape[1] <= limits.MAX_TENSOR_ELEMENTS,
              f"a coded matrix of more than {limits.MAX_TENSOR_ELEMENTS} elements (the limit)")
        _need(e.get("dtype") in CODED_DTYPES, f"dtype {e.get('dtype')!r} is not one of {', '.join(CODED_DTYPES)}")
        _need(e.get("qp") is None or _is_int(e["qp"], -1024, 1024), "QP is not an integer or null")
        qz = e.get("quant")
        _need(isinstance(qz, dict) and _is_int(qz.get("bits"), 1, 16), "quantization bits must be 1..16")
        _need(qz.get("group") is None or _is_int(qz["group"], 1), "quantization group must be positive or null")
        block = qz.get("block")
        _need(block is None or _is_int(block, 2, 1024), "bad transform block size")
        block_cols = qz.get("block_cols")
        _need(block_cols is None or (block is not None and _is_int(block_cols, 1, block)),
              "block_cols must be an integer in 1..block, with a block")
        _check_layout(e.get("layout"), shape, block, block_cols)
        _need(isinstance(qz.get("shared_scale", False), bool), "shared_scale must be true or false")
        compact = qz.get("compact", False)
        _need(isinstance(compact, bool), "compact must be true or false")
        _need(not compact or block is not None, "compact side information outside the coefficient domain")
        _need(not compact or _is_int(qz.get("scale_lo"), *LO_RANGE), "scale_lo is not an integer")
        _need(e.get("col_lo") is None or _is_int(e["col_lo"], *LO_RANGE), "col_lo is not an integer")
        _need(isinstance(qz.get("packed", False), bool), "packed must be true or false")
        _need(_is_int(e.get("bits"), 0, 2**62), "bit count is not a non-negative integer")
        _need(e.get("rel_error") is None or (_is_num(e["rel_error"]) and e["rel_error"] >= 0), "bad rel_error")
        _need(e.get("rotation") is None or _is_int(e["rotation"], 0, 2**32 - 1), "rotation seed is not 0..2**32-1")
        _need(e.get("compand") is None or (_is_num(e["compand"]) and 0 < e["compand"] <= 1), "compand not in (0, 1]")
        _check_recon(e.get("recon"), block)
        has_cols = isinstance(e.get("sha256"), dict) and "col_scale" in e["sha256"]
        _need(e.get("col_lo") is None or has_cols, "col_lo without column multipliers")
        has_offsets = not compact or (isinstance(e.get("sha256"), dict) and "offset" in e["sha256"])
        optional = (("offset",) if has_offsets else ()) + (("col_scale",) if has_cols else ())
        digest = ("decoded",) if version >= DIGEST_FROM_VERSION else ()
        _check_shas(e, ("bitstream", "scale", *optional, *digest))
        _need(bits is None or qz["bits"] == bits,
              f"quantization to {qz['bits']} bits, but the pixel format holds {bits}-bit samples")
        _need(packing is None or e["layout"]["packing"] == packing,
              f"plane packing {e['layout']['packing']!r}, but the profile packs {packing!r}")
    elif kind == "raw":
        shape = e.get("shape")
        _need(isinstance(shape, list) and all(_is_int(x, 0) for x in shape), "bad shape")
        _need(e.get("dtype") in RAW_DTYPES, f"dtype {e.get('dtype')!r} is not allowed")
        _need(e.get("source_dtype") is None or e["source_dtype"] in CODED_DTYPES, "bad source dtype")
        _check_shas(e, ("raw",))
    elif kind == "stack":
        shape = e.get("shape")
        _need(isinstance(shape, list) and len(shape) >= 3 and all(_is_int(x, 1) for x in shape), "bad stack shape")
        _need(math.prod(shape[:-2]) <= MAX_STACK, f"a stack of more than {MAX_STACK} matrices")
        _need(e.get("dtype") in RAW_DTYPES, f"dtype {e.get('dtype')!r} is not allowed")
    elif kind == "alias":
        _need(isinstance(e.get("of"), str) and e["of"] != name, "alias target is not another tensor's name")
    else:
        raise _Bad(f"unknown kind {kind!r}")


# Stored files may not be what the restore writes itself, nor weights that a loader would read
# instead of the restored ones (a stored model.safetensors would shadow every decoded weight).
RESERVED_FILES = ("config.json",)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".pkl",
                   ".pickle", ".npz", ".npy", ".tflite", ".ot")


def file_name_problem(f, shard: bool = False) -> str | None:
    """Why ``f`` cannot be a stored file's name (written into the restored folder), or None;
    ``shard``: the name of a safetensors shard the restore writes from the decoded weights."""
    if not isinstance(f, str) or not f:
        return "not a non-empty string"
    if f != Path(f).name or f in (".", "..") or "\\" in f or "/" in f:
        return "not a plain file name"
    if f.startswith("."):
        return "a hidden file"
    if any(unicodedata.category(ch)[0] == "C" for ch in f):
        return "control or invisible characters"
    if len(f.encode("utf-8", "surrogatepass")) > limits.MAX_FILE_NAME_BYTES:
        return f"longer than {limits.MAX_FILE_NAME_BYTES} bytes"
    low = f.lower()
    if shard:
        return None if low.endswith(".safetensors") else "not a *.safetensors name"
    if low in RESERVED_FILES:
        return "written by the restore itself (from the header's config)"
    if low.endswith(WEIGHT_SUFFIXES) or ".index." in low or low.endswith(".index"):
        return "a weight or index file (the weights come from the bitstreams)"
    return None


def _safe_file_name(f) -> bool:
    return file_name_problem(f) is None


def _str_map(d) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())


def _check_checkpoint(cp, tensors) -> None:
    """The optional on-disk layout of the source: shard files (plain names) holding tensors the
    file has, each listed once, in a dtype a restored tensor can take."""
    if cp is None:
        return
    _need(isinstance(cp, dict) and isinstance(cp.get("shards"), dict) and cp["shards"], "checkpoint layout")
    _need(cp.get("index") is None or isinstance(cp["index"], dict), "checkpoint index metadata")
    seen: set[str] = set()
    for f, e in cp["shards"].items():
        _need(file_name_problem(f, shard=True) is None, "checkpoint shard name (a plain *.safetensors name)")
        _need(isinstance(e, dict) and _str_map(e.get("metadata")) and _str_map(e.get("tensors")), "checkpoint shard")
        for n, d in e["tensors"].items():
            _need(d in RAW_DTYPES, f"checkpoint dtype {d!r} of {n!r}")
            _need(n not in seen and isinstance(tensors, dict) and n in tensors, f"checkpoint tensor {n!r}")
            seen.add(n)


def validate_header(header: dict) -> None:
    """Check the type and consistency of every field a reader uses; raises ArtifactError (no path)."""
    try:
        c = header["codec"]
        _need(isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("name", "encoder", "format")), "codec")
        p = c.get("profile")
        _need(isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("pix_fmt"), str), "profile")
        _need(p.get("preset") is None or isinstance(p["preset"], str), "profile preset")
        _need(isinstance(p.get("intra"), bool) and p.get("packing") in PACKINGS, "profile intra/packing")
        opts = p.get("options")
        _need(c["name"] in CODECS, f"codec: {quoted(c['name'])} is not a codec this llmcodec has")
        _need(c["encoder"] == CODECS[c["name"]].encoder,
              f"codec: encoder {quoted(c['encoder'])} is not the {c['name']} codec's")
        _need(p["pix_fmt"] in CODECS[c["name"]].pix_fmts,
              f"profile: pixel format {quoted(p['pix_fmt'])} is not one the {c['name']} codec takes")
        _need(p.get("packing") != "yuv420" or PIX_FMTS[p["pix_fmt"]][1] == (2, 2),
              "profile: yuv420 packing needs a 4:2:0 pixel format")
        _need(isinstance(opts, list) and all(isinstance(o, list) and len(o) == 2 for o in opts), "profile options")
        _need(all(isinstance(x, str) for o in opts for x in o), "profile options")
        _need(isinstance(header["settings"], dict), "settings")
        m = header["model"]
        _need(isinstance(m, dict) and (m.get("config") is None or isinstance(m["config"], dict)), "model config")
        files = m.get("files", {})
        _need(isinstance(files, dict) and all(_is_sha(s) for s in files.values()), "model file list")
        for f in files:
            why = file_name_problem(f)
            _need(why is None, f"model file list: stored file {quoted(f)} is {why}")
        _check_checkpoint(m.get("checkpoint"), header["tensors"])
        st = header["stats"]
        _need(isinstance(st, dict) and all(_is_num(st.get(k)) for k in STATS_KEYS), "stats")
        _need(isinstance(header["tensors"], dict), "tensor index")
    except _Bad as e:
        raise ArtifactError(f"the llmcodec header has a malformed {e}") from None
    version = header.get("format_version", FORMAT_VERSION)
    bits = bit_depth(p["pix_fmt"])
    for name, e in header["tensors"].items():
        try:
            _check_entry(name, e, version, bits, p["packing"])
        except _Bad as err:
            raise ArtifactError(f"tensor {name!r}: the header entry is malformed ({err})") from None
    total = sum(e["shape"][0] * e["shape"][1] for e in header["tensors"].values() if e["kind"] == "coded")
    if total > limits.MAX_TOTAL_ELEMENTS:
        raise ArtifactError(f"the header declares {total} coded weights, over the {limits.MAX_TOTAL_ELEMENTS} limit")
    for name, e in header["tensors"].items():
        if e["kind"] == "alias":
            target = header["tensors"].get(e["of"])
            if target is None or target["kind"] in ("alias", "stack"):
                raise ArtifactError(f"tensor {name!r} is tied to {e['of']!r}, which the file does not hold")
        if e["kind"] == "stack":
            for m in stacks.member_names(name, e["shape"]):
                me = header["tensors"].get(m)
                if me is None or me["kind"] not in ("coded", "raw") or me["shape"] != e["shape"][-2:]:
                    raise ArtifactError(f"tensor {name!r}: its matrix {m!r} is missing or malformed")


def _check_frame(path: Path) -> None:
    """The 8-byte safetensors header size must be sane before anything is parsed."""
    size = path.stat().st_size
    if size < 8:
        raise ArtifactError(f"{path}: not an llmcodec artifact (only {size} bytes; the file is truncated or empty)")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise ArtifactError(f"{path}: corrupt header (declares {n} header bytes, over the {MAX_HEADER_BYTES} cap)")
        if 8 + n > size:
            raise ArtifactError(f"{path}: truncated (the header declares {n} bytes, only {size - 8} follow)")
        text = f.read(n)
    # safetensors' own parser keeps the last of two equal keys: a second entry could hide the first
    try:
        strict_json(text)
    except ValueError as e:
        raise ArtifactError(f"{path}: corrupt safetensors header ({e})") from None


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(f"the key {quoted(dup)} appears twice")
    return d


def strict_json(text: str | bytes):
    """``json.loads`` that refuses duplicate keys in any object (ValueError)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError as e:
        raise ValueError(f"nested too deeply ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e})") from None


def read_header(path: str | os.PathLike) -> dict:
    """Parse and check the header only (cheap: no tensor data is read)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    _check_frame(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, MemoryError) as e:
        raise ArtifactError(f"{path}: not a readable llmcodec artifact (safetensors: {e})") from None
    if FORMAT_NAME not in meta:
        raise ArtifactError(f"{path}: a safetensors file, but not an llmcodec artifact (no '{FORMAT_NAME}' header)")
    text = meta[FORMAT_NAME]
    try:
        header = strict_json(text)
    except ValueError as e:
        raise ArtifactError(f"{path}: the llmcodec header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: the llmcodec header is malformed")
    ver = header.get("format_version")
    if not _is_int(ver, 1):
        raise ArtifactError(f"{path}: the llmcodec header has no format version")
    if ver > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: made by a newer llmcodec (format version {ver}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade llmcodec"
        )
    sha = meta.get(HEADER_SHA_KEY)
    if sha is None and ver >= 2:
        raise ArtifactError(f"{path}: the llmcodec header has no checksum: the file is corrupt")
    if sha is not None and _sha(text.encode()) != sha:
        raise ArtifactError(f"{path}: checksum mismatch in the llmcodec header: the file is corrupt")
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ArtifactError(f"{path}: the llmcodec header lacks {', '.join(missing)}")
    try:
        validate_header(header)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    return header


def piece_bytes(path: str | os.PathLike) -> dict[str, int]:
    """Each stored piece's size in bytes (``name::bitstream``, ``file::tokenizer.json``, ...), from
    the safetensors header alone (checked first by ``read_header``)."""
    read_header(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(n))
    out = {}
    for k, v in head.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = int(b) - int(a)
    return out


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


MAX_FILE_BYTES = 2**30  # a model file (tokenizer, config) decompressed: far above any real one


def _unxz(path, fname: str, data: bytes) -> bytes:
    d = lzma.LZMADecompressor()
    try:
        out = d.decompress(data, max_length=MAX_FILE_BYTES)
    except lzma.LZMAError as e:
        raise ArtifactError(f"{path}: model file {fname!r} does not decompress ({e}): the file is corrupt") from None
    if not d.eof:
        raise ArtifactError(f"{path}: model file {fname!r} is truncated or over {MAX_FILE_BYTES} bytes decompressed")
    return out


def read(path: str | os.PathLike) -> Artifact:
    """Read and verify a whole artifact; raises ArtifactError naming the first bad tensor."""
    header = read_header(path)
    art = Artifact(
        codec=header["codec"],
        settings=header["settings"],
        config=header["model"].get("config"),
        checkpoint=header["model"].get("checkpoint"),
    )
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())

            def get(key: str, what: str, sha: str, dtype: str, shape: tuple[int, ...] | None) -> torch.Tensor:
                if key not in keys:
                    raise ArtifactError(f"{path}: {what} is missing from the file")
                t = f.get_tensor(key)
                if _dtype_name(t) != dtype or (shape is not None and tuple(t.shape) != shape):
                    raise ArtifactError(
                        f"{path}: {what} is stored as {_dtype_name(t)} {tuple(t.shape)}, the header says "
                        f"{dtype} {shape}: the file is corrupt"
                    )
                if _sha(t) != sha:
                    raise ArtifactError(f"{path}: checksum mismatch in {what}: the file is corrupt")
                return t

            for name, e in header["tensors"].items():
                if e["kind"] == "stack":
                    art.stacks[name] = tuple(e["shape"])
            members = art.members()
            for name, e in header["tensors"].items():
                if name not in members:
                    art.order.append(name)
                kind = e["kind"]
                if kind == "stack":
                    continue
                if kind == "coded":
                    sums = e["sha256"]
                    shape = (e["shape"][0], e["shape"][1])
                    spec = QuantSpec(
                        bits=e["quant"]["bits"],
                        group=e["quant"]["group"],
                        shared_scale=e["quant"].get("shared_scale", False),
                        block=e["quant"].get("block"),
                        block_cols=e["quant"].get("block_cols"),
                        compact=e["quant"].get("compact", False),
                        packed=e["quant"].get("packed", False),
                    )
                    side = (shape[0], group_count(shape[1], spec.group))
                    bs = get(f"{name}::bitstream", f"tensor {name!r} (bitstream)", sums["bitstream"], "uint8", None)
                    if bs.ndim != 1 or bs.numel() == 0:
                        raise ArtifactError(f"{path}: tensor {name!r} (bitstream) is empty or not 1-D: corrupt file")
                    what = f"tensor {name!r} (scale)"
                    if spec.compact:
                        codes = get(f"{name}::scale", what, sums["scale"], "uint8", None if spec.packed else side)
                        codes = codes.numpy()
                        if spec.packed:
                            codes = _unpack(path, what, codes, side)
                        scale = sideinfo.from_codes(codes, e["quant"]["scale_lo"])
                    else:
                        scale = get(f"{name}::scale", what, sums["scale"], "float16", side).numpy()
                    what = f"tensor {name!r} (offset)"
                    if "offset" in sums or not spec.compact:
                        offset = get(f"{name}::offset", what, sums["offset"], "float16", side).numpy()
                    else:
                        offset = np.zeros(side, np.float16)
                    col_scale = None
                    if "col_scale" in sums:
                        what = f"tensor {name!r} (column scales)"
                        if e.get("col_lo") is not None:
                            codes = get(f"{name}::colscale", what, sums["col_scale"], "uint8",
                                        None if spec.packed else (shape[1],)).numpy()
                            if spec.packed:
                                codes = _unpack(path, what, codes, (shape[1],))
                            col_scale = sideinfo.from_codes(codes, e["col_lo"])
                        else:
                            t = get(f"{name}::colscale", what, sums["col_scale"], "float16", (shape[1],))
                            col_scale = t.numpy()
                        if not (np.isfinite(col_scale).all() and (col_scale > 0).all()):
                            raise ArtifactError(f"{path}: {what} are not all positive and finite: corrupt file")
                    art.coded[name] = CodedTensor(
                        name,
                        shape,
                        e["dtype"],
                        e["qp"],
                        FrameLayout(**e["layout"]),
                        spec,
                        bs.numpy().tobytes(),
                        scale,
                        offset,
                        e.get("rel_error"),
                        col_scale,
                        e.get("rotation"),
                        e.get("compand"),
                        None if e.get("recon") is None else Recon(e["recon"]["step"], tuple(e["recon"]["offsets"])),
                        sums.get("decoded"),
                    )
                elif kind == "raw":
                    key, what = f"{name}::raw", f"tensor {name!r}"
                    art.raw[name] = get(key, what, e["sha256"]["raw"], e["dtype"], tuple(e["shape"]))
                    if e.get("source_dtype") is not None:
                        art.source_dtypes[name] = e["source_dtype"]
                else:
                    art.aliases[name] = e["of"]
            packed = header["model"].get("files_codec")
            if packed not in (None, FILES_CODEC):
                raise ArtifactError(f"{path}: model files stored as {packed!r}, which this llmcodec cannot read")
            for fname, sha in header["model"].get("files", {}).items():
                t = get(f"file::{fname}", f"model file {fname!r}", sha, "uint8", None)
                data = t.numpy().tobytes()
                art.files[fname] = _unxz(path, fname, data) if packed else data
    except ArtifactError:
        raise
    except (SafetensorError, KeyError, TypeError, ValueError, IndexError, OSError, MemoryError, RuntimeError,
            lzma.LZMAError) as e:
        raise ArtifactError(f"{path}: the artifact is corrupt or truncated ({type(e).__name__}: {e})") from None
    return art

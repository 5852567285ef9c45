"""Reading an artifact: the header first (sizes, format, checksum, ``validate_header``), then every piece,
checked against the header's dtype, shape and checksum before it is used.
"""

from __future__ import annotations

import json
import lzma
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from . import sideinfo
from .artifact_check import is_int, validate_header
from .artifact_format import (
    FILES_CODEC,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEYS,
    HEADER_SHA_KEY,
    MAX_HEADER_BYTES,
    Artifact,
    ArtifactError,
    digest,
)
from .coder import CodedTensor
from .frames import FrameLayout
from .quant import QuantSpec, Recon, group_count
from .untrusted import strict_json


def _unpack(path, what: str, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if data.ndim != 1:
        raise ArtifactError(f"{path}: {what} is not a 1-D packed stream: the file is corrupt")
    if math.prod(shape) > 8 * data.size:  # every packed code takes at least one bit: nothing sized by the header
        raise ArtifactError(f"{path}: {what}: {data.size} bytes cannot hold {math.prod(shape)} codes: corrupt file")
    try:
        return sideinfo.unpack(data, math.prod(shape)).reshape(shape)
    except ValueError as e:
        raise ArtifactError(f"{path}: {what}: {e}: the file is corrupt") from None


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
    if not is_int(ver, 1):
        raise ArtifactError(f"{path}: the llmcodec header has no format version")
    if ver > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: made by a newer llmcodec (format version {ver}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade llmcodec"
        )
    sha = meta.get(HEADER_SHA_KEY)
    if sha is None and ver >= 2:
        raise ArtifactError(f"{path}: the llmcodec header has no checksum: the file is corrupt")
    if sha is not None and digest(text.encode()) != sha:
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
                if digest(t) != sha:
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

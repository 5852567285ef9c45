"""Checks of an artifact's header: the type, range and consistency of every field a reader uses.

Readers never trust the file: ``validate_header`` runs before any tensor is read, and anything wrong is
an :class:`ArtifactError` naming the field or the tensor.
"""

from __future__ import annotations

import math
import sys
import unicodedata
from pathlib import Path

from . import limits, stacks
from .artifact_format import (
    CODED_DTYPES,
    DIGEST_FROM_VERSION,
    FORMAT_VERSION,
    LO_RANGE,
    MAX_DIM,
    MAX_PAD,
    MAX_STACK,
    RAW_DTYPES,
    STATS_KEYS,
    ArtifactError,
)
from .codecs.base import PIX_FMTS, bit_depth
from .codecs.registry import CODECS
from .coefdomain import padded_shape
from .frames import PACKINGS, FrameLayout, rows_per_frame
from .quant import RECON_LEVELS
from .untrusted import quoted


class _Bad(Exception):
    """A header field is malformed; turned into an ArtifactError naming where."""


def is_int(x, lo: int = 0, hi: int = MAX_DIM) -> bool:
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
    _need(all(is_int(v, 1) for v in ints.values()), "layout sizes must be positive integers")
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
        _need(isinstance(shape, list) and len(shape) == 2 and all(is_int(x, 1) for x in shape), "bad shape")
        _need(shape[0] * shape[1] <= limits.MAX_TENSOR_ELEMENTS,
              f"a coded matrix of more than {limits.MAX_TENSOR_ELEMENTS} elements (the limit)")
        _need(e.get("dtype") in CODED_DTYPES, f"dtype {e.get('dtype')!r} is not one of {', '.join(CODED_DTYPES)}")
        _need(e.get("qp") is None or is_int(e["qp"], -1024, 1024), "QP is not an integer or null")
        qz = e.get("quant")
        _need(isinstance(qz, dict) and is_int(qz.get("bits"), 1, 16), "quantization bits must be 1..16")
        _need(qz.get("group") is None or is_int(qz["group"], 1), "quantization group must be positive or null")
        block = qz.get("block")
        _need(block is None or is_int(block, 2, 1024), "bad transform block size")
        block_cols = qz.get("block_cols")
        _need(block_cols is None or (block is not None and is_int(block_cols, 1, block)),
              "block_cols must be an integer in 1..block, with a block")
        _check_layout(e.get("layout"), shape, block, block_cols)
        _need(isinstance(qz.get("shared_scale", False), bool), "shared_scale must be true or false")
        compact = qz.get("compact", False)
        _need(isinstance(compact, bool), "compact must be true or false")
        _need(not compact or block is not None, "compact side information outside the coefficient domain")
        _need(not compact or is_int(qz.get("scale_lo"), *LO_RANGE), "scale_lo is not an integer")
        _need(e.get("col_lo") is None or is_int(e["col_lo"], *LO_RANGE), "col_lo is not an integer")
        _need(isinstance(qz.get("packed", False), bool), "packed must be true or false")
        _need(is_int(e.get("bits"), 0, 2**62), "bit count is not a non-negative integer")
        _need(e.get("rel_error") is None or (_is_num(e["rel_error"]) and e["rel_error"] >= 0), "bad rel_error")
        _need(e.get("rotation") is None or is_int(e["rotation"], 0, 2**32 - 1), "rotation seed is not 0..2**32-1")
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
        _need(isinstance(shape, list) and all(is_int(x, 0) for x in shape), "bad shape")
        _need(e.get("dtype") in RAW_DTYPES, f"dtype {e.get('dtype')!r} is not allowed")
        _need(e.get("source_dtype") is None or e["source_dtype"] in CODED_DTYPES, "bad source dtype")
        _check_shas(e, ("raw",))
    elif kind == "stack":
        shape = e.get("shape")
        _need(isinstance(shape, list) and len(shape) >= 3 and all(is_int(x, 1) for x in shape), "bad stack shape")
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

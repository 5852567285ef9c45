"""Code one weight matrix: quantize, lay out as frames, encode at a QP, and the exact inverse."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import sideinfo
from .codecs.base import CodecError, FFmpegCodec, Profile
from .coefdomain import gather, padded_shape, spread
from .frames import FrameLayout, from_frames, to_frames
from .quant import (
    Quantized,
    QuantSpec,
    Recon,
    affine_bits,
    dequantize,
    expand,
    fit_recon,
    quantize,
    raw_units,
    refit,
    relative_error,
    sum_sq_diff,
    unit_values,
)
from .rotation import unrotate


@dataclass
class Prepared:
    """A matrix quantized to the codec's sample range and laid out as frames, ready for any QP."""

    name: str
    quantized: Quantized
    layout: FrameLayout
    frames: list[list[np.ndarray]]
    col_scale: np.ndarray | None = None  # fp16 column multipliers applied before quantizing

    @property
    def numel(self) -> int:
        return int(np.prod(self.quantized.shape or self.quantized.q.shape))


@dataclass
class CodedTensor:
    """What the artifact stores for a lossily coded matrix."""

    name: str
    shape: tuple[int, int]
    dtype: str  # the source dtype, restored on load
    qp: int | None
    layout: FrameLayout
    spec: QuantSpec
    bitstream: bytes
    scale: np.ndarray
    offset: np.ndarray
    rel_error: float | None = None  # measured by decoding right after encoding
    col_scale: np.ndarray | None = None  # fp16; the matrix coded was W * col_scale (per column)
    rotation: int | None = None  # seed of the rotation applied before coding (rotation.py)
    compand: float | None = None  # exponent p: the values coded were sign(w) |w|^p (quant.compand)
    recon: Recon | None = None  # where decoded levels are restored (coefficient domain; quant.Recon)
    # SHA-256 of the decoded integer matrix (``samples_digest``), taken when the compressor checked
    # it: every later decode must give the same integers (the decoder is deterministic).
    decoded_sha256: str | None = None

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def side_bits(self) -> int:
        """Scales (and offsets) per row or group, column multipliers and the reconstruction table
        if any."""
        recon = 0 if self.recon is None else self.recon.bits
        return affine_bits(self.scale, self.offset, self.spec) + column_bits(self.col_scale, self.spec.packed) + recon

    @property
    def bits(self) -> int:
        """Bitstream plus side information."""
        return 8 * len(self.bitstream) + self.side_bits


def column_bits(col_scale: np.ndarray | None, packed: bool) -> int:
    """Bits stored for column multipliers: fp16 ones as fp16, the others as log codes (``packed``:
    sideinfo.pack; else a byte each)."""
    if col_scale is None:
        return 0
    return sideinfo.bits(col_scale, packed) if sideinfo.log_coded(col_scale) else 16 * col_scale.size


def quant_spec(
    codec: FFmpegCodec, profile: Profile, group: int | None = None, shared_scale: bool = False, compact: bool = False,
    packed: bool = False,
) -> QuantSpec:
    """The quantizer a profile of a codec codes with: its sample depth and, in the coefficient domain,
    its transform blocks (``compact``: 8-bit log scales and no offsets there; ``packed``: log codes
    stored packed)."""
    return QuantSpec(
        bits=codec.sample_bits(profile),
        group=group,
        shared_scale=shared_scale,
        block=profile.coef_block,
        compact=compact and profile.coef_block is not None,
        block_cols=profile.coef_cols if profile.coef_block else None,
        packed=packed,
    )


def prepare(
    name: str,
    w: np.ndarray,
    codec: FFmpegCodec,
    profile: Profile,
    group: int | None,
    shared_scale: bool = False,
    col_scale: np.ndarray | None = None,
    compact: bool = False,
    packed: bool = False,
    known: tuple[np.ndarray, np.ndarray] | None = None,
    row_step: np.ndarray | None = None,
    frames: bool = True,
    levels: bool = True,
) -> Prepared:
    """``compact``: 8-bit log scales and no offsets (``QuantSpec.compact``) where the profile codes in
    the coefficient domain; the sample domain keeps fp16 scale and offset. ``known``: the scale and
    offset an earlier ``prepare`` of this matrix chose (``quant.side_of``; coefficient domain).
    ``row_step``: per-row step factors (``quant.quantize``; coefficient domain only, ignored in the
    sample domain). ``frames=False``: the quantized matrix and its layout only, no frames (what a
    check of a decoded stream needs). ``levels=False`` (coefficient domain; no frames): the scale and
    offset only (``quant.quantize``), what a scan needs."""
    spec = quant_spec(codec, profile, group, shared_scale, compact, packed)
    if col_scale is not None:
        if col_scale.shape != (w.shape[1],):
            raise ValueError(f"tensor {name!r}: {col_scale.size} column scales for {w.shape[1]} columns")
        w = scaled_columns(w, col_scale)
    try:
        coef = spec.block is not None
        qz = quantize(w, spec, known if coef else None, row_step if coef else None, levels=levels or not coef)
    except ValueError as e:
        raise ValueError(f"tensor {name!r}: {e}") from None
    if not levels and coef:
        return Prepared(name, qz, frame_layout(*w.shape, codec, profile), [], col_scale)
    if not frames:
        return Prepared(name, qz, frame_layout(*qz.q.shape, codec, profile, padded=True), [], col_scale)
    samples = qz.q if profile.coef_block is None else spread(qz.q, profile.coef_block, 1 << (spec.bits - 1))
    layout = codec.plan(samples.shape[0], samples.shape[1], profile)
    return Prepared(name, qz, layout, to_frames(samples, layout), col_scale)


def frame_layout(rows: int, cols: int, codec: FFmpegCodec, profile: Profile, padded: bool = False) -> FrameLayout:
    """The frame layout ``prepare`` gives a ``rows x cols`` matrix, without quantizing it
    (``padded``: the shape is already the quantized one, whole transform blocks)."""
    if profile.coef_block is not None:
        if not padded:
            rows, cols = padded_shape(rows, cols, profile.coef_block, profile.coef_cols)
        rows, cols = 2 * rows, 2 * cols  # coefdomain.spread's checkerboard
    return codec.plan(rows, cols, profile)


def scaled_columns(w: np.ndarray, col_scale: np.ndarray | None) -> np.ndarray:
    """The matrix the quantizer sees: ``w`` times the column multipliers (undone by ``unscale``)."""
    return w if col_scale is None else w * col_scale.astype(np.float32)[None, :]


def unscale(w_hat: np.ndarray, col_scale: np.ndarray | None) -> np.ndarray:
    """Undo the column multipliers applied before quantization."""
    return w_hat if col_scale is None else w_hat / col_scale.astype(np.float32)[None, :]


def row_sample(w: np.ndarray, fraction: float, chunk: int = 32, min_rows: int = 128) -> np.ndarray:
    """Evenly spaced chunks of whole rows: a cheap stand-in for the matrix when probing rates.

    Rows of a weight matrix are separate output channels, so stacked chunks of them look to an
    encoder much like the whole matrix.
    """
    rows = w.shape[0]
    want = max(min_rows, int(rows * fraction))
    if want >= rows:
        return w
    n_chunks = max(1, want // chunk)
    starts = np.linspace(0, rows - chunk, n_chunks).astype(int)
    return np.concatenate([w[s : s + chunk] for s in starts])


def encode_prepared(p: Prepared, codec: FFmpegCodec, profile: Profile, qp: int | None) -> bytes:
    return codec.encode(p.frames, qp, profile)


def decode_matrix(
    bitstream: bytes, layout: FrameLayout, codec: FFmpegCodec, profile: Profile, block: int | None = None
) -> np.ndarray:
    """The coded integer matrix; ``block``: the coefficient domain's (``QuantSpec.block``), whose
    checkerboard is undone here."""
    samples = from_frames(codec.decode(bitstream, layout, profile), layout)
    return samples if block is None else gather(samples, block)


def samples_digest(q: np.ndarray) -> str:
    """SHA-256 of an integer matrix: its shape, then its samples as little-endian 16-bit integers."""
    h = hashlib.sha256(f"{q.shape[0]}x{q.shape[1]}:".encode())
    h.update(memoryview(np.ascontiguousarray(q, dtype="<u2")).cast("B"))
    return h.hexdigest()


def _decode_named(
    name: str, bitstream: bytes, layout: FrameLayout, codec: FFmpegCodec, profile: Profile, spec: QuantSpec,
    frames: list[list[np.ndarray]] | None = None,
):
    """Decode (or take the ``frames`` already decoded) and check the frames fit the layout and the
    sample range; errors name the tensor."""
    bits = spec.bits
    try:
        if frames is None:
            q_hat = decode_matrix(bitstream, layout, codec, profile, spec.block)
        else:
            samples = from_frames(frames, layout)
            q_hat = samples if spec.block is None else gather(samples, spec.block)
    except (CodecError, ValueError) as e:
        raise CodecError(f"tensor {name!r}: {e}") from None
    if q_hat.max(initial=0) > (1 << bits) - 1:
        raise CodecError(f"tensor {name!r}: decoder returned samples above the {bits}-bit range")
    return q_hat


def max_plausible_rms(q: np.ndarray, qp: int | None) -> float:
    """Largest believable RMS sample error of a decoded matrix against the integers it coded.

    Lossless must be exact. Otherwise: a decoder output unrelated to the input (noise, zeros, another
    tensor's frames, tiles in the wrong order) misses by at least the standard deviation of ``q`` in
    RMS (sqrt(2) x for a shuffle), while an encoder at its worst QP returns about the block means,
    i.e. at most about that deviation.
    """
    if qp is None:
        return 0.0
    return 1.25 * _rms_diff(q, q.mean(dtype=np.float64)) + 2.0


def _rms_diff(a: np.ndarray, b: np.ndarray | float) -> float:
    """RMS of ``a - b`` (in row blocks: no full-size float64 copies of a big matrix)."""
    return float(np.sqrt(sum_sq_diff(a, b) / max(1, a.size)))


def to_weights(w_coded: np.ndarray, rotation: int | None, compand: float | None) -> np.ndarray:
    """Undo the value transforms applied before quantization: companding, then rotation."""
    w = w_coded if compand is None else expand(w_coded, compand)
    return w if rotation is None else unrotate(w, rotation)


def finish(
    p: Prepared,
    w: np.ndarray,
    dtype: str,
    qp: int | None,
    bitstream: bytes,
    codec: FFmpegCodec,
    profile: Profile,
    original: np.ndarray | None = None,
    rotation: int | None = None,
    compand: float | None = None,
    centroids: bool = True,
    frames: list[list[np.ndarray]] | None = None,
) -> CodedTensor:
    """Decode the stream once, check it, and package it; catches a codec returning garbage now.

    ``w`` is the matrix as coded; ``original`` the weights it came from by ``rotation`` and
    ``compand`` (see ``to_weights``), against which the stored relative error is measured.
    ``centroids``: fit a reconstruction table (``quant.fit_recon``) in the coefficient domain.
    ``frames``: the stream already decoded (``finish_many`` decodes several in one process).
    """
    q_hat = _decode_named(p.name, bitstream, p.layout, codec, profile, p.quantized.spec, frames)
    q = p.quantized.q
    rms = _rms_diff(q_hat, q)
    bound = max_plausible_rms(q, qp)
    if rms > bound:
        raise CodecError(
            f"tensor {p.name!r}: the decoded frames are not what was encoded (RMS sample error {rms:.2f} at "
            f"QP {qp}; a working codec stays under {bound:.2f}): the {codec.name} codec returned garbage"
        )
    # Least-squares side information for what the decoder will really see (quant.refit).
    target = scaled_columns(w, p.col_scale)
    qz = p.quantized
    units = raw_units(qz, q_hat)  # one transform for the table, the refit and the check
    values = units
    if qp is not None:
        if centroids:
            qz = replace(qz, recon=fit_recon(qz, q_hat, target, units))
            values = unit_values(qz, units)
        qz = refit(qz, q_hat, target, values)
    restored = to_weights(unscale(dequantize(qz, q_hat, values), p.col_scale), rotation, compand)
    del units, values
    err = relative_error(w if original is None else original, restored)
    if not np.isfinite(err):
        raise CodecError(f"tensor {p.name!r}: decoded weights are not finite")
    return CodedTensor(
        p.name,
        tuple(w.shape),
        dtype,
        qp,
        p.layout,
        p.quantized.spec,
        bitstream,
        qz.scale,
        qz.offset,
        err,
        p.col_scale,
        rotation,
        compand,
        qz.recon,
        samples_digest(q_hat),
    )


def decode_tensor(
    ct: CodedTensor, codec: FFmpegCodec, profile: Profile, frames: list[list[np.ndarray]] | None = None
) -> np.ndarray:
    """CodedTensor -> float32 weights (``frames``: its stream already decoded, see ``decode_tensors``)."""
    q_hat = _decode_named(ct.name, ct.bitstream, ct.layout, codec, profile, ct.spec, frames)
    if ct.decoded_sha256 is not None and samples_digest(q_hat) != ct.decoded_sha256:
        raise CodecError(
            f"tensor {ct.name!r}: the decoder returned other integers than those checked at compression "
            f"(digest mismatch): the {codec.name} decoder or the bitstream differs from the compressor's"
        )
    qz = Quantized(q=q_hat, scale=ct.scale, offset=ct.offset, spec=ct.spec, shape=ct.shape, recon=ct.recon)
    return to_weights(unscale(dequantize(qz), ct.col_scale), ct.rotation, ct.compand)


class _ItemFailed(Exception):
    """An item's own work failed while its batch was decoding (not the decoder process)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def decode_each_or_alone(
    codec: FFmpegCodec, streams: list[bytes], layouts: list[FrameLayout], profile: Profile,
    one: Callable[[int, list | None], None], retry_single: bool = True,
) -> None:
    """``one(k, frames)`` for each stream as one decoder process gives out its frames (one buffer
    reused: ``one`` keeps nothing of them). If that process fails (not ``one``), ``one(k, None)``
    runs for every stream again, each decoded alone, so an error names its tensor; an error of
    ``one`` itself is raised as is. ``retry_single=False``: a lone stream's failure is raised."""

    def guarded(k: int, frames) -> None:
        try:
            one(k, frames)
        except Exception as e:  # noqa: BLE001 - re-raised as is below, not mistaken for the decoder's
            raise _ItemFailed(e) from None

    try:
        codec.decode_each(streams, layouts, profile, guarded, reuse=True)
    except _ItemFailed as f:
        raise f.error from None
    except CodecError:
        if len(streams) < 2 and not retry_single:
            raise
        for k in range(len(streams)):
            one(k, None)


def decode_tensors(
    cts: list[CodedTensor], codec: FFmpegCodec, profile: Profile,
    consume: Callable[[int, np.ndarray], None] | None = None,
) -> list[np.ndarray]:
    """``decode_tensor`` of several tensors with one decoder process (``decode_each_or_alone``),
    each finished as soon as its frames are out. ``consume(k, weights)``: tensor k's weights go
    there as they are ready (and the list returned is empty) instead of being collected.
    If that process fails, each tensor is decoded again on its own (and handed on again), so the
    error names the tensor."""
    out: dict[int, np.ndarray] = {}

    def one(k: int, frames) -> None:
        w = decode_tensor(cts[k], codec, profile, frames)
        if consume is None:
            out[k] = w
        else:
            consume(k, w)

    decode_each_or_alone(codec, [ct.bitstream for ct in cts], [ct.layout for ct in cts], profile, one,
                         retry_single=False)
    return [out[k] for k in sorted(out)]

"""The jobs a worker runs on one matrix: scan it (side information, step sizes), encode it (or its row
sample) at a QP, and decode, check and package the chosen stream. Small, picklable arguments only."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .codecs import FFmpegCodec, Profile, get_codec
from .coder import (
    CodedTensor,
    column_bits,
    decode_each_or_alone,
    encode_prepared,
    finish,
    frame_layout,
    prepare,
    row_sample,
    scaled_columns,
)
from .executors import Lazy
from .feedback import prepare_with_feedback
from .quant import coefficient_counts, compand, group_rms, side_of
from .rotation import rotate


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to code a matrix besides the matrix and the QP; small and picklable."""

    codec: str
    profile: str | None
    group: int | None
    sample_fraction: float
    shared_scale: bool = False
    rotate: bool = False
    compand: float | None = None
    centroids: bool = True
    compact: bool = True
    packed: bool = True

    def resolve(self) -> tuple[FFmpegCodec, Profile]:
        codec = get_codec(self.codec)
        return codec, codec.profile(self.profile)


def rotation_seed(spec: JobSpec, name: str) -> int | None:
    """A tensor's rotation seed (None: not rotated): from its name, so it does not depend on order
    or worker."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") if spec.rotate else None


def _coded_domain(spec: JobSpec, name: str, w: np.ndarray) -> np.ndarray:
    """The matrix the codec sees: ``w``, rotated and/or companded (undone by ``coder.to_weights``)."""
    seed = rotation_seed(spec, name)
    if seed is not None:
        w = rotate(w, seed).astype(np.float32)
    return w if spec.compand is None else compand(w, spec.compand)


Side = tuple[np.ndarray, np.ndarray]  # a matrix's scale and offset from its scan (quant.side_of)


def _prepare(spec: JobSpec, name: str, w: np.ndarray, col_scale: np.ndarray | None, known: Side | None = None,
             row_step: np.ndarray | None = None, frames: bool = True, levels: bool = True):
    codec, profile = spec.resolve()
    p = prepare(name, w, codec, profile, spec.group, spec.shared_scale, col_scale, spec.compact, spec.packed, known,
                row_step, frames, levels)
    return p, codec, profile


def encode_job(
    spec: JobSpec, name: str, w: np.ndarray, qp: int | None, sample: bool, col_scale: np.ndarray | None = None,
    factor: np.ndarray | None = None,
    known: Side | None = None,
    row_step: np.ndarray | None = None,
) -> bytes:
    """Quantize, lay out and encode one matrix (or its row sample). Runs on a worker.

    Quantizing again for every QP is cheap next to an encode and saves keeping every tensor's
    frames in memory while rate control revisits them; ``known`` (the matrix's scale and offset
    from its scan, row steps included) makes it one transform. ``factor`` (data-aware,
    feedback.py): code with error feedback through this inverse-Hessian factor. ``row_step``:
    per-row step factors (``quant.quantize``).
    """
    w = _coded_domain(spec, name, w)  # rotate first: a row sample of a rotated matrix is rotated rows
    if sample:  # a sample chooses its own scales
        w, known = row_sample(w, spec.sample_fraction), None
        if row_step is not None:  # the same rows' factors
            row_step = row_sample(row_step[:, None], spec.sample_fraction)[:, 0]
    p, codec, profile = _prepare(spec, name, w, col_scale, known, row_step)
    if factor is not None and qp is not None:
        p = prepare_with_feedback(p, w, factor, qp)
    return encode_prepared(p, codec, profile, qp)


def finish_job(
    spec: JobSpec,
    name: str,
    w: np.ndarray,
    dtype: str,
    qp: int | None,
    bitstream: bytes,
    col_scale: np.ndarray | None = None,
    known: Side | None = None,
    row_step: np.ndarray | None = None,
) -> CodedTensor:
    """Decode the chosen bitstream once, check it and package it. Runs on a worker."""
    coded = _coded_domain(spec, name, w)
    p, codec, profile = _prepare(spec, name, coded, col_scale, known, row_step, frames=False)
    return finish(
        p, coded, dtype, qp, bitstream, codec, profile, w, rotation_seed(spec, name), spec.compand, spec.centroids
    )


# Matrices are decoded for checking several to a decoder process, at least up to this many weights
# a process (more in a large model: a few processes per worker); one matrix's frames are held at a
# time, so the bound only spreads the work.
FINISH_BATCH_WEIGHTS = 1 << 22


def finish_many_job(
    spec: JobSpec,
    names: Sequence[str],
    shapes: Sequence[tuple[int, int]],
    loaders: Sequence[Callable[[], np.ndarray]],
    dtypes: Sequence[str],
    qps: Sequence[int | None],
    streams: Sequence[bytes],
    col_scales: Sequence[np.ndarray | None],
    known: Sequence[Side | None] | None = None,
    row_steps: Sequence[np.ndarray | None] | None = None,
) -> list[CodedTensor]:
    """``finish_job`` of several matrices whose streams are decoded by one decoder process
    (``FFmpegCodec.decode_many``): small matrices stop paying a process start each. The matrices
    are read one at a time after decoding (``loaders``), so one is in memory at once. If that
    process fails, each stream is decoded on its own, so an error names its tensor. Runs on a
    local worker (the loaders read the source)."""
    codec, profile = spec.resolve()
    layouts = [frame_layout(r, c, codec, profile) for r, c in shapes]
    out: dict[int, CodedTensor] = {}

    def one(k: int, frames) -> None:
        w = loaders[k]()
        coded = _coded_domain(spec, names[k], w)
        p = _prepare(spec, names[k], coded, col_scales[k], None if known is None else known[k],
                     None if row_steps is None else row_steps[k], frames=False)[0]
        f = frames if p.layout == layouts[k] else None  # a layout foreseen wrong: decoded again alone
        out[k] = finish(p, coded, dtypes[k], qps[k], streams[k], codec, profile, w, rotation_seed(spec, names[k]),
                        spec.compand, spec.centroids, f)

    # each matrix checked as soon as its frames are out; finish keeps nothing of them
    decode_each_or_alone(codec, list(streams), layouts, profile, one)
    return [out[k] for k in range(len(streams))]


def run_finish(fn: Callable, job: tuple):
    """One finish job of either kind (``finish_job`` or ``finish_many_job``), lazy arguments loaded."""
    return fn(*(a.get() if isinstance(a, Lazy) else a for a in job))


def finish_batches(
    numel: Sequence[int], limit: int = FINISH_BATCH_WEIGHTS, keys: Sequence | None = None
) -> list[list[int]]:
    """Matrix indices in order, cut into runs of at most ``limit`` weights (a larger matrix alone).
    ``keys`` (one per matrix, e.g. its frame size): matrices of one key are put together first (in
    order within each), since a decoder process reuses its buffers from frame to frame of one size."""
    order = list(range(len(numel)))
    if keys is not None:
        first = {k: j for j, k in reversed(list(enumerate(keys)))}
        order.sort(key=lambda i: first[keys[i]])
    out: list[list[int]] = []
    total = 0
    for i, n in ((i, numel[i]) for i in order):
        if out and total + n <= limit:
            out[-1].append(i)
            total += n
        else:
            out.append([i])
            total = n
    return out


def scan_job(
    spec: JobSpec, name: str, w: np.ndarray, col_scale: np.ndarray | None, relative: bool = False,
    row_step: np.ndarray | None = None,
) -> tuple[int, float, float | None, float, Side, np.ndarray | None]:
    """What rate control needs from a matrix before coding, from one quantization. Runs on a worker.

    Returns its side information (compact side information depends on the matrix, see
    ``quant._worth_centring``), the RMS quantization step in weight units (what equal-error
    allocation equalizes) and, with ``relative``, the RMS over rows (groups) of the step divided by
    that row's RMS about its mean (what equal-relative allocation equalizes; None without: it costs
    another pass over the matrix that the default allocation does not need), and the matrix's RMS
    (what capped-error allocation compares its step with), its scale and offset (``known`` for
    the jobs after it) and, in the coefficient domain, the counts of its coefficients' magnitudes
    (``quant.coefficient_counts``: what ratemodel predicts its rate from; None elsewhere).
    """
    coded = _coded_domain(spec, name, w)
    p, _, _ = _prepare(spec, name, coded, col_scale, row_step=row_step, frames=False, levels=False)
    qz = p.quantized
    counts = coefficient_counts(scaled_columns(coded, col_scale), qz) if qz.spec.block is not None else None
    s = qz.scale.astype(np.float64)
    if col_scale is not None:  # a step in W * c units is a step of 1/c in W units, column by column
        s = s * np.sqrt(np.mean(1.0 / np.square(col_scale.astype(np.float64))))

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(x))))

    rel = rms(s / group_rms(coded, spec.group)) if relative else None
    return (qz.side_bits + column_bits(col_scale, spec.packed), rms(s), rel, rms(coded.astype(np.float64)),
            side_of(qz), counts)

"""Compress a set of weight matrices with one codec: QP offsets, then fixed QPs or rate control.

The parts: ``settings`` (CompressSettings, is_codable), ``jobs`` (what a worker does to one matrix),
``runner`` (jobs over many matrices, the resume cache) and ``rate`` (the allocation); this module
ties them together and keeps their public names importable from ``llmcodec.compress``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from .calibration import sensitivity_offsets
from .codecs import FFmpegCodec
from .coder import CodedTensor, row_sample
from .executors import Executor, LocalExecutor
from .feedback import check_profile
from .jobs import JobSpec, finish_batches, finish_job, finish_many_job
from .priors import (
    EDGE_MAX_BPW,
    EDGE_OCTAVES,
    KV_MAX_BPW,
    KV_SHARING,
    TOKEN_MATRIX,
    capped_steps,
    edge_offsets,
    embedding_offsets,
    kv_offsets,
    layer_index,
    qp_offsets,
    with_token_offsets,
)
from .rate import allocate
from .runner import Progress, Runner, scan_matrices
from .settings import (
    ALLOCATIONS,
    BUDGETS,
    EMBEDDING_NAMES,
    EMBEDDING_OFFSET,
    EMBEDDING_OFFSET_FLAT,
    OBJECTIVE_PROFILES,
    OBJECTIVES,
    SIDES,
    WEIGHTINGS,
    CompressSettings,
    is_codable,
)
from .workdir import WorkDir, WorkDirError

__all__ = [
    "finish_batches",
    "finish_job",
    "finish_many_job",
    "ALLOCATIONS",
    "BUDGETS",
    "EDGE_MAX_BPW",
    "EDGE_OCTAVES",
    "EMBEDDING_NAMES",
    "EMBEDDING_OFFSET",
    "EMBEDDING_OFFSET_FLAT",
    "KV_MAX_BPW",
    "KV_SHARING",
    "OBJECTIVES",
    "OBJECTIVE_PROFILES",
    "SIDES",
    "TOKEN_MATRIX",
    "WEIGHTINGS",
    "CompressSettings",
    "MatrixInput",
    "Progress",
    "WorkDir",
    "WorkDirError",
    "capped_steps",
    "compress_matrices",
    "edge_offsets",
    "embedding_offsets",
    "is_codable",
    "kv_offsets",
    "layer_index",
    "qp_offsets",
    "with_token_offsets",
]

MatrixInput = np.ndarray | Callable[[], np.ndarray]  # a float matrix, or a function that reads it


def _identity(x):
    return x


def compress_matrices(
    matrices: Sequence[tuple[str, MatrixInput, str]],
    settings: CompressSettings,
    progress: Progress | None = None,
    executor: Executor | None = None,
    work: WorkDir | None = None,
    col_scales: Sequence[np.ndarray | None] | None = None,
    loss_weights: Sequence[float] | None = None,
    budget_bits: float | None = None,
    factors: Sequence[np.ndarray | None] | None = None,
    row_steps: Sequence[np.ndarray | None] | None = None,
) -> list[CodedTensor]:
    """Code (name, float matrix or a function reading it, source dtype) triples; same order out.

    ``col_scales`` (one fp16 vector or None per matrix) codes ``W * c`` column by column instead
    of ``W``; the multipliers are stored and undone on decoding (see importance.py).

    Matrices given as functions are read when a job needs them, so only about ``workers`` of them
    are in memory at once. ``executor`` defaults to a local pool of ``settings.workers`` threads;
    ``work`` keeps finished encodes on disk for resuming. ``loss_weights`` (one per matrix,
    calibration.py; needed with ``settings.calibration``) set each matrix's QP offset.
    ``budget_bits``: the bits the matrices may take together (bitstreams and side information),
    instead of ``settings.bpw`` per weight (compress_source's whole-file budget). ``factors`` (one
    per matrix or None; data-aware, ``settings.error_feedback``): inverse-Hessian factors of
    ``feedback.inverse_factor`` for the columns of ``W * c``; matrices with one are coded with
    error feedback. ``row_steps`` (one per matrix or None): per-row step factors (``quant.quantize``;
    tokenrows.py gives them to token embeddings and output heads).
    """
    codec, profile = settings.codec_profile()
    codec.check_available()
    if settings.lossless and profile.coef_block:
        raise ValueError(
            f"{settings.codec} profile {profile.name!r} codes in the transform-coefficient domain, which rounds "
            "the weights' transform to integers and so cannot be lossless: choose a sample-domain profile"
        )
    if not matrices:
        return []
    if loss_weights is None and settings.calibration is not None:
        raise ValueError("calibration needs the whole model to run on its text: use compress_model or "
                         "compress_source (a single tensor or a state dict without a config cannot be calibrated)")
    if loss_weights is not None and settings.calibration is None:
        raise ValueError("loss weights set QPs only with a calibration text in the settings")
    if factors is not None and any(f is not None for f in factors):
        if not settings.error_feedback:
            raise ValueError("inverse-Hessian factors are used only with error feedback in the settings")
        check_profile(codec, profile)
    spec = JobSpec(
        settings.codec,
        profile.name,
        settings.group,
        settings.sample_fraction,
        settings.shared_scale,
        settings.rotate,
        # lossless keeps the quantization bound |w - w_hat| <= scale/2, which companding would not
        None if settings.compand == 1.0 or settings.lossless else settings.compand,
        settings.centroids,
        settings.side != "fp16",
        settings.side == "packed",
    )
    names = [m[0] for m in matrices]
    loaders = [m[1] if callable(m[1]) else functools.partial(_identity, m[1]) for m in matrices]
    scanned = scan_matrices(loaders, names, work is not None, settings.resolved_workers())
    ex = executor if executor is not None else LocalExecutor(settings.resolved_workers())
    try:
        shapes, digests = [s for s, _ in scanned], [d for _, d in scanned]
        run = Runner(ex, spec, matrices, loaders, shapes, digests, work, progress, col_scales, factors, row_steps)
        n = len(matrices)
        if loss_weights is not None:
            offsets = sensitivity_offsets(loss_weights, run.numel, codec.qp_per_octave)
        elif settings.allocation in ("equal-qp", "equal-rate"):
            offsets = [0] * n
        else:
            offsets = qp_offsets(run.steps(settings.allocation, settings.error_cap), codec.qp_per_octave)
        edge = edge_offsets(names, settings.edge_layers, settings.resolved_edge_octaves(), codec.qp_per_octave)
        kv = kv_offsets(names, run.shapes, settings.resolved_kv_sharing(), codec.qp_per_octave)
        offsets = [o + e + k for o, e, k in zip(offsets, edge, kv, strict=True)]
        emb_off = settings.resolved_embedding_offset(row_steps is not None and any(r is not None for r in row_steps))
        if loss_weights is None:  # the data-free priors place embeddings and heads by the offset alone
            offsets = with_token_offsets(offsets, names, emb_off)
        else:  # measured sensitivities already place them; the offset shifts them further
            emb = embedding_offsets(names, emb_off)
            offsets = [o + m for o, m in zip(offsets, emb, strict=True)]
        if settings.lossless:
            qps: list[int | None] = [None] * n
            streams = run.encode([(i, None) for i in range(n)], sample=False)
        elif settings.qp is not None:
            lo, hi = min(codec.qp_range), max(codec.qp_range)
            qps = [min(hi, max(lo, settings.qp + o)) for o in offsets]
            streams = run.encode(list(enumerate(qps)), sample=False)
        else:
            qps, streams = _rate_controlled(run, codec, settings, offsets, budget_bits)
        return run.finish(qps, streams)
    finally:
        if executor is None:
            ex.close()


def _rate_controlled(
    run: Runner, codec: FFmpegCodec, settings: CompressSettings, offsets: Sequence[int] | None = None,
    budget_bits: float | None = None,
) -> tuple[list[int], list[bytes]]:
    streams: dict[tuple[int, int], bytes] = {}

    def measure_full(jobs: list[tuple[int, int]]) -> list[float]:
        out = run.encode(jobs, sample=False)
        streams.update(zip(jobs, out, strict=True))
        return [8.0 * len(b) for b in out]

    # Weights in each row sample: row_sample on a one-column stand-in gives its row count exactly.
    sample_numel = [
        row_sample(np.empty((r, 1), np.uint8), settings.sample_fraction).shape[0] * c for r, c in run.shapes
    ]

    def measure_sample(jobs: list[tuple[int, int]]) -> list[float]:
        out = run.encode(jobs, sample=True)
        return [8.0 * len(b) / sample_numel[i] for (i, _), b in zip(jobs, out, strict=True)]

    alloc = allocate(
        predict=_rate_model(run, codec, settings),
        numel=run.numel,
        side_bits=run.side_bits(),
        target_bpw=settings.bpw if budget_bits is None else budget_bits / sum(run.numel),
        qp_range=codec.qp_limits(settings.codec_profile()[1]),
        measure_full=measure_full,
        measure_sample=measure_sample,
        tolerance=settings.tolerance,
        qp_offsets=offsets,
        equal_rate=settings.allocation == "equal-rate",
    )
    return alloc.qps, [streams[i, q] for i, q in enumerate(alloc.qps)]


def _rate_model(run: Runner, codec: FFmpegCodec, settings: CompressSettings) -> Callable[[int, int], float] | None:
    """Each matrix's bitstream bits at a QP predicted from its coefficients (ratemodel.py), where the
    codec has a rate model and codes in the coefficient domain; None (rates probed with row samples)
    elsewhere, with error feedback (which moves the coefficients coded) and for equal-rate starts."""
    model = codec.rate_model
    _, profile = settings.codec_profile()
    if model is None or profile.coef_block is None or settings.error_feedback or settings.allocation == "equal-rate":
        return None
    counts = run.coefficient_counts()
    if any(c is None for c in counts):
        return None
    return lambda i, qp: model.bits(counts[i], qp)

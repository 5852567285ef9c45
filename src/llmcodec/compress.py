"""Compress a set of weight matrices with one codec: settings, parallel encoding, rate control."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from .codecs import FFmpegCodec, Profile, get_codec
from .coder import CodedTensor, Prepared, encode_prepared, finish, prepare, row_sample
from .rate import allocate

Progress = Callable[[str, int, int], None]  # (stage, done, total)

EMBEDDING_NAMES = ("embed", "lm_head", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type")


@dataclass(frozen=True)
class CompressSettings:
    codec: str = "vvc"
    profile: str | None = None  # None: the codec's default profile
    bpw: float | None = 2.5  # target bits per weight over coded tensors, side information counted
    qp: int | None = None  # a fixed QP instead of a bit budget
    lossless: bool = False  # exact integers (codecs with a lossless mode)
    group: int | None = None  # quantization group (columns); None: one scale per row
    include_embeddings: bool = False  # code embedding and output-head matrices too
    min_dim: int = 16  # smaller matrices stay uncompressed
    only: str | None = None  # regular expression: code only tensors whose name matches
    workers: int = 0  # encoder processes at once; 0: one per core
    tolerance: float = 0.03  # --bpw may land this fraction below the target, never above
    sample_fraction: float = 0.125  # share of rows used to probe rates

    def __post_init__(self) -> None:
        if self.qp is not None and self.lossless:
            raise ValueError("give either a fixed QP or lossless, not both")
        if self.qp is not None or self.lossless:  # a fixed QP or lossless replaces the default budget
            object.__setattr__(self, "bpw", None)
        elif self.bpw is None:
            raise ValueError("give a bit budget (bpw), a fixed QP (qp) or lossless")
        if self.bpw is not None and not 0 < self.bpw < 32:
            raise ValueError(f"bits per weight must be in (0, 32), got {self.bpw}")

    def resolved_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def to_dict(self) -> dict:
        return asdict(self)


def is_codable(name: str, shape: Sequence[int], settings: CompressSettings) -> bool:
    """Which tensors are coded lossily: 2-D matrices of useful size; embeddings only on request."""
    if len(shape) != 2 or min(shape) < settings.min_dim:
        return False
    if not settings.include_embeddings and any(k in name for k in EMBEDDING_NAMES):
        return False
    return settings.only is None or re.search(settings.only, name) is not None


def compress_matrices(
    matrices: Sequence[tuple[str, np.ndarray, str]],
    settings: CompressSettings,
    progress: Progress | None = None,
) -> list[CodedTensor]:
    """Code (name, float matrix, source dtype) triples; returns them in the same order."""
    codec = get_codec(settings.codec)
    codec.check_available()
    profile = codec.profile(settings.profile)
    if not matrices:
        return []
    for name, w, _ in matrices:
        if not np.isfinite(w).all():
            raise ValueError(
                f"tensor {name!r} contains NaN or Inf weights; fix the checkpoint or leave "
                "this tensor out of compression"
            )
    prep = [prepare(name, w, codec, profile, settings.group) for name, w, _ in matrices]
    with ThreadPoolExecutor(settings.resolved_workers()) as pool:
        if settings.lossless or settings.qp is not None:
            qp = None if settings.lossless else settings.qp
            qps = [qp] * len(prep)
            streams = _run(
                pool, lambda i: encode_prepared(prep[i], codec, profile, qp), range(len(prep)), progress, "encode"
            )
        else:
            qps, streams = _rate_controlled(pool, prep, [w for _, w, _ in matrices], codec, profile, settings, progress)
        jobs = range(len(prep))
        return _run(
            pool,
            lambda i: finish(prep[i], matrices[i][1], matrices[i][2], qps[i], streams[i], codec, profile),
            jobs,
            progress,
            "verify",
        )


def _run(pool: ThreadPoolExecutor, fn: Callable, jobs, progress: Progress | None, stage: str) -> list:
    jobs = list(jobs)
    futures = [pool.submit(fn, j) for j in jobs]
    out = []
    for k, f in enumerate(futures):
        out.append(f.result())
        if progress:
            progress(stage, k + 1, len(futures))
    return out


def _rate_controlled(
    pool,
    prep: list[Prepared],
    ws: list[np.ndarray],
    codec: FFmpegCodec,
    profile: Profile,
    settings: CompressSettings,
    progress: Progress | None,
) -> tuple[list[int], list[bytes]]:
    samples = [
        prepare(p.name, row_sample(w, settings.sample_fraction), codec, profile, settings.group)
        for p, w in zip(prep, ws, strict=True)
    ]
    streams: dict[tuple[int, int], bytes] = {}

    def measure_full(jobs: list[tuple[int, int]]) -> list[float]:
        out = _run(pool, lambda j: encode_prepared(prep[j[0]], codec, profile, j[1]), jobs, progress, "encode")
        streams.update(zip(jobs, out, strict=True))
        return [8.0 * len(b) for b in out]

    def measure_sample(jobs: list[tuple[int, int]]) -> list[float]:
        out = _run(pool, lambda j: encode_prepared(samples[j[0]], codec, profile, j[1]), jobs, progress, "probe")
        return [8.0 * len(b) / samples[i].numel for (i, _), b in zip(jobs, out, strict=True)]

    alloc = allocate(
        numel=[p.numel for p in prep],
        side_bits=[p.quantized.side_bits for p in prep],
        target_bpw=settings.bpw,
        qp_range=codec.qp_range,
        measure_full=measure_full,
        measure_sample=measure_sample,
        tolerance=settings.tolerance,
    )
    return alloc.qps, [streams[i, q] for i, q in enumerate(alloc.qps)]

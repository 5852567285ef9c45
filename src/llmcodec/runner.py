"""Running jobs over many matrices: one read of each (shape, finiteness, content hash), then the
encode, scan and finish jobs on an executor, with the resume cache (``WorkDir``) in front of encodes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np

from ._version import __version__
from .codecs import get_codec
from .coder import CodedTensor, column_bits, frame_layout
from .executors import Executor, Lazy, LocalExecutor, batch_limit
from .jobs import (
    FINISH_BATCH_WEIGHTS,
    JobSpec,
    encode_job,
    finish_batches,
    finish_job,
    finish_many_job,
    run_finish,
    scan_job,
)
from .priors import capped_steps
from .quant import RECON_MAX_BITS, SIDE_BITS_PER_GROUP, group_count
from .sysinfo import ffmpeg_version

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def matrix_digest(w: np.ndarray) -> str:
    """A content hash of a matrix (shape and dtype included): the resume cache's key."""
    h = hashlib.sha256(repr((w.shape, str(w.dtype))).encode())
    h.update(np.ascontiguousarray(w).data)
    return h.hexdigest()


def scan_matrices(loaders: list[Callable[[], np.ndarray]], names: list[str], digests: bool, workers: int):
    """Read each matrix once: its shape, a finiteness check, and (for resuming) a content hash."""

    def one(i: int) -> tuple[tuple[int, int], str | None]:
        w = loaders[i]()
        if not np.isfinite(w).all():
            raise ValueError(
                f"tensor {names[i]!r} contains NaN or Inf weights; fix the checkpoint or leave "
                "this tensor out of compression"
            )
        return tuple(w.shape), (matrix_digest(w) if digests else None)

    with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, range(len(loaders))))


class Runner:
    """Runs encode and finish jobs on an executor, with the work directory as a cache."""

    def __init__(
        self, executor: Executor, spec: JobSpec, matrices, loaders, shapes, digests, work, progress, col_scales=None,
        factors=None, row_steps=None,
    ) -> None:
        self.ex, self.spec, self.work, self.progress = executor, spec, work, progress
        self.col_scales = list(col_scales) if col_scales is not None else [None] * len(matrices)
        self.row_steps = list(row_steps) if row_steps is not None else [None] * len(matrices)
        self.factors = list(factors) if factors is not None else [None] * len(matrices)
        # a matrix's error-feedback factor and row steps go into its cache keys (nothing without: keys as before)
        self._factor_digests = [([] if f is None else [matrix_digest(f)])
                                + ([] if r is None else ["rows", matrix_digest(r[:, None])])
                                for f, r in zip(self.factors, self.row_steps, strict=True)]
        self.names = [m[0] for m in matrices]
        self.dtypes = [m[2] for m in matrices]
        self.loaders = loaders
        self.shapes = shapes
        self.numel = [r * c for r, c in shapes]
        self.digests = digests
        self.encodes = 0  # encoder runs in this process's jobs (cache hits excluded)
        self._scanned: list[tuple[int, float, float | None, float]] | None = None
        # each matrix's scale and offset once scanned: later jobs quantize it again without choosing them
        self._known: list = [None] * len(matrices)
        self._counts: list = [None] * len(matrices)  # coefficient counts from the scan (ratemodel)
        if work is not None:
            c = get_codec(spec.codec)
            self._salt = [__version__, ffmpeg_version(), c.encoder, asdict(c.profile(spec.profile)), spec.group,
                          spec.shared_scale, spec.rotate, spec.compand, spec.compact]  # not packed: same bitstream

    def _key(self, i: int, qp: int | None, sample: bool) -> str:
        cs = self.col_scales[i]
        parts = [*self._salt, self.spec.sample_fraction if sample else None, self.digests[i], qp, sample,
                 None if cs is None else matrix_digest(cs), *self._factor_digests[i]]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def _map(self, fn, jobs: list[tuple], weights: list[float], stage: str, save=None) -> list:
        total, done = int(sum(weights)), [0.0]

        def finished(k: int, result) -> None:
            if save:
                save(k, result)
            done[0] += weights[k]
            if self.progress:
                self.progress(stage, int(done[0]), total)

        return self.ex.map(fn, jobs, finished)

    def encode(self, jobs: list[tuple[int, int | None]], sample: bool) -> list[bytes]:
        out: list[bytes | None] = [None] * len(jobs)
        keys = [self._key(i, qp, sample) for i, qp in jobs] if self.work else [None] * len(jobs)
        todo = []
        for k, key in enumerate(keys):
            if key is not None and (hit := self.work.get(key)) is not None:
                out[k] = hit
            else:
                todo.append(k)
        frac = self.spec.sample_fraction if sample else 1.0
        # the largest first, so that no large encode starts last while the other workers idle
        todo.sort(key=lambda k: -self.numel[jobs[k][0]])
        args = [
            (self.spec, self.names[jobs[k][0]], Lazy(self.loaders[jobs[k][0]]), jobs[k][1], sample,
             self.col_scales[jobs[k][0]], self.factors[jobs[k][0]], None if sample else self._known[jobs[k][0]],
             self.row_steps[jobs[k][0]])
            for k in todo
        ]
        weights = [self.numel[jobs[k][0]] * frac for k in todo]

        def save(j: int, b: bytes) -> None:  # at once, so an interrupted batch keeps what finished
            if self.work is not None:
                self.work.put(keys[todo[j]], b)

        done = self._map(encode_job, args, weights, "probe" if sample else "encode", save)
        for k, b in zip(todo, done, strict=True):
            out[k] = b
        self.encodes += len(todo)
        return out  # type: ignore[return-value]

    def finish(self, qps: list[int | None], streams: list[bytes]) -> list[CodedTensor]:
        """Decode, check and package every matrix; on a local pool, small ones several to a job
        (``finish_many_job``; elsewhere the workers cannot read the source)."""
        if not isinstance(self.ex, LocalExecutor):
            args = [(self.spec, self.names[i], Lazy(self.loaders[i]), self.dtypes[i], qps[i], streams[i],
                     self.col_scales[i], self._known[i], self.row_steps[i]) for i in range(len(qps))]
            return self._map(finish_job, args, self.numel, "verify")
        codec, profile = self.spec.resolve()
        sizes = [(lay.frame_h, lay.frame_w) for lay in (frame_layout(r, c, codec, profile) for r, c in self.shapes)]
        # a few decoder processes per worker, each at least FINISH_BATCH_WEIGHTS
        batches = finish_batches(self.numel, batch_limit(sum(self.numel), self.ex.workers, FINISH_BATCH_WEIGHTS),
                                 keys=sizes)
        args = []
        for b in batches:
            if len(b) == 1:
                i = b[0]
                args.append((finish_job, (self.spec, self.names[i], Lazy(self.loaders[i]), self.dtypes[i], qps[i],
                                          streams[i], self.col_scales[i], self._known[i], self.row_steps[i])))
            else:
                args.append((finish_many_job, (self.spec, [self.names[i] for i in b], [self.shapes[i] for i in b],
                                               [self.loaders[i] for i in b], [self.dtypes[i] for i in b],
                                               [qps[i] for i in b], [streams[i] for i in b],
                                               [self.col_scales[i] for i in b], [self._known[i] for i in b],
                                               [self.row_steps[i] for i in b])))
        done = self._map(run_finish, args, [sum(self.numel[i] for i in b) for b in batches], "verify")
        out: list[CodedTensor | None] = [None] * len(qps)
        for b, res in zip(batches, done, strict=True):
            for i, ct in zip(b, res if isinstance(res, list) else [res], strict=True):
                out[i] = ct
        return out  # type: ignore[return-value]

    def side_bits(self) -> list[int]:
        """Each matrix's side information, with the largest reconstruction table it may get (the
        table is fitted after coding), so that the budget holds whatever the table turns out to be."""
        _, profile = self.spec.resolve()
        table = RECON_MAX_BITS if (self.spec.centroids and profile.coef_block) else 0
        if not (self.spec.compact and profile.coef_block):  # fixed size: no need to read the matrices
            return [SIDE_BITS_PER_GROUP * r * group_count(c, self.spec.group) + column_bits(cs, self.spec.packed)
                    + table for (r, c), cs in zip(self.shapes, self.col_scales, strict=True)]
        return [side + table for side, *_ in self.scan()]

    def steps(self, allocation: str, cap: float) -> list[float]:
        """What ``qp_offsets`` equalizes for an allocation that sets QP offsets."""
        scanned = self.scan(relative=allocation == "equal-relative")
        if allocation == "equal-relative":
            return [rel for _, _, rel, _ in scanned]  # type: ignore[misc]
        steps = [step for _, step, _, _ in scanned]
        if allocation == "capped-error":
            return capped_steps(steps, [r for *_, r in scanned], cap)
        return steps

    def scan(self, relative: bool = False) -> list[tuple[int, float, float | None, float]]:
        """``scan_job`` of every matrix, run once however many of its results are asked for (again
        only if relative steps are asked for after a scan without them)."""
        if self._scanned is None or (relative and any(r[2] is None for r in self._scanned)):
            args = [(self.spec, self.names[i], Lazy(self.loaders[i]), self.col_scales[i], relative, self.row_steps[i])
                    for i in range(len(self.names))]
            scanned = self._map(scan_job, args, self.numel, "scan")
            self._scanned = [tuple(r[:4]) for r in scanned]
            self._known = [r[4] for r in scanned]
            self._counts = [r[5] for r in scanned]
        return self._scanned

    def coefficient_counts(self) -> list:
        """Each matrix's coefficient counts (``quant.coefficient_counts``; None outside the
        coefficient domain), from the scan."""
        self.scan()
        return self._counts

"""Compress a set of weight matrices with one codec: settings, parallel encoding, rate control."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from ._version import __version__
from .calibration import sensitivity_offsets
from .codecs import FFmpegCodec, Profile, get_codec
from .coder import CodedTensor, column_bits, encode_prepared, finish, prepare, row_sample
from .executors import Executor, Lazy, LocalExecutor
from .feedback import FEEDBACK_PROFILE, check_profile, prepare_with_feedback
from .priors import (  # noqa: F401  (also re-exported for callers of compress)
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
from .quant import RECON_MAX_BITS, SIDE_BITS_PER_GROUP, compand, group_count, group_rms
from .rate import allocate
from .rotation import rotate
from .sysinfo import ffmpeg_version
from .workdir import WorkDir, WorkDirError  # noqa: F401  (re-exported)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

WEIGHTINGS = ("none", "data-free", "balance")
SIDES = ("packed", "log8", "fp16")
ALLOCATIONS = ("equal-qp", "equal-error", "capped-error", "equal-relative", "equal-rate")
# Named starting points for the shaping options (CompressSettings.for_objective, ``--objective``).
# "model" is the defaults: error goes where the model's output minds it least (per-row steps, full
# column balance, one QP). "weights" minimizes squared weight error instead: one absolute step
# everywhere, light balance (the comparison: docs/research-log.md).
OBJECTIVES: dict[str, dict[str, object]] = {
    "model": {},
    "weights": {"allocation": "equal-error", "shared_scale": True, "alpha": 0.3, "edge_layers": 0, "kv_sharing": 0.0},
}
# The profile each objective codes with where it differs from the codec's default, by codec.
OBJECTIVE_PROFILES: dict[tuple[str, str], str] = {("weights", "vvc"): "ai-medium-coef-dq-half"}
EMBEDDING_NAMES = ("embed", "lm_head", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type")
# The default QP offset of token embeddings and output heads (priors.TOKEN_MATRIX) against the other
# matrices under a bit budget: two octaves finer, since they feed and read out every layer (docs/research-log.md).
EMBEDDING_OFFSET = -12
BUDGETS = ("model", "coded")


@dataclass(frozen=True)
class CompressSettings:
    codec: str = "vvc"
    profile: str | None = None  # None: the codec's default profile for the budget (codecs/base.py profile_for)
    # the bit budget: with budget "model", bits per parameter of the whole file (every stored byte of
    # every tensor, the artifact's header included; model config and tokenizer files beside); with
    # "coded", bits per weight over the coded matrices alone, side information counted
    bpw: float | None = 2.5
    budget: str = "model"
    qp: int | None = None  # a fixed QP instead of a bit budget
    lossless: bool = False  # exact integers (codecs with a lossless mode)
    group: int | None = None  # quantization group (columns); None: one scale per row
    include_embeddings: bool = True  # code embedding and output-head matrices too (False: keep them)
    # QP offset of token embeddings and output heads against the other matrices under a budget
    # (None: EMBEDDING_OFFSET; negative: finer)
    embedding_offset: int | None = None
    exact_kept: bool = False  # tensors not coded keep the source's dtype instead of 16 bits (kept.py)
    min_dim: int = 16  # smaller matrices stay uncompressed
    only: str | None = None  # regular expression: code only tensors whose name matches
    workers: int = 0  # encoder processes at once; 0: one per core
    tolerance: float = 0.015  # --bpw may land this fraction below the target, never above
    sample_fraction: float = 0.125  # share of rows used to probe rates
    keep_nonfinite: bool = False  # keep matrices with NaN/Inf uncompressed instead of refusing them
    # Rate-distortion shaping (data-free; importance.py, docs/method.md): column multipliers from the
    # model's own weights: "none" | "data-free" (norm weights and the Llama dataflow,
    # importance.column_importance) | "balance" (inverse column energy, importance.balance_importance;
    # with alpha 1 every column is coded at the same RMS)
    weighting: str = "balance"
    alpha: float = 1.0  # strength of the weighting (1: weighted reverse water-filling)
    shared_scale: bool = False  # one quantization step per tensor instead of one per row
    # "equal-qp" | "equal-error" | "equal-relative" | "equal-rate": QP offsets for the same absolute step
    # everywhere, or for the same step relative to each row's RMS; or a starting QP per tensor for the
    # same bits per weight in every tensor (what per-tensor rate-controlled peers such as ECSQ get)
    allocation: str = "equal-qp"
    # capped-error: equal absolute error, except that no tensor's error relative to its RMS goes above
    # error_cap times the median tensor's (capped_steps)
    error_cap: float = 1.5
    # the first and last ``edge_layers`` blocks of the stack get a step ``2^-edge_octaves`` times the
    # rest's (QP offsets; edge_offsets): the ends of a network are the most sensitive to their error.
    # None: EDGE_OCTAVES below EDGE_MAX_BPW bits per weight, off from there and with --qp/--lossless.
    edge_layers: int = 1
    edge_octaves: float | None = None
    # grouped-query attention: k_proj and v_proj, whose heads each serve n_rep query heads, get a step
    # n_rep^(-kv_sharing/2) times the rest's (kv_offsets; read from the matrices' shapes, nothing for
    # models without GQA). None: KV_SHARING below KV_MAX_BPW bits per weight, off from there and with
    # --qp/--lossless/calibration.
    kv_sharing: float | None = None
    rotate: bool = False  # code R W R' (random orthogonal R, R'; rotation.py), undone on restore
    # code sign(w)|w|^p so the codec's error grows with |w| (1: off; quant.compand). Meant for the
    # sample-domain profiles; the coefficient-domain profiles' error is already per weight
    compand: float = 1.0
    # coefficient domain: restore each decoded level at the mean of the weights that reached it
    # (quant.Recon), which undoes the codec's rounding toward zero
    centroids: bool = True
    # "packed": column multipliers and (coefficient domain) row scales as 8-bit logarithmic codes,
    # no offsets, the codes Golomb-Rice packed (sideinfo.py); "log8": the same codes a byte each;
    # "fp16": fp16 scale and offset per row, fp16 multipliers
    side: str = "packed"
    # Optional and data-aware (calibration.py): a text ("ptb-train", "ptb-valid", "ptb-test" or a file)
    # whose first ``calibration_tokens`` tokens estimate each matrix's loss per unit of error; its QP
    # offsets replace the one-QP-for-all allocation and the default edge layers. None: data-free.
    calibration: str | None = None
    calibration_tokens: int = 2048
    # Optional and data-aware, with a calibration text (feedback.py): quantize each matrix's coded
    # coefficients column by column on the codec's lattice at its QP, folding each column's error into
    # the columns not yet quantized through the inverse Hessian of the layer's inputs on that text
    # (GPTQ's update), then code them at that QP; profile None: feedback.FEEDBACK_PROFILE.
    error_feedback: bool = False

    def __post_init__(self) -> None:
        if self.qp is not None and self.lossless:
            raise ValueError("give either a fixed QP or lossless, not both")
        for k in ("bpw", "alpha", "error_cap", "edge_octaves", "kv_sharing", "compand", "tolerance", "sample_fraction"):
            v = getattr(self, k)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{k} must be a finite number, got {v!r}")
        if not 0 <= self.alpha <= 16:
            raise ValueError(f"the weighting strength alpha must be in [0, 16], got {self.alpha}")
        if self.group is not None and self.group < 1:
            raise ValueError(f"the quantization group must be a positive number of columns, got {self.group}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per core), got {self.workers}")
        if self.only is not None:
            try:
                re.compile(self.only)
            except re.error as e:
                raise ValueError(f"only: {self.only!r} is not a valid regular expression ({e})") from None
        if self.qp is not None:
            from .codecs import CODECS

            cls = CODECS.get(self.codec)
            if cls is not None and not min(cls.qp_range) <= self.qp <= max(cls.qp_range):
                raise ValueError(f"QP {self.qp} is outside the {self.codec} codec's range {sorted(cls.qp_range)}")
        if self.qp is not None or self.lossless:  # a fixed QP or lossless replaces the default budget
            object.__setattr__(self, "bpw", None)
        elif self.bpw is None:
            raise ValueError("give a bit budget (bpw), a fixed QP (qp) or lossless")
        if self.bpw is not None and not 0 < self.bpw < 32:
            raise ValueError(f"bits per weight must be in (0, 32), got {self.bpw}")
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; choose one of {', '.join(BUDGETS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose one of {', '.join(ALLOCATIONS)}")
        if self.rotate and self.weighting != "none":
            raise ValueError(
                "rotate and column weighting do not combine (the multipliers are per input column): "
                "pass weighting='none' (--weighting none) with rotate"
            )
        if self.side not in SIDES:
            raise ValueError(f"unknown side-information format {self.side!r}; choose one of {', '.join(SIDES)}")
        if self.edge_layers < 0 or (self.edge_octaves is not None and self.edge_octaves < 0):
            raise ValueError(f"edge layers and octaves must be >= 0, got {self.edge_layers} and {self.edge_octaves}")
        if self.kv_sharing is not None and self.kv_sharing < 0:
            raise ValueError(f"the key/value sharing strength must be >= 0, got {self.kv_sharing}")
        if not self.error_cap > 0:
            raise ValueError(f"the relative error cap must be positive, got {self.error_cap}")
        if not 0 < self.compand <= 1:
            raise ValueError(f"the companding exponent must be in (0, 1], got {self.compand}")
        if self.error_feedback and self.calibration is None:
            raise ValueError("error feedback is data-aware: it needs a calibration text (calibration, --calibration)")
        if self.calibration is not None:
            if self.calibration_tokens < 1:
                raise ValueError(f"calibration tokens must be positive, got {self.calibration_tokens}")
            # its error model is the unrotated, uncompanded matrix's, with one QP per matrix of its own
            clash = [f for f, on in (("lossless", self.lossless), ("rotate", self.rotate),
                                     ("compand", self.compand != 1.0),
                                     (f"allocation {self.allocation}", self.allocation != "equal-qp")) if on]
            if clash:
                raise ValueError(f"calibration sets each matrix's QP itself; it does not combine with {clash[0]}")

    def _prior(self, given: float | None, default: float, max_bpw: float) -> float:
        """A data-free prior's strength: ``given``, or for None ``default`` below ``max_bpw`` bits per
        weight; none from there, with a fixed QP or lossless (no budget), and with a calibration text,
        whose measured sensitivities replace the priors between matrices."""
        if given is not None:
            return given
        on = self.bpw is not None and self.bpw < max_bpw and self.calibration is None
        return default if on else 0.0

    def resolved_edge_octaves(self) -> float:
        """``edge_octaves``, or for None EDGE_OCTAVES below EDGE_MAX_BPW (``_prior``)."""
        return self._prior(self.edge_octaves, EDGE_OCTAVES, EDGE_MAX_BPW)

    def resolved_embedding_offset(self) -> int:
        """``embedding_offset``, or for None EMBEDDING_OFFSET under a budget (none with --qp/--lossless)."""
        if self.embedding_offset is not None:
            return self.embedding_offset
        return EMBEDDING_OFFSET if self.bpw is not None else 0

    def resolved_kv_sharing(self) -> float:
        """``kv_sharing``, or for None KV_SHARING below KV_MAX_BPW (``_prior``)."""
        return self._prior(self.kv_sharing, KV_SHARING, KV_MAX_BPW)

    @classmethod
    def for_objective(cls, objective: str = "model", **explicit) -> CompressSettings:
        """Settings for a named objective (``OBJECTIVES``); settings given in ``explicit`` win."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        base: dict[str, object] = dict(OBJECTIVES[objective])
        profile = OBJECTIVE_PROFILES.get((objective, explicit.get("codec", cls.codec)))
        if profile and not explicit.get("lossless"):  # its profiles code coefficients: never lossless
            base["profile"] = profile
        return cls(**{**base, **explicit})

    def resolved_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def codec_profile(self) -> tuple[FFmpegCodec, Profile]:
        """The codec and the profile these settings code with: the one named, or the codec's default
        for the budget (``FFmpegCodec.profile_for``)."""
        codec = get_codec(self.codec)
        if self.error_feedback and self.profile is None and not self.lossless:
            return codec, codec.profile(FEEDBACK_PROFILE)  # keeps the values feedback puts on its lattice
        return codec, codec.profile_for(self.profile, self.bpw, self.lossless)

    def same_encoding(self, other: CompressSettings) -> bool:
        """Whether ``other`` codes every matrix exactly as these settings do: the same settings once
        each profile is resolved, whatever the profiles are called (a default profile is a named copy
        of another) and however many workers run (``to_dict`` leaves them out)."""
        def key(s: CompressSettings) -> tuple:
            _, p = s.codec_profile()
            return ({**s.to_dict(), "profile": None, "edge_octaves": s.resolved_edge_octaves(),
                     "kv_sharing": s.resolved_kv_sharing(), "embedding_offset": s.resolved_embedding_offset()},
                    replace(p, name=""))

        return key(self) == key(other)

    def to_dict(self) -> dict:
        # workers only decides how fast, not what is written: leave it out so artifacts made with
        # any number of workers or any executor are identical byte for byte.
        d = asdict(self)
        d.pop("workers")
        return d


def is_codable(name: str, shape: Sequence[int], settings: CompressSettings) -> bool:
    """Which tensors are coded lossily: matrices of useful size, and tensors of 3+ dimensions as
    stacks of such matrices (stacks.py); embeddings and output heads unless asked to keep them."""
    if len(shape) < 2 or min(shape[-2:]) < settings.min_dim or 0 in shape:
        return False
    if not settings.include_embeddings and any(k in name for k in EMBEDDING_NAMES):
        return False
    return settings.only is None or re.search(settings.only, name) is not None


MatrixInput = np.ndarray | Callable[[], np.ndarray]  # a float matrix, or a function that reads it


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


def _prepare(spec: JobSpec, name: str, w: np.ndarray, col_scale: np.ndarray | None):
    codec, profile = spec.resolve()
    p = prepare(name, w, codec, profile, spec.group, spec.shared_scale, col_scale, spec.compact, spec.packed)
    return p, codec, profile


def encode_job(
    spec: JobSpec, name: str, w: np.ndarray, qp: int | None, sample: bool, col_scale: np.ndarray | None = None,
    factor: np.ndarray | None = None,
) -> bytes:
    """Quantize, lay out and encode one matrix (or its row sample). Runs on a worker.

    Quantizing again for every QP is cheap next to an encode and saves keeping every tensor's
    frames in memory while rate control revisits them. ``factor`` (data-aware, feedback.py): code
    with error feedback through this inverse-Hessian factor.
    """
    w = _coded_domain(spec, name, w)  # rotate first: a row sample of a rotated matrix is rotated rows
    if sample:
        w = row_sample(w, spec.sample_fraction)
    p, codec, profile = _prepare(spec, name, w, col_scale)
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
) -> CodedTensor:
    """Decode the chosen bitstream once, check it and package it. Runs on a worker."""
    coded = _coded_domain(spec, name, w)
    p, codec, profile = _prepare(spec, name, coded, col_scale)
    return finish(
        p, coded, dtype, qp, bitstream, codec, profile, w, rotation_seed(spec, name), spec.compand, spec.centroids
    )


def scan_job(
    spec: JobSpec, name: str, w: np.ndarray, col_scale: np.ndarray | None, relative: bool = False
) -> tuple[int, float, float | None, float]:
    """What rate control needs from a matrix before coding, from one quantization. Runs on a worker.

    Returns its side information (compact side information depends on the matrix, see
    ``quant._worth_centring``), the RMS quantization step in weight units (what equal-error
    allocation equalizes) and, with ``relative``, the RMS over rows (groups) of the step divided by
    that row's RMS about its mean (what equal-relative allocation equalizes; None without: it costs
    another pass over the matrix that the default allocation does not need), and the matrix's RMS
    (what capped-error allocation compares its step with).
    """
    coded = _coded_domain(spec, name, w)
    p, _, _ = _prepare(spec, name, coded, col_scale)
    s = p.quantized.scale.astype(np.float64)
    if col_scale is not None:  # a step in W * c units is a step of 1/c in W units, column by column
        s = s * np.sqrt(np.mean(1.0 / np.square(col_scale.astype(np.float64))))

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(x))))

    rel = rms(s / group_rms(coded, spec.group)) if relative else None
    return p.quantized.side_bits + column_bits(col_scale, spec.packed), rms(s), rel, rms(coded.astype(np.float64))


def _digest(w: np.ndarray) -> str:
    h = hashlib.sha256(repr((w.shape, str(w.dtype))).encode())
    h.update(np.ascontiguousarray(w).data)
    return h.hexdigest()


def _scan(loaders: list[Callable[[], np.ndarray]], names: list[str], digests: bool, workers: int):
    """Read each matrix once: its shape, a finiteness check, and (for resuming) a content hash."""

    def one(i: int) -> tuple[tuple[int, int], str | None]:
        w = loaders[i]()
        if not np.isfinite(w).all():
            raise ValueError(
                f"tensor {names[i]!r} contains NaN or Inf weights; fix the checkpoint or leave "
                "this tensor out of compression"
            )
        return tuple(w.shape), (_digest(w) if digests else None)

    with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, range(len(loaders))))


class _Runner:
    """Runs encode and finish jobs on an executor, with the work directory as a cache."""

    def __init__(
        self, executor: Executor, spec: JobSpec, matrices, loaders, shapes, digests, work, progress, col_scales=None,
        factors=None,
    ) -> None:
        self.ex, self.spec, self.work, self.progress = executor, spec, work, progress
        self.col_scales = list(col_scales) if col_scales is not None else [None] * len(matrices)
        self.factors = list(factors) if factors is not None else [None] * len(matrices)
        self.names = [m[0] for m in matrices]
        self.dtypes = [m[2] for m in matrices]
        self.loaders = loaders
        self.shapes = shapes
        self.numel = [r * c for r, c in shapes]
        self.digests = digests
        self.encodes = 0  # encoder runs in this process's jobs (cache hits excluded)
        self._scanned: list[tuple[int, float, float | None]] | None = None
        if work is not None:
            c = get_codec(spec.codec)
            self._salt = [__version__, ffmpeg_version(), c.encoder, asdict(c.profile(spec.profile)), spec.group,
                          spec.shared_scale, spec.rotate, spec.compand, spec.compact]  # not packed: same bitstream

    def _key(self, i: int, qp: int | None, sample: bool) -> str:
        cs = self.col_scales[i]
        parts = [*self._salt, self.spec.sample_fraction if sample else None, self.digests[i], qp, sample,
                 None if cs is None else _digest(cs), *self._factor_digest(i)]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    @functools.cache  # noqa: B019  (one runner per compression; its factors do not change)
    def _factor_digest(self, i: int) -> list[str]:
        """A matrix's error-feedback factor in its cache key (nothing without one: keys as before)."""
        return [] if self.factors[i] is None else [_digest(self.factors[i])]

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
        args = [
            (self.spec, self.names[jobs[k][0]], Lazy(self.loaders[jobs[k][0]]), jobs[k][1], sample,
             self.col_scales[jobs[k][0]], self.factors[jobs[k][0]])
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
        n = len(qps)
        args = [
            (self.spec, self.names[i], Lazy(self.loaders[i]), self.dtypes[i], qps[i], streams[i], self.col_scales[i])
            for i in range(n)
        ]
        return self._map(finish_job, args, self.numel, "verify")

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
            args = [(self.spec, self.names[i], Lazy(self.loaders[i]), self.col_scales[i], relative)
                    for i in range(len(self.names))]
            self._scanned = self._map(scan_job, args, self.numel, "scan")
        return self._scanned


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
    error feedback.
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
    scanned = _scan(loaders, names, work is not None, settings.resolved_workers())
    ex = executor if executor is not None else LocalExecutor(settings.resolved_workers())
    try:
        shapes, digests = [s for s, _ in scanned], [d for _, d in scanned]
        run = _Runner(ex, spec, matrices, loaders, shapes, digests, work, progress, col_scales, factors)
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
        if loss_weights is None:  # the data-free priors place embeddings and heads by the offset alone
            offsets = with_token_offsets(offsets, names, settings.resolved_embedding_offset())
        else:  # measured sensitivities already place them; the offset shifts them further
            emb = embedding_offsets(names, settings.resolved_embedding_offset())
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
    run: _Runner, codec: FFmpegCodec, settings: CompressSettings, offsets: Sequence[int] | None = None,
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
        numel=run.numel,
        side_bits=run.side_bits(),
        target_bpw=settings.bpw if budget_bits is None else budget_bits / sum(run.numel),
        qp_range=codec.qp_range,
        measure_full=measure_full,
        measure_sample=measure_sample,
        tolerance=settings.tolerance,
        qp_offsets=offsets,
        equal_rate=settings.allocation == "equal-rate",
    )
    return alloc.qps, [streams[i, q] for i, q in enumerate(alloc.qps)]

"""Check a whole artifact without writing anything: every checksum, every tensor decoded.

With a source model, also measure each tensor against it (max abs and relative error, bits per
weight) and compare with the relative error recorded at compression time: a decoder that now
returns something else than it did then is caught here.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from . import artifact, stacks
from .codecs.base import CodecError
from .coder import decode_tensor
from .compress import Progress
from .quant import relative_error


class VerifyError(ValueError):
    """The artifact failed verification; the message names every failing tensor."""


@dataclass
class TensorCheck:
    name: str
    kind: str  # "coded", "raw" or "alias"
    shape: tuple[int, ...]
    qp: int | None = None
    bpw: float | None = None  # coded: bits (stream + side information) per weight
    recorded_rel_error: float | None = None  # stored at compression time
    rel_error: float | None = None  # measured against the source model
    max_abs_error: float | None = None
    problem: str | None = None


@dataclass
class VerifyReport:
    path: str
    against: str | None
    tensors: list[TensorCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # not tied to one tensor (e.g. missing in the artifact)

    @property
    def failures(self) -> list[str]:
        return [f"tensor {t.name!r}: {t.problem}" for t in self.tensors if t.problem] + self.problems

    @property
    def ok(self) -> bool:
        return not self.failures


def _close(measured: float, recorded: float) -> bool:
    # The decoder is deterministic (one thread): only float summation order may differ.
    return abs(measured - recorded) <= 1e-6 + 1e-3 * recorded


def verify(
    path: str | os.PathLike,
    against: str | os.PathLike | None = None,
    workers: int = 0,
    progress: Progress | None = None,
) -> VerifyReport:
    """Read (checksums, header) and decode every tensor of ``path``; optionally compare with ``against``.

    A corrupt file raises ArtifactError at once; per-tensor failures are collected in the report.
    Each decoded tensor is measured and dropped at once, so memory stays at a few tensors.
    """
    from .api import check_restorable, decoders_for
    from .modelio import load as load_source

    art = artifact.read(path)
    codec, profile = decoders_for(art)
    codec.check_available()
    codec.cancel_event = threading.Event()  # set when a decoder hangs: the rest are not waited for
    config_problem = None
    try:  # what decompress and load_model would refuse before decoding
        check_restorable(art, path)
    except artifact.ArtifactError as e:
        config_problem = f"decompress would refuse it: {str(e).removeprefix(f'{path}: ')}"
    src = None if against is None else _StackedSource(load_source(against), art)
    src_names = set() if src is None else set(src.names())
    report = VerifyReport(str(path), None if against is None else str(against))

    def check_coded(name: str) -> TensorCheck:
        ct = art.coded[name]
        c = TensorCheck(name, "coded", ct.shape, ct.qp, ct.bits / ct.numel, ct.rel_error)
        if codec.cancel_event.is_set():
            c.problem = "not decoded: verification stopped after a decoder timed out"
            return c
        try:
            w = decode_tensor(ct, codec, profile)
        except CodecError as e:
            c.problem = str(e).removeprefix(f"tensor {name!r}: ")
            if "timed out" in c.problem:
                codec.cancel_event.set()
            return c
        except MemoryError:
            c.problem = "not enough memory to decode it"
            return c
        if w.shape != ct.shape:
            c.problem = f"decoded to shape {w.shape}, the header says {ct.shape}"
        elif not np.isfinite(w).all():
            c.problem = "decoded weights are not finite"
        elif src is not None and _source_ok(c, src_names, src, against):
            _measure_coded(c, w, src.get(name), against)
        return c

    checks: dict[str, TensorCheck] = {}
    names = list(art.coded)
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for k, c in enumerate(pool.map(check_coded, names)):
            checks[c.name] = c
            if progress:
                progress("verify", k + 1, len(names))
    for name, t in art.raw.items():
        c = checks[name] = TensorCheck(name, "raw", tuple(t.shape))
        if src is not None and _source_ok(c, src_names, src, against):
            _measure_raw(c, t, src.get(name), against, name in art.source_dtypes)
    for name, of in art.aliases.items():
        c = checks[name] = TensorCheck(name, "alias", checks[of].shape)
        c.max_abs_error, c.rel_error = checks[of].max_abs_error, checks[of].rel_error  # restores as its target
        if src is not None and _source_ok(c, src_names, src, against) and of in src_names:
            if not torch.equal(src.get(of), src.get(name)):
                c.problem = f"stored as a tie to {of!r}, but {against} holds a different tensor here"
    report.tensors = [checks[m] for n in art.order
                      for m in (stacks.member_names(n, art.stacks[n]) if n in art.stacks else [n])]
    if config_problem:
        report.problems.append(config_problem)
    for name in sorted(set(src.src.names()) - set(art.order) if src is not None else ()):
        report.problems.append(f"tensor {name!r} is in {against} but not in the artifact")
    return report


def _source_ok(c: TensorCheck, src_names: set[str], src, against) -> bool:
    if c.name not in src_names:
        c.problem = f"not in {against}"
        return False
    shape = tuple(src.shape(c.name))
    if shape != c.shape:
        c.problem = f"shape {c.shape} where {against} has {shape}"
        return False
    return True


def _measure_coded(c: TensorCheck, w: np.ndarray, ref_t: torch.Tensor, against) -> None:
    ref = ref_t.detach().to(torch.float32).numpy()  # what the quantizer saw at compression
    c.max_abs_error = float(np.abs(ref.astype(np.float64) - w).max(initial=0.0))
    c.rel_error = relative_error(ref, w)
    if c.recorded_rel_error is not None and not _close(c.rel_error, c.recorded_rel_error):
        c.problem = (
            f"relative error {c.rel_error:.6f} against {against}, but {c.recorded_rel_error:.6f} "
            "was recorded at compression: the decoder or the source changed"
        )


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and values, NaN matching NaN (tensors kept with --keep-nonfinite)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(a[~nan], b[~nan])


def _measure_raw(c: TensorCheck, kept: torch.Tensor, ref_t: torch.Tensor, against, narrowed: bool = False) -> None:
    """A kept tensor against the source's: bit for bit, or (``narrowed``: stored at 16 bits) equal to
    the source's rounded to the stored dtype."""
    ok = torch.isfinite(kept) & torch.isfinite(ref_t)  # NaN/Inf are compared by _bit_equal, not measured
    a, b = kept[ok].double(), ref_t[ok].double()
    c.max_abs_error = float((a - b).abs().max()) if a.numel() else 0.0
    c.rel_error = relative_error(b.numpy(), a.numpy())
    if not _bit_equal(kept, ref_t.to(kept.dtype) if narrowed else ref_t):
        how = f"stored as {kept.dtype}" if narrowed else "kept exactly"
        c.problem = f"{how}, but differs from {against} (max abs error {c.max_abs_error:g}, dtype {kept.dtype})"


class _StackedSource:
    """A source model seen through an artifact's stacks: a member name (``name[i]``) gives matrix
    ``i`` of the source's tensor ``name``."""

    def __init__(self, src, art: artifact.Artifact) -> None:
        self.src = src
        have = set(src.names())
        self.members = {m: (n, i) for n, shape in art.stacks.items() if n in have
                        for i, m in enumerate(stacks.member_names(n, shape))}

    def names(self) -> list[str]:
        return [*self.src.names(), *self.members]

    def get(self, name: str) -> torch.Tensor:
        if name in self.members:
            base, i = self.members[name]
            return stacks.member(self.src.get(base), i)
        return self.src.get(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.get(name).shape) if name in self.members else tuple(self.src.shape(name))

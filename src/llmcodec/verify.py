"""Check a whole artifact without writing anything: every checksum, every tensor decoded.

With a source model, also measure each tensor against it (max abs and relative error, bits per
weight) and compare with the relative error recorded at compression time: a decoder that now
returns something else than it did then is caught here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from . import artifact
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
    """
    from .api import _decoders  # the codec and profile recorded in the artifact

    art = artifact.read(path)
    codec, profile = _decoders(art)
    codec.check_available()
    report = VerifyReport(str(path), None if against is None else str(against))
    checks: dict[str, TensorCheck] = {}
    decoded: dict[str, np.ndarray] = {}
    names = list(art.coded)

    def decode(name: str) -> np.ndarray | str:
        try:
            w = decode_tensor(art.coded[name], codec, profile)
        except CodecError as e:
            return str(e).removeprefix(f"tensor {name!r}: ")
        if w.shape != art.coded[name].shape:
            return f"decoded to shape {w.shape}, the header says {art.coded[name].shape}"
        if not np.isfinite(w).all():
            return "decoded weights are not finite"
        return w

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for k, (name, out) in enumerate(zip(names, pool.map(decode, names), strict=True)):
            ct = art.coded[name]
            checks[name] = TensorCheck(name, "coded", ct.shape, ct.qp, ct.bits / ct.numel, ct.rel_error)
            if isinstance(out, str):
                checks[name].problem = out
            else:
                decoded[name] = out
            if progress:
                progress("verify", k + 1, len(names))
    for name, t in art.raw.items():
        checks[name] = TensorCheck(name, "raw", tuple(t.shape))
    for name, of in art.aliases.items():
        checks[name] = TensorCheck(name, "alias", checks[of].shape)
    report.tensors = [checks[n] for n in art.order]
    if against is not None:
        _compare(report, art, decoded, against)
    return report


def _compare(report: VerifyReport, art: artifact.Artifact, decoded: dict[str, np.ndarray], against) -> None:
    from .modelio import load as load_source

    src = load_source(against)
    src_names = set(src.names())
    for name in sorted(src_names - set(art.order)):
        report.problems.append(f"tensor {name!r} is in {against} but not in the artifact")
    for c in report.tensors:
        if c.name not in src_names:
            c.problem = c.problem or f"not in {against}"
            continue
        ref_t = src.get(c.name)
        if tuple(ref_t.shape) != c.shape:
            c.problem = c.problem or f"shape {c.shape} where {against} has {tuple(ref_t.shape)}"
            continue
        if c.kind == "coded":
            if c.name not in decoded:
                continue  # decoding already failed
            ref = ref_t.detach().to(torch.float32).numpy()
            w = decoded[c.name]
            c.max_abs_error = float(np.abs(ref.astype(np.float64) - w).max(initial=0.0))
            c.rel_error = relative_error(ref, w)
            if c.recorded_rel_error is not None and not _close(c.rel_error, c.recorded_rel_error):
                c.problem = (
                    f"relative error {c.rel_error:.6f} against {against}, but {c.recorded_rel_error:.6f} "
                    "was recorded at compression: the decoder or the source changed"
                )
        elif c.kind == "raw":
            kept = art.raw[c.name]
            diff = float((kept.double() - ref_t.double()).abs().max()) if ref_t.numel() else 0.0
            c.max_abs_error, c.rel_error = diff, relative_error(ref_t.double().numpy(), kept.double().numpy())
            if not (kept.dtype == ref_t.dtype and torch.equal(kept, ref_t)):
                c.problem = f"kept exactly, but differs from {against} (max abs error {diff:g}, dtype {kept.dtype})"
        else:
            of = art.aliases[c.name]
            if of in src_names and not torch.equal(src.get(of), ref_t):
                c.problem = f"stored as a tie to {of!r}, but {against} holds a different tensor here"
    by_name = {c.name: c for c in report.tensors}
    for c in report.tensors:
        if c.kind == "alias":  # a tie restores exactly what its target does
            target = by_name[art.aliases[c.name]]
            c.max_abs_error, c.rel_error = target.max_abs_error, target.rel_error



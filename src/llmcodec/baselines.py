"""Calibration-free peer quantizers for one 2-D float matrix, with their side information counted.

Each peer maps a float32 matrix ``w`` to ``(w_hat, bits)`` where ``bits`` is everything a decoder
would need to store for this matrix: integer payload, fp16 scales/zeros, entropy-coder tables and
small headers. The tensor's shape is known from the model config and is not counted (for no method).

- ``RTN``: round-to-nearest affine quantization (``quant.quantize``), per group or per row.
- ``HQQ``: Half-Quadratic Quantization (PyPI ``hqq``), data-free optimized scale/zero, on CPU.
- ``ECSQ``: uniform scalar quantization followed by a real entropy coder (``constriction``'s range
  coder with a per-tensor categorical model, or zstd on the integer symbols), with the step chosen
  by bisection so that the coded size meets a bits-per-weight target. Every stream is decoded again
  and checked against the symbols it was made from.
- ``gaussian_rd_relative_error``: the Shannon bound for a Gaussian source, relative RMS error 2^-R.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .quant import QuantSpec, dequantize, quantize

Result = tuple[np.ndarray, int]  # (w_hat float32, total bits stored)

HEADER_BITS = 32  # one 32-bit field (a length, an alphabet offset, a step) in a small header


class MatrixQuantizer(Protocol):
    """A calibration-free quantizer of one 2-D float matrix."""

    @property
    def label(self) -> str: ...

    def __call__(self, w: np.ndarray) -> Result: ...


def _check(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {w.shape}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise ValueError("matrix contains NaN or Inf")
    return w


def gaussian_rd_relative_error(bpw: float | np.ndarray) -> float | np.ndarray:
    """Distortion-rate bound of a memoryless Gaussian source: D(R) = sigma^2 2^(-2R), so the relative
    RMS error is 2^(-R). No real quantizer of Gaussian-like weights can do better at R bits/weight."""
    return np.power(2.0, -np.asarray(bpw, dtype=np.float64))


# --- RTN ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RTN:
    """Round-to-nearest min/max affine quantization; fp16 scale + fp16 offset per group (or row)."""

    bits: int
    group: int | None = 128

    @property
    def label(self) -> str:
        return f"rtn b={self.bits} g={self.group or 'row'}"

    def __call__(self, w: np.ndarray) -> Result:
        qz = quantize(_check(w), QuantSpec(bits=self.bits, group=self.group))
        return dequantize(qz), self.bits * qz.q.size + qz.side_bits


# --- HQQ ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HQQ:
    """HQQ's quantizer (``hqq.core.quantize.Quantizer.quantize``) with HQQLinear's defaults: groups
    of ``group`` consecutive weights along a row (axis=1), proximal optimization of scale and zero on
    the weights themselves, zero rounded at 4 bits. HQQLinear stores scale and zero in its compute
    dtype (fp16) per group; they are rounded to fp16 here before dequantizing and counted as 16 + 16
    bits per group (also when the zero is a rounded integer: fp16 is what HQQ stores)."""

    bits: int
    group: int = 64

    @property
    def label(self) -> str:
        return f"hqq b={self.bits} g={self.group}"

    def __call__(self, w: np.ndarray) -> Result:
        import torch
        from hqq.core.quantize import Quantizer

        w = _check(w)
        if w.size % self.group:
            raise ValueError(f"HQQ needs the element count {w.size} to be a multiple of the group size {self.group}")
        with torch.inference_mode():
            wq, meta = Quantizer.quantize(
                torch.from_numpy(np.ascontiguousarray(w)),
                nbits=self.bits,
                channel_wise=True,
                group_size=self.group,
                optimize=True,
                round_zero=self.bits == 4,
                axis=1,
                bitpack=False,
                device="cpu",
            )
            scale = meta["scale"].to(torch.float16).float()
            zero = meta["zero"].to(torch.float16).float()
            w_hat = ((wq.float() - zero) * scale).reshape(w.shape).numpy().astype(np.float32)
        groups = w.size // self.group
        return w_hat, self.bits * w.size + 32 * groups


# --- ECSQ: uniform scalar quantization + entropy coding ------------------------------------------


@dataclass(frozen=True)
class Symbols:
    """Integer symbols of a uniform quantizer and how to restore floats from them."""

    q: np.ndarray  # int64, same shape as w
    step: np.ndarray  # float32: shape (1, 1) (one step) or (rows, 1) (one step per row)
    side_bits: int  # steps as stored


def uniform_symbols(w: np.ndarray, step: float, scope: str) -> Symbols:
    """Mid-tread uniform quantization ``q = round(w / step)``.

    scope "tensor": one fp32 step for the whole matrix (optimal for MSE under entropy coding at high
    rate: equal distortion everywhere). scope "row": step proportional to each row's RMS (fp16 per
    row), which equalizes relative error across rows instead.
    """
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"quantizer step must be positive and finite, got {step}")
    if scope == "tensor":
        s = np.full((1, 1), step, dtype=np.float32)
        side = HEADER_BITS
    elif scope == "row":
        rms = np.sqrt(np.mean(np.square(w, dtype=np.float64), axis=1, keepdims=True))
        rms = np.where(rms > 0, rms, 1.0).astype(np.float16).astype(np.float32)
        s = (rms * np.float32(step)).astype(np.float32)
        s = np.where(s > 0, s, np.float32(step))
        side = HEADER_BITS + 16 * w.shape[0]
    else:
        raise ValueError(f"unknown ECSQ scope {scope!r}; choose 'tensor' or 'row'")
    q = np.rint(w / s).astype(np.int64)
    return Symbols(q=q, step=s, side_bits=side)


def restore(sym: Symbols) -> np.ndarray:
    return (sym.q.astype(np.float32) * sym.step).astype(np.float32)


@dataclass(frozen=True)
class Coded:
    """An entropy-coded symbol stream; ``bits`` = stream + model table (compact form) + header."""

    stream: bytes
    lo: int  # alphabet offset: symbol = decoded index + lo
    counts: np.ndarray | None  # the model's histogram (range coder), None for zstd
    bits: int


class EntropyCoder(Protocol):
    name: str

    def encode(self, q: np.ndarray) -> Coded: ...

    def decode(self, coded: Coded, n: int) -> np.ndarray: ...

    def estimate_bits(self, q: np.ndarray) -> float: ...


def _alphabet(q: np.ndarray) -> tuple[int, np.ndarray]:
    lo = int(q.min())
    return lo, np.bincount((q - lo).ravel())


def _table_bits(counts: np.ndarray) -> int:
    """Counts stored with a fixed width: alphabet offset + size + width + one field per symbol."""
    width = max(1, int(counts.max()).bit_length())
    return 3 * HEADER_BITS + width * counts.size


def empirical_entropy_bits(q: np.ndarray) -> float:
    _, counts = _alphabet(q)
    p = counts[counts > 0] / q.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


@dataclass(frozen=True)
class RangeCoder:
    """constriction's range coder (queue semantics) with one categorical model per tensor, fitted to
    the tensor's own symbol histogram. The decoder rebuilds the model from the stored counts, which
    are counted in ``bits`` at a fixed width per symbol of the alphabet."""

    name: str = "range"

    def _model(self, counts: np.ndarray):
        import constriction  # its submodules are attributes, not importable modules

        return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)

    def encode(self, q: np.ndarray) -> Coded:
        import constriction

        lo, counts = _alphabet(q)
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode((q - lo).ravel().astype(np.int32), self._model(counts))
        words = enc.get_compressed()
        return Coded(words.tobytes(), lo, counts, 32 * words.size + _table_bits(counts) + HEADER_BITS)

    def decode(self, coded: Coded, n: int) -> np.ndarray:
        import constriction

        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(coded.stream, dtype=np.uint32).copy())
        return dec.decode(self._model(coded.counts), n).astype(np.int64) + coded.lo

    def estimate_bits(self, q: np.ndarray) -> float:
        _, counts = _alphabet(q)
        return empirical_entropy_bits(q) + _table_bits(counts) + HEADER_BITS


@dataclass(frozen=True)
class ZstdCoder:
    """zstd (level 19) on the symbols as bytes (uint8 when the alphabet fits, else uint16): the floor
    a general-purpose compressor gives. Its frame header is part of the payload."""

    name: str = "zstd"
    level: int = 19

    def encode(self, q: np.ndarray) -> Coded:
        import zstandard

        lo = int(q.min())
        span = int(q.max()) - lo
        dtype = np.uint8 if span < 256 else np.uint16
        raw = (q - lo).ravel().astype(dtype).tobytes()
        z = zstandard.ZstdCompressor(level=self.level).compress(raw)
        return Coded(z, lo, None, 8 * len(z) + 2 * HEADER_BITS)  # header: offset + symbol width

    def decode(self, coded: Coded, n: int) -> np.ndarray:
        import zstandard

        raw = zstandard.ZstdDecompressor().decompress(coded.stream, max_output_size=2 * n)
        dtype = np.uint8 if len(raw) == n else np.uint16
        return np.frombuffer(raw, dtype=dtype).astype(np.int64) + coded.lo

    def estimate_bits(self, q: np.ndarray) -> float:
        return empirical_entropy_bits(q) + 2 * HEADER_BITS


CODERS: dict[str, Callable[[], EntropyCoder]] = {"range": RangeCoder, "zstd": ZstdCoder}


GAUSS_STEP = math.sqrt(2 * math.pi * math.e)  # ECSQ of a Gaussian at high rate: H = log2(sigma * 4.13 / step)


def solve_step(bits_of: Callable[[float], float], aim: float, numel: int, guess: float, rel_tol: float = 1e-3) -> float:
    """A step whose size ``bits_of(step)`` is at most ``aim`` and within ``rel_tol`` of it.

    Safeguarded Newton in log2(step), using that the rate falls by about one bit per weight for each
    doubling of the step (exact at high rate, an underestimate of the move at low rate, so the
    iteration approaches from one side and then bisects the bracket). A few evaluations instead of
    the ~20 of plain bisection."""
    x = math.log2(guess)
    lo: float | None = None  # log2 step known to give more than aim
    hi: float | None = None  # log2 step known to give at most aim
    for _ in range(80):
        b = bits_of(2.0**x)
        if b <= aim:
            hi = x if hi is None else min(hi, x)
            if b >= aim * (1 - rel_tol):
                return 2.0**x
        else:
            lo = x if lo is None else max(lo, x)
        if lo is not None and hi is not None and hi - lo < 1e-6:
            break
        move = (b - aim) / numel  # > 0: step must grow
        move = math.copysign(max(abs(move), 1e-4), move)
        nx = x + move
        if lo is not None and hi is not None and not lo < nx < hi:
            nx = (lo + hi) / 2
        x = nx
    if hi is None:
        raise ValueError("no quantizer step meets the bit target")
    return 2.0**hi


def step_for_bits(w: np.ndarray, target_bits: float, scope: str, estimate: Callable[[np.ndarray], float]) -> float:
    """A step whose estimated coded size is at most ``target_bits`` (and within 0.1% of it)."""
    ref = 1.0 if scope == "row" else float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) or 1.0
    guess = ref * GAUSS_STEP * 2.0 ** -(target_bits / w.size)
    return solve_step(lambda st: estimate(uniform_symbols(w, st, scope).q), target_bits, w.size, guess)


@dataclass(frozen=True)
class ECSQ:
    """Entropy-coded uniform scalar quantization at a bits-per-weight target (side info counted).

    The step is found by bisection on the coder's size estimate (the empirical entropy for the range
    coder), then the matrix is really encoded and decoded; if the real size overshoots the target
    (zstd is above the entropy) the estimate's target is lowered by the measured gap and the step is
    searched again, a few times at most."""

    bpw: float
    coder: str = "range"
    scope: str = "tensor"
    rounds: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.bpw < 32:
            raise ValueError(f"bits per weight must be in (0, 32), got {self.bpw}")
        if self.coder not in CODERS:
            raise ValueError(f"unknown entropy coder {self.coder!r}; choose one of {', '.join(CODERS)}")

    @property
    def label(self) -> str:
        return f"ecsq-{self.coder} {self.scope} bpw={self.bpw}"

    def code(self, w: np.ndarray) -> tuple[Symbols, Coded]:
        w = _check(w)
        coder = CODERS[self.coder]()
        target = self.bpw * w.size
        aim = target
        best: tuple[Symbols, Coded] | None = None
        for _ in range(self.rounds):
            side_est = uniform_symbols(w, 1.0, self.scope).side_bits
            step = step_for_bits(w, aim - side_est, self.scope, coder.estimate_bits)
            sym = uniform_symbols(w, step, self.scope)
            coded = coder.encode(sym.q)
            total = coded.bits + sym.side_bits
            if total <= target and (best is None or total > best[1].bits + best[0].side_bits):
                best = (sym, coded)
            if 0.99 * target <= total <= target:
                break
            # Move the estimate's target by the measured gap, plus a little more: the bisection's
            # resolution is about 1e-4 in step, i.e. ~1e-4 * numel bits.
            aim -= total - target + 1e-3 * target
        for _ in range(500):  # zstd's size is not monotone in the step: widen the step until it fits
            if best is not None:
                break
            step *= 1.01
            sym = uniform_symbols(w, step, self.scope)
            coded = coder.encode(sym.q)
            if coded.bits + sym.side_bits <= target:
                best = (sym, coded)
        if best is None:
            raise ValueError(f"ECSQ could not meet {self.bpw} bits/weight for a {w.shape} matrix")
        sym, coded = best
        decoded = coder.decode(coded, sym.q.size).reshape(sym.q.shape)
        if not np.array_equal(decoded, sym.q):
            raise RuntimeError(f"{coder.name} coder did not decode its own stream back to the same symbols")
        return sym, coded

    def __call__(self, w: np.ndarray) -> Result:
        sym, coded = self.code(w)
        return restore(sym), coded.bits + sym.side_bits


# --- registry ----------------------------------------------------------------------------------

METHODS: dict[str, Callable[..., MatrixQuantizer]] = {"rtn": RTN, "hqq": HQQ, "ecsq": ECSQ}


def make(method: str, **params) -> MatrixQuantizer:
    """A peer by registry name, e.g. ``make("rtn", bits=3, group=64)``, ``make("ecsq", bpw=2.5)``."""
    if method not in METHODS:
        raise ValueError(f"unknown peer method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](**params)


def ecsq_shared_step(
    matrices: list[np.ndarray], bpw: float, coder: str = "range", scope: str = "tensor", rounds: int = 4
) -> list[Result]:
    """ECSQ with one step shared by all matrices (``scope`` as in ``uniform_symbols``), chosen so the
    total coded size meets ``bpw`` over all of them: equal slopes across tensors, which minimizes the
    total squared error (``tensor``) or the total relative error (``row``) for the budget, instead of
    spending the same rate on every tensor. Streams are encoded and decoded for real."""
    ws = [_check(w) for w in matrices]
    c = CODERS[coder]()
    target = bpw * sum(w.size for w in ws)
    side = sum(uniform_symbols(w, 1.0, scope).side_bits for w in ws)

    def estimate(step: float) -> float:
        return sum(c.estimate_bits(uniform_symbols(w, step, scope).q) for w in ws) + side

    def encode(step: float) -> tuple[list[tuple[Symbols, Coded]], float]:
        out = [(s, c.encode(s.q)) for s in (uniform_symbols(w, step, scope) for w in ws)]
        return out, float(sum(cd.bits + s.side_bits for s, cd in out))

    n = sum(w.size for w in ws)
    rms = 1.0 if scope == "row" else math.sqrt(sum(float(np.square(w, dtype=np.float64).sum()) for w in ws) / n)
    aim = target
    for _ in range(rounds):
        step = solve_step(estimate, aim, n, (rms or 1.0) * GAUSS_STEP * 2.0 ** -(aim / n))
        coded, total = encode(step)
        if total <= target:
            break
        aim -= total - target + 1e-3 * target
    else:
        raise ValueError(f"ECSQ with a shared step could not meet {bpw} bits/weight")
    results = []
    for s, cd in coded:
        if not np.array_equal(c.decode(cd, s.q.size).reshape(s.q.shape), s.q):
            raise RuntimeError(f"{c.name} coder did not decode its own stream back to the same symbols")
        results.append((restore(s), cd.bits + s.side_bits))
    return results

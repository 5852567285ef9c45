"""ECSQ: uniform scalar quantization then a real entropy coder, the step found for a bits-per-weight target."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .common import HEADER_BITS, Result, check_matrix
from .entropy import CODERS, Coded


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
        w = check_matrix(w)
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


def ecsq_shared_step(
    matrices: list[np.ndarray], bpw: float, coder: str = "range", scope: str = "tensor", rounds: int = 4
) -> list[Result]:
    """ECSQ with one step shared by all matrices (``scope`` as in ``uniform_symbols``), chosen so the
    total coded size meets ``bpw`` over all of them: equal slopes across tensors, which minimizes the
    total squared error (``tensor``) or the total relative error (``row``) for the budget, instead of
    spending the same rate on every tensor. Streams are encoded and decoded for real."""
    ws = [check_matrix(w) for w in matrices]
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

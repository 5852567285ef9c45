"""Rate control: choose a QP per tensor so the whole model lands on a bits-per-weight budget.

1. A global QP is found by bisection on cheap row samples of every tensor (the rate of a sample
   tracks the rate of its matrix closely).
2. Every tensor is encoded at that QP; the measured total is then corrected by moving single
   tensors one QP step up or down, choosing moves from the sample curves and measuring each move.
3. The budget left is filled: tensors whose next-better QP is estimated to fit in what is left
   are measured there too (the coarsest tensors first, then the cheapest moves; further rounds
   while more than 0.1% of the budget is left).
4. Finally, from everything measured, the highest-rate mix of measured options that stays within
   the budget is kept; it has to land within ``tolerance`` below the target.

The functions here only see numbers and callbacks, so they are tested without any codec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Measure = Callable[[list[tuple[int, int]]], list[float]]  # [(tensor, qp)] -> bits for each


class BudgetError(ValueError):
    """The requested bits per weight cannot be reached by any QP."""


@dataclass
class Allocation:
    qps: list[int]
    bits: list[float]  # measured bits of each tensor at its QP (side information included)
    total_bits: float


def _bisect_global(sample_bpw: Callable[[int], float], target_bpw: float, qp_lo: int, qp_hi: int) -> int:
    """Smallest QP (best quality) whose estimated rate is at most the target; qp_hi if none."""
    lo, hi = qp_lo, qp_hi
    while lo < hi:
        mid = (lo + hi) // 2
        if sample_bpw(mid) <= target_bpw:
            hi = mid
        else:
            lo = mid + 1
    return lo


def allocate(
    numel: Sequence[int],
    side_bits: Sequence[float],
    target_bpw: float,
    qp_range: tuple[int, int],
    measure_full: Measure,
    measure_sample: Measure,
    tolerance: float = 0.03,
    max_rounds: int = 6,
    qp_offsets: Sequence[int] | None = None,
    equal_rate: bool = False,
    probe_span: int = 3,
    fill_rounds: int = 3,
    refill: float = 0.001,
) -> Allocation:
    """Per-tensor QPs with total bits in [target*(1-tolerance), target] * total weights.

    ``measure_full`` returns bits of the whole tensor (bitstream only); ``measure_sample`` returns
    bits *per weight* of the tensor's row sample. Both take a batch so callers can run it in parallel.
    ``qp_offsets`` fixes each tensor's QP relative to a common base QP, which is what is searched.
    ``equal_rate``: after the global search, each tensor starts from the QP (within ``probe_span`` of
    the global one) whose sample rate, side information included, is closest to the target, so every
    tensor spends about the same bits per weight, as a per-tensor rate-controlled quantizer does;
    the moves below then fill the budget. ``fill_rounds``: at most this many rounds of step 3 (each
    measures the moves it tries at full size); a round after the first runs only while more than
    ``refill`` of the budget is left, so a model of few tensors, whose moves are coarse, still lands
    close (MiniLM: 3.4918 for 3.5 with one round, 3.4988 with two) and one that already landed
    close encodes nothing more.
    """
    n = len(numel)
    qp_lo, qp_hi = min(qp_range), max(qp_range)
    total_w = float(sum(numel))
    budget = target_bpw * total_w
    floor = budget * (1 - tolerance)
    side = float(sum(side_bits))
    if side >= budget:
        raise BudgetError(
            f"{target_bpw} bits per weight is below the side information alone "
            f"({side / total_w:.3f} bits per weight); use larger groups or a higher --bpw"
        )

    sample_cache: dict[tuple[int, int], float] = {}

    def samples(jobs: list[tuple[int, int]]) -> None:
        todo = [j for j in dict.fromkeys(jobs) if j not in sample_cache]
        if todo:
            sample_cache.update(zip(todo, measure_sample(todo), strict=True))

    off = list(qp_offsets) if qp_offsets is not None else [0] * n

    def qp_at(i: int, base: int) -> int:
        return min(qp_hi, max(qp_lo, base + off[i]))

    def est_total(base: int) -> float:
        samples([(i, qp_at(i, base)) for i in range(n)])
        return (sum(sample_cache[i, qp_at(i, base)] * numel[i] for i in range(n)) + side) / total_w

    base = _bisect_global(est_total, target_bpw, qp_lo - max(off), qp_hi - min(off))

    full: dict[tuple[int, int], float] = {}

    def measure(jobs: list[tuple[int, int]]) -> None:
        todo = [j for j in dict.fromkeys(jobs) if j not in full]
        if todo:
            full.update(zip(todo, measure_full(todo), strict=True))

    qps = [qp_at(i, base) for i in range(n)]
    if equal_rate:
        cands = [[q for q in range(qps[i] - probe_span, qps[i] + probe_span + 1) if qp_lo <= q <= qp_hi]
                 for i in range(n)]
        samples([(i, q) for i in range(n) for q in cands[i]])
        for i in range(n):
            want = target_bpw - side_bits[i] / numel[i]
            qps[i] = min(cands[i], key=lambda q, i=i, want=want: (abs(sample_cache[i, q] - want), q))
    measure(list(enumerate(qps)))

    def total() -> float:
        return sum(full[i, qps[i]] for i in range(n)) + side

    def estimate(i: int, qp: int) -> float:
        if (i, qp) in full:
            return full[i, qp]
        samples([(i, qps[i]), (i, qp)])
        base = sample_cache[i, qps[i]]
        ratio = sample_cache[i, qp] / base if base > 0 else 1.0
        return full[i, qps[i]] * ratio

    for _ in range(max_rounds):
        t = total()
        if floor <= t <= budget:
            break
        step = 1 if t > budget else -1
        goal = budget - 0.25 * tolerance * budget if step == 1 else budget - 0.5 * tolerance * budget
        cand = [i for i in range(n) if qp_lo <= qps[i] + step <= qp_hi]
        if not cand:
            break
        deltas = {i: estimate(i, qps[i] + step) - full[i, qps[i]] for i in cand}
        # Big movers first when far away, then finer ones; stop once the estimate reaches the goal.
        order = sorted(cand, key=lambda i: -abs(deltas[i]))
        moves, est = [], t
        for i in order:
            if (step == 1 and est <= goal) or (step == -1 and est + deltas[i] > goal):
                continue
            moves.append(i)
            est += deltas[i]
        if not moves:
            break
        measure([(i, qps[i] + step) for i in moves])
        for i in moves:
            qps[i] += step

    for k in range(fill_rounds):
        slack = budget - total()
        cand = [i for i in range(n) if qps[i] - 1 >= qp_lo and (i, qps[i] - 1) not in full]
        if slack <= (0 if k == 0 else refill * budget) or not cand:
            break
        deltas = {i: estimate(i, qps[i] - 1) - full[i, qps[i]] for i in cand}
        moves, used = [], 0.0
        for i in sorted(cand, key=lambda i: (-qps[i], deltas[i])):  # coarsest first: QPs stay close
            if used + deltas[i] <= slack:
                moves.append(i)
                used += deltas[i]
        if not moves:
            break
        measure([(i, qps[i] - 1) for i in moves])  # _best_mix keeps those that really fit
        qps = _best_mix(n, full, side, budget, off) or qps

    qps = _best_mix(n, full, side, budget, off)
    if qps is None:
        best = min(sum(min(b for (j, _), b in full.items() if j == i) for i in range(n)) + side, budget * 10)
        raise BudgetError(
            f"{target_bpw} bits per weight is out of reach: the lowest rate measured is "
            f"{best / total_w:.3f} bits per weight at QP {qp_hi}; ask for at least that"
        )
    bits = [full[i, qps[i]] for i in range(n)]
    t = sum(bits) + side
    if t < floor and all(q == qp_lo for q in qps):
        raise BudgetError(
            f"{target_bpw} bits per weight is above what the codec spends at its best QP "
            f"{qp_lo} ({t / total_w:.3f} bits per weight); ask for at most that, or use lossless"
        )
    return Allocation(qps=qps, bits=bits, total_bits=t)


def _best_mix(
    n: int, full: dict[tuple[int, int], float], side: float, budget: float, off: Sequence[int] | None = None
) -> list[int] | None:
    """From measured (tensor, QP) options, greedily fill the budget: each step upgrades, among the
    upgrades that still fit, the tensor furthest above its place (QP minus its offset ``off``),
    the cheapest of those first, so that the tensors stay at about the same quality."""
    off = off or [0] * n
    options: list[list[tuple[int, float]]] = [
        sorted(((q, b) for (j, q), b in full.items() if j == i), key=lambda x: -x[0]) for i in range(n)
    ]
    choice = [0] * n  # index into options[i], which runs from highest QP (fewest bits) down
    t = sum(opts[0][1] for opts in options) + side
    if t > budget:
        return None
    improved = True
    while improved:
        improved = False
        best_i, best_d, best_key = -1, float("inf"), None
        for i in range(n):
            if choice[i] + 1 < len(options[i]):
                d = options[i][choice[i] + 1][1] - options[i][choice[i]][1]
                key = (-(options[i][choice[i]][0] - off[i]), d)
                if t + d <= budget and (best_key is None or key < best_key):
                    best_i, best_d, best_key = i, d, key
        if best_i >= 0:
            choice[best_i] += 1
            t += best_d
            improved = True
    return [options[i][choice[i]][0] for i in range(n)]

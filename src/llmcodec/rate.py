"""Rate control: choose a QP per tensor so the whole model lands on a bits-per-weight budget.

The default search codes every tensor about once. Where the codec has a rate model (ratemodel.py:
each tensor's rate at any QP predicted from its coefficients, right up to a factor common to all
tensors), steps 1 and 2 below are skipped: the first stage is a few typical tensors planned from the
predictions alone, and the factor measured on them plans the rest. Elsewhere cheap probes come first:

1. Locate: the common base QP is bracketed with row samples of a spread-out subset of the tensors
   (a few QPs; the next QP to probe comes from the measured slope of rate against QP).
2. Probe: every tensor's row sample is coded once, at that base QP; the subset's two QPs give the
   rate ratio per QP step used for every other QP.
3. Plan and code in stages: the subset first, at the QPs planned from the samples; the measured
   rates of each stage correct the samples' bias for the rest, which are then planned into what
   the budget leaves and coded (a third of them, then the others).
4. Correct: if the total lands above the budget (or more than half the tolerance below it),
   single tensors move one QP and are coded again, chosen from the estimated rates.
5. Finally, from everything measured, the highest-rate mix of measured options that stays within
   the budget is kept; it has to land within ``tolerance`` below the target.

``equal_rate`` keeps the older, slower search (bisection on samples of every tensor, one full
encode, moves and fill rounds), which it needs for its per-tensor starting QPs.

The functions here only see numbers and callbacks, so they are tested without any codec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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


def _allocate_search(
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
    close and one that already landed close encodes nothing more.
    """
    n = len(numel)
    qp_lo, qp_hi = min(qp_range), max(qp_range)
    total_w = float(sum(numel))
    budget = target_bpw * total_w
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

    def estimate(i: int, cur: int, qp: int) -> float:
        if (i, qp) in full:
            return full[i, qp]
        samples([(i, cur), (i, qp)])
        base = sample_cache[i, cur]
        ratio = sample_cache[i, qp] / base if base > 0 else 1.0
        return full[i, cur] * ratio

    return _land(qps, full, measure, estimate, side, budget, tolerance, (qp_lo, qp_hi), off, target_bpw,
                 total_w, max_rounds, fill_rounds, refill, fill_from=0.0)


def spread_subset(n: int, share: float, least: int = 4) -> list[int]:
    """About ``share`` of ``range(n)``, spread evenly (golden-ratio sequence), so that a subset of a
    model's tensors holds every kind and depth even when the kinds repeat with a fixed period."""
    if n <= least:
        return list(range(n))
    picked = [i for i in range(n) if (i * 0.6180339887498949) % 1.0 < share]
    return picked if len(picked) >= least else list(range(least))


def _plan(
    idx: Sequence[int], pred: Callable[[int, int], float], room: float, off: Sequence[int], qp_range: tuple[int, int]
) -> dict[int, int]:
    """QPs for the tensors ``idx`` whose predicted bits fill ``room``: the best common base (QP minus
    offset) that fits, then single tensors one QP better, the cheapest first, while they fit."""
    qp_lo, qp_hi = qp_range

    def at(i: int, base: int) -> int:
        return min(qp_hi, max(qp_lo, base + off[i]))

    lo, hi = qp_lo - max(off), qp_hi - min(off)
    base = hi
    for b in range(lo, hi + 1):  # the rate falls with the base: the first that fits is the best
        if sum(pred(i, at(i, b)) for i in idx) <= room:
            base = b
            break
    qps = {i: at(i, base) for i in idx}
    used = sum(pred(i, q) for i, q in qps.items())
    deltas = {i: pred(i, qps[i] - 1) - pred(i, qps[i]) for i in idx if qps[i] - 1 >= qp_lo}
    for i in sorted(deltas, key=lambda i: (deltas[i], i)):
        if used + deltas[i] <= room:
            qps[i] -= 1
            used += deltas[i]
    return qps


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
    start_qp: int | None = None,
    locate_share: float = 0.15,
    stages: int = 3,
    fill_from: float | None = None,
    predict: Callable[[int, int], float] | None = None,
    first_share: float = 0.05,
) -> Allocation:
    """Per-tensor QPs with total bits in [target*(1-tolerance), target] * total weights.

    ``measure_full`` returns bits of the whole tensor (bitstream only); ``measure_sample`` returns
    bits *per weight* of the tensor's row sample. Both take a batch so callers can run it in parallel.
    ``qp_offsets`` fixes each tensor's QP relative to a common base QP, which is what is searched.
    The steps are in the module's docstring: ``locate_share`` of the tensors locate the base QP,
    starting at ``start_qp`` (None: the middle of the range); they are coded first, then the rest in
    ``stages - 1`` stages (``_stages``).
    ``fill_rounds`` and ``refill`` bound the fill after landing (see ``_land``); it starts only when
    the landing is more than ``fill_from`` of the budget under it (None: half the tolerance).
    ``equal_rate``: after the global search, each tensor starts from the QP (within ``probe_span`` of
    the global one) whose sample rate, side information included, is closest to the target, so every
    tensor spends about the same bits per weight, as a per-tensor rate-controlled quantizer does
    (the older search, ``_allocate_search``).
    ``predict`` (tensor, QP) -> bits of the tensor's bitstream, right up to a factor common to all
    tensors (ratemodel.py): it replaces steps 1 and 2, so no sample is coded; the first stage
    (``first_share`` of the tensors, spread like ``spread_subset``) is planned from it as it is, the
    later ones with the factor measured on the stages before.
    """
    if equal_rate:
        return _allocate_search(numel, side_bits, target_bpw, qp_range, measure_full, measure_sample, tolerance,
                                max_rounds, qp_offsets, True, probe_span, fill_rounds, refill)
    n = len(numel)
    qp_lo, qp_hi = min(qp_range), max(qp_range)
    total_w = float(sum(numel))
    budget = target_bpw * total_w
    side = float(sum(side_bits))
    if side >= budget:
        raise BudgetError(
            f"{target_bpw} bits per weight is below the side information alone "
            f"({side / total_w:.3f} bits per weight); use larger groups or a higher --bpw"
        )
    off = list(qp_offsets) if qp_offsets is not None else [0] * n
    lo_b, hi_b = qp_lo - max(off), qp_hi - min(off)

    def qp_at(i: int, base: int) -> int:
        return min(qp_hi, max(qp_lo, base + off[i]))

    if predict is not None:
        # the first stage learns the predictions' factor on typical tensors, large ones come later
        large = {i for i in range(n) if numel[i] > LOCATE_LARGE * total_w}
        sub = [i for i in spread_subset(n, first_share) if i not in large] or spread_subset(n, first_share)
        memo: dict[tuple[int, int], float] = {}

        def pred(i: int, qp: int) -> float:
            q = min(qp_hi, max(qp_lo, qp))
            if (i, q) not in memo:
                memo[i, q] = predict(i, q)
            return memo[i, q]

        ratio: float | None = None  # each tensor's moves are estimated from its own predictions (``estimate``)
    else:
        start = start_qp if start_qp is not None else (qp_lo + qp_hi) // 2
        sub, pred, ratio = _sampled_rates(numel, budget - side, qp_at, (lo_b, hi_b), start, measure_sample,
                                          locate_share)

    # 3. Code the tensors in stages, each planned into what the budget leaves for it and the stages
    # after it, with the samples' bias measured on the stages before (the first is the subset).
    full: dict[tuple[int, int], float] = {}

    def measure(jobs: list[tuple[int, int]]) -> None:
        todo = [j for j in dict.fromkeys(jobs) if j not in full]
        if todo:
            full.update(zip(todo, measure_full(todo), strict=True))

    aim = budget * (1 - tolerance / 4) - side
    plan: dict[int, int] = {}
    spent = predicted = 0.0
    left = list(range(n))
    for stage in _stages(n, sub, stages):
        bias = spent / predicted if predicted > 0 else 1.0
        plan.update({i: q for i, q in _plan(left, lambda i, q, b=bias: b * pred(i, q), aim - spent, off,
                                             (qp_lo, qp_hi)).items() if i in stage})
        measure([(i, plan[i]) for i in stage])
        spent += sum(full[i, plan[i]] for i in stage)
        predicted += sum(pred(i, plan[i]) for i in stage)
        left = [i for i in left if i not in stage]
    qps = [plan[i] for i in range(n)]

    def estimate(i: int, cur: int, qp: int) -> float:
        """Bits of tensor ``i`` at ``qp`` from its bits measured at ``cur``: the rate model's ratio
        between the two QPs, else a ratio per QP step common to all tensors."""
        if (i, qp) in full:
            return full[i, qp]
        if ratio is None:
            return full[i, cur] * pred(i, qp) / max(pred(i, cur), 1e-9)
        # once tensors were coded at two neighbouring QPs, their median ratio replaces the samples'
        steps = [np.log(full[j, q - 1] / b) for (j, q), b in full.items() if (j, q - 1) in full and b > 0]
        step = float(np.exp(np.median(steps))) if len(steps) >= 3 else ratio
        return full[i, cur] * step ** (cur - qp)

    # 4.-5. Correct, then keep the best measured mix.
    return _land(qps, full, measure, estimate, side, budget, tolerance, (qp_lo, qp_hi), off, target_bpw,
                 total_w, max_rounds, fill_rounds, refill, tolerance / 2 if fill_from is None else fill_from)


def _sampled_rates(
    numel: Sequence[int],
    want: float,
    qp_at: Callable[[int, int], int],
    bases: tuple[int, int],
    start: int,
    measure_sample: Measure,
    locate_share: float,
) -> tuple[list[int], Callable[[int, int], float], float]:
    """Steps 1 and 2 of the search with row samples: the locate subset, each tensor's predicted bits
    at any QP (its sample at the base, other QPs by the subset's ratio per QP step), and that ratio.
    ``want``: the bits the tensors may take together; ``bases``: the range of the base QP, searched
    from ``start``."""
    n = len(numel)
    lo_b, hi_b = bases
    cache: dict[tuple[int, int], float] = {}

    def sampled(idx: Sequence[int], base: int) -> None:
        """Row samples of ``idx`` at ``base``, each coded once."""
        todo = [j for j in dict.fromkeys((i, qp_at(i, base)) for i in idx) if j not in cache]
        if todo:
            cache.update(zip(todo, measure_sample(todo), strict=True))

    # 1. Locate the base on a subset: the smallest base whose sampled rate, scaled to the model, fits.
    sub, model_bits = _locate_subset(numel, locate_share)
    known: dict[int, float] = {}
    base = min(hi_b, max(lo_b, start))
    while True:
        sampled(sub, base)
        known[base] = model_bits({i: cache[i, qp_at(i, base)] * numel[i] for i in sub})
        ok = [b for b, v in known.items() if v <= want]
        bad = [b for b, v in known.items() if v > want]
        lo_ok = min(ok) if ok else None
        if lo_ok is not None and (lo_ok == lo_b or lo_ok - 1 in bad):
            base = lo_ok
            break
        if lo_ok is None and max(bad) == hi_b:
            base = hi_b
            break
        # the next base from the slope between the two nearest probes (a 15% step per QP before two)
        near = sorted(known, key=lambda b: abs(b - base))[:2]
        g = _slope(known, near)
        guess = base + int(np.ceil(np.log(known[base] / want) / np.log(g) - 1e-9))
        top = lo_ok - 1 if lo_ok is not None else hi_b  # the answer lies in (max(bad), lo_ok]
        bottom = max(bad) + 1 if bad else lo_b
        guess = min(top, max(bottom, guess))
        if guess in known:  # only when rates rose with the QP somewhere: the best base seen to fit
            base = lo_ok if lo_ok is not None else hi_b
            break
        base = guess
    g = _slope(known, [b for b in known if abs(b - base) <= 3])

    # 2. Every tensor's sample at the base; other QPs by the subset's ratio per QP step.
    sampled(range(n), base)
    at_base = [cache[i, qp_at(i, base)] * numel[i] for i in range(n)]

    def pred(i: int, qp: int) -> float:
        return at_base[i] * g ** (qp_at(i, base) - qp)

    return sub, pred, g


# Tensors holding more than this share of the model's weights (token embeddings, output heads) are
# each in the locate subset and stand for themselves there, not for a share of the others.
LOCATE_LARGE = 0.03


def _locate_subset(
    numel: Sequence[int], share: float
) -> tuple[list[int], Callable[[dict[int, float]], float]]:
    """The tensors that locate the base (``spread_subset`` plus every large one), and the model's
    bits estimated from their bits: the large ones as they are, the others scaled up to all the
    others' weights. A large tensor that the subset's share stood for would weigh on the estimate
    as if it were a sample of the rest (an embedding at its QP floor, cheaper per weight than the
    matrices, made the base come out several QPs too fine)."""
    n, total = len(numel), float(sum(numel))
    large = {i for i in range(n) if numel[i] > LOCATE_LARGE * total}
    sub = sorted(set(spread_subset(n, share)) | large)
    rest = [i for i in sub if i not in large]
    rest_w = total - sum(numel[i] for i in large)
    if not rest and rest_w > 0:  # only large ones picked: the others are all in
        rest = [i for i in range(n) if i not in large]
        sub = sorted(large | set(rest))
    scale = rest_w / sum(numel[i] for i in rest) if rest else 0.0

    def model_bits(bits: dict[int, float]) -> float:
        return sum(bits[i] for i in large) + scale * sum(bits[i] for i in rest)

    return sub, model_bits


def _stages(n: int, first: Sequence[int], count: int) -> list[set[int]]:
    """``first``, then the other tensors in ``count - 1`` stages of growing size (a third, then the
    rest, for three), each spread over the model like ``spread_subset``."""
    head = set(first)
    rest = sorted((i for i in range(n) if i not in head), key=lambda i: ((i * 0.6180339887498949) % 1.0, i))
    out = [head]
    cuts = [round(len(rest) * (2 ** k - 1) / (2 ** (count - 1) - 1)) for k in range(count)] if count > 1 else [0]
    for a, b in zip(cuts, cuts[1:], strict=False):
        out.append(set(rest[a:b]))
    if count <= 1:
        out[0] |= set(rest)
    return [s for s in out if s]


def _slope(known: dict[int, float], bases: Sequence[int], default: float = 1.15) -> float:
    """Rate ratio per QP step fitted (least squares on the log rate) to the probed ``bases``
    (``default`` with fewer than two), kept in [1.01, 2]."""
    pts = [(b, known[b]) for b in set(bases) if known[b] > 0]
    if len(pts) < 2:
        return default
    x = np.array([b for b, _ in pts], dtype=np.float64)
    y = np.log([v for _, v in pts])
    slope = -float(np.polyfit(x, y, 1)[0])
    return float(min(2.0, max(1.01, np.exp(slope))))


def _land(
    qps: list[int],
    full: dict[tuple[int, int], float],
    measure: Callable[[list[tuple[int, int]]], None],
    estimate: Callable[[int, int, int], float],  # (tensor, measured QP, QP) -> bits
    side: float,
    budget: float,
    tolerance: float,
    qp_range: tuple[int, int],
    off: Sequence[int],
    target_bpw: float,
    total_w: float,
    max_rounds: int,
    fill_rounds: int,
    refill: float,
    fill_from: float,
) -> Allocation:
    """From tensors measured at ``qps``: move single tensors one QP (measured) until the total is within
    [budget * (1 - tolerance), budget]; then fill what is left (a first round only while more than
    ``fill_from`` of the budget is left, later ones while more than ``refill``); then keep the
    best mix of everything measured (``_best_mix``)."""
    n = len(qps)
    qp_lo, qp_hi = qp_range
    floor = budget * (1 - tolerance)
    qps = list(qps)

    def total() -> float:
        return sum(full[i, qps[i]] for i in range(n)) + side

    for _ in range(max_rounds):
        t = total()
        if floor <= t <= budget:
            break
        step = 1 if t > budget else -1
        goal = budget - 0.25 * tolerance * budget if step == 1 else budget - 0.5 * tolerance * budget
        cand = [i for i in range(n) if qp_lo <= qps[i] + step <= qp_hi]
        if not cand:
            break
        deltas = {i: estimate(i, qps[i], qps[i] + step) - full[i, qps[i]] for i in cand}
        # Tensors furthest from their place (QP minus offset) in the move's direction first, so the
        # offsets hold (a large tensor moved first would lose its offset); stop at the goal.
        order = sorted(cand, key=lambda i: (step * (qps[i] - off[i]), -abs(deltas[i])))
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
        if slack <= (fill_from if k == 0 else refill) * budget or not cand:
            break
        deltas = {i: estimate(i, qps[i], qps[i] - 1) - full[i, qps[i]] for i in cand}
        moves, used = [], 0.0
        for i in sorted(cand, key=lambda i: (off[i] - qps[i], deltas[i])):  # coarsest for its place first
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

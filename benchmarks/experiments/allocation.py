"""How the step is shared between tensors: a scalar-quantizer simulation of llmcodec's allocations.

    .venv/bin/python benchmarks/experiments/allocation.py [--models smollm2-135m,minilm] [--budgets 2.5,3.5]

Each coded matrix (the ones run.py codes), times its balance column multipliers as the default
codes it, is rounded to a uniform grid `round(W c / step) * step / c`, and its rate is the order-0
entropy of those integers (no codec, no side information): only how the step is shared between
tensors differs between rows. One scale `D`, found by bisection, meets the budget; each tensor's
step in weight units is then

* `equal-qp`: `D` times each row's scale as llmcodec's coefficient domain sets it (`quant.quantize`
  with the default's 8-bit log scales: the row's RMS times one factor per matrix from its peak
  sample), i.e. the step every row gets at one QP;
* `equal-error`: `D`, the same everywhere (minimum total squared weight error);
* `capped-error k`: `D` times `compress.capped_steps`' shrink, i.e. equal error except that no
  tensor's error relative to its RMS exceeds k times the median tensor's;
* `protect layer 0 v/o` (SmolLM2 only): equal error except that the layer-0 v_proj and o_proj get
  a step proportional to their RMS; a diagnostic, not an option.

Perplexity is run.py's (PTB test, 8 windows of 512 tokens); MiniLM gets its sentence-embedding
cosine. The built-in SmolLM2-135M's weights were already 4-bit (GGUF Q4_1). Writes
benchmarks/experiments/ALLOCATION.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402
from run import MINILM, SMOL, MiniLM, Smol, balance_multipliers, codable_names  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.baselines import empirical_entropy_bits  # noqa: E402
from llmcodec.codecs import get_codec  # noqa: E402
from llmcodec.coder import quant_spec  # noqa: E402
from llmcodec.compress import capped_steps  # noqa: E402
from llmcodec.quant import quantize  # noqa: E402

LAYER0_VO = re.compile(r"layers\.0\.self_attn\.(v|o)_proj\.weight$")


def tensor_steps(rule: str, ws: dict[str, np.ndarray], cs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each tensor's step on ``W c`` for ``D = 1``, one value per row (shape (rows, 1))."""
    names = list(ws)
    # a step s on W c is a weight-unit RMS step of s * rms(1/c): divide it out for equal weight error
    unit = {n: 1.0 / float(np.sqrt(np.mean(1.0 / np.square(cs[n])))) for n in names}
    rms = [float(np.sqrt(np.mean(np.square(ws[n])))) for n in names]
    if rule == "equal-qp":
        vvc = get_codec("vvc")  # the default's quantizer; its row scales do not depend on the budget's profile
        spec = quant_spec(vvc, vvc.profile_for(None, None), compact=True)
        return {n: quantize((ws[n] * cs[n][None, :]).astype(np.float32), spec).scale.astype(np.float64)
                for n in names}
    if rule == "equal-error":
        shrink = [1.0] * len(names)
    elif rule.startswith("capped-error"):
        shrink = list(1.0 / np.asarray(capped_steps([1.0] * len(names), rms, float(rule.split()[1]))))
    elif rule == "protect layer 0 v/o":
        med = float(np.median(rms))
        shrink = [r / med if LAYER0_VO.search(n) else 1.0 for n, r in zip(names, rms, strict=True)]
    else:
        raise ValueError(f"unknown rule {rule!r}")
    return {n: np.full((ws[n].shape[0], 1), 0.02 * unit[n] * s) for n, s in zip(names, shrink, strict=True)}


def simulate(ws: dict[str, np.ndarray], cs: dict[str, np.ndarray], rule: str, bpw: float):
    """(bits per weight, relative error, restored matrices) of a rule at the scale meeting ``bpw``."""
    base = tensor_steps(rule, ws, cs)
    total = sum(w.size for w in ws.values())

    def coded(log_d: float, keep: bool):
        bits, out = 0.0, {}
        for n, w in ws.items():
            step = base[n] * 2.0**log_d
            q = np.round(w * cs[n][None, :] / step)
            bits += empirical_entropy_bits(q.astype(np.int64))
            if keep:
                out[n] = (q * step / cs[n][None, :]).astype(np.float32)
        return bits / total, out

    lo, hi = -10.0, 10.0
    for _ in range(16):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if coded(mid, False)[0] > bpw else (lo, mid)
    rate, out = coded(hi, True)
    err = sum(float(np.square(out[n] - w).sum()) for n, w in ws.items())
    ref = sum(float(np.square(w).sum()) for w in ws.values())
    return rate, float(np.sqrt(err / ref)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=f"{SMOL},{MINILM}")
    ap.add_argument("--budgets", default="2.5,3.5")
    ap.add_argument("--caps", default="1.25,1.5,2")
    ap.add_argument("--out", type=Path, default=HERE / "ALLOCATION.md")
    args = ap.parse_args()
    info = sysinfo.describe()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    budgets = [float(b) for b in args.budgets.split(",")]
    rules = ["equal-qp", "equal-error", *(f"capped-error {k}" for k in args.caps.split(","))]
    lines = [
        "# Sharing the step between tensors (scalar-quantizer simulation)",
        "",
        f"Regenerate: `.venv/bin/python benchmarks/experiments/allocation.py --models {args.models} --budgets "
        f"{args.budgets} --caps {args.caps}`. What each rule is: the docstring of `allocation.py`. "
        "Uniform rounding of `W c` (balance multipliers), rate = order-0 entropy of the integers, no "
        "codec and no side information: the rows compare allocations, not codecs. **SmolLM2-135M's "
        "weights were already 4-bit (GGUF Q4_1).**",
        "",
    ]
    for key in args.models.split(","):
        model = Smol(8) if key == SMOL else MiniLM(300) if key == MINILM else None
        if model is None:
            raise SystemExit(f"allocation.py: error: unknown model {key!r}; choose {SMOL} or {MINILM}")
        names = codable_names(model.state)
        ws = {n: model.state[n].float().numpy() for n in names}
        cs = {n: balance_multipliers(w).astype(np.float64) for n, w in ws.items()}
        metric = "perplexity" if key == SMOL else "cos_mean"
        lines += [f"## {key}", "", f"| bpw target | rule | bpw | relative error | {metric} |", "|---|---|---|---|---|"]
        for bpw in budgets:
            for rule in rules + (["protect layer 0 v/o"] if key == SMOL else []):
                rate, err, out = simulate(ws, cs, rule, bpw)
                state = dict(model.state)
                state.update({n: torch.from_numpy(out[n]).to(model.state[n].dtype) for n in names})
                value = model.evaluate(state)[metric]
                print(f"{key} {bpw} {rule}: bpw {rate:.3f} error {err:.4f} {metric} {value}", flush=True)
                lines.append(f"| {bpw} | {rule} | {rate:.3f} | {err:.4f} | {float(value):.4g} |")
        lines.append("")
    write_markdown(args.out, lines, info)


if __name__ == "__main__":
    main()

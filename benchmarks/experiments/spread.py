"""What sharing the step unequally costs in weight error, from the weights alone (high-rate theory).

    .venv/bin/python benchmarks/experiments/spread.py            # writes benchmarks/experiments/SPREAD.md

At high rate a uniform quantizer with step ``d_i`` on weight ``i`` adds error ``d_i^2 / 12`` and
spends ``h_i - log2 d_i`` bits on it. For a fixed total rate the sum of ``log d_i`` is fixed, so the
total squared error is smallest with one step everywhere, and a rule giving weight ``i`` the step
``d_i`` has ``sqrt(mean(d^2) / geomean(d^2))`` times that error at the same rate (arithmetic over
geometric mean; no Gaussian assumption). This script computes that factor for the step shapes
of the peers and of llmcodec's configurations, and sets it beside the measured error ratio to ECSQ
with one shared step (results.csv) at each budget. For ECSQ rows the two should agree (a check
of the theory); for llmcodec rows measured / predicted is what the codec itself gains or loses
against a scalar quantizer with an ideal entropy coder on the same step shape.

Step shapes (weight ``(r, j)`` of a matrix ``W``, ``c`` the balance column multipliers of
``importance.balance_importance``, strength ``alpha``):

* `shared`: one step for every matrix (ECSQ shared-step; llmcodec equal-error, one step per
  matrix, no weighting);
* `tensor RMS`: a step proportional to each matrix's RMS (about ECSQ `tensor`, equal rate per matrix);
* `row RMS`: proportional to each row's RMS (ECSQ `row`);
* `row RMS of W c / c`: the same on ``W c``, undone (ECSQ `row+balance`);
* `llmcodec scales / c, one QP`: the default's own per-row scales on ``W c`` (``coder.prepare``:
  each row's RMS times one factor per matrix that puts its peak sample at ``quant.COEF_HEADROOM``),
  undone; at one QP every matrix's codec step is the same, so this is the default's step shape;
* `... equal error`: the same, each matrix rescaled to one RMS step (``compress.qp_offsets``);
* `... equal relative`: the same without the per-matrix peak factor (``--allocation equal-relative``);
* `1 / c^alpha, equal error`: one step per matrix on ``W c`` (shared scale), equal error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402
from run import MINILM, SMOL, balance_multipliers, codable_names, read_rows  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.bench import minilm_dir  # noqa: E402

Shape = Callable[[np.ndarray], np.ndarray]  # a matrix -> its steps, one per weight (broadcastable)


def _row_rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x), axis=1, keepdims=True))


def _equal_error(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    full = np.broadcast_to(d, w.shape)
    return d / float(np.sqrt(np.mean(np.square(full))))


def _balanced(step_of_wc: Callable[[np.ndarray], np.ndarray], alpha: float = 1.0, equal: bool = False) -> Shape:
    def shape(w: np.ndarray) -> np.ndarray:
        c = balance_multipliers(w, alpha).astype(np.float64)[None, :]
        d = step_of_wc(w * c) / c
        return _equal_error(d, w) if equal else d

    return shape


def _llmcodec_scales(x: np.ndarray) -> np.ndarray:
    """The default profile's per-row scales of ``x`` (one group per row), shape (rows, 1)."""
    from llmcodec.coder import prepare
    from llmcodec.compress import CompressSettings

    codec, profile = CompressSettings().codec_profile()
    return prepare("", x.astype(np.float32), codec, profile, None, compact=True).quantized.scale.astype(np.float64)


def _relative(x: np.ndarray) -> np.ndarray:
    """The default's scales with the per-matrix factor divided out: steps relative to each row's RMS."""
    from llmcodec.quant import group_rms

    scale = _llmcodec_scales(x)
    return scale / float(np.sqrt(np.mean(np.square(scale / group_rms(x, None)))))


# (label, step shape, the results.csv method/setting prefixes it models)
SHAPES: list[tuple[str, Shape, list[str]]] = [
    ("shared", lambda w: np.ones((1, 1)), ["ecsq-range shared-step", "llmcodec-vvc-mse-half-v1"]),
    ("tensor RMS", lambda w: np.full((1, 1), float(np.sqrt(np.mean(np.square(w))))), ["ecsq-range tensor"]),
    ("row RMS", _row_rms, ["ecsq-range row "]),
    ("row RMS of W c / c", _balanced(_row_rms), ["ecsq-range row+balance"]),
    ("llmcodec scales / c, one QP", _balanced(_llmcodec_scales), ["llmcodec-vvc default"]),
    ("llmcodec scales / c, equal error", _balanced(_llmcodec_scales, equal=True), ["llmcodec-vvc-bal-eqerr"]),
    ("llmcodec scales / c, equal relative", _balanced(_relative), ["llmcodec-vvc-eqrel"]),
    ("1 / c^0.3, equal error", _balanced(lambda x: np.ones((1, 1)), 0.3, equal=True), ["llmcodec-vvc-ha3"]),
]


def penalty(ws: list[np.ndarray], shape: Shape) -> float:
    """``sqrt(mean(d^2) / geomean(d^2))`` over every weight of every matrix."""
    sq = lg = n = 0.0
    for w in ws:
        d2 = np.square(np.broadcast_to(shape(w), w.shape).astype(np.float64))
        sq, lg, n = sq + float(d2.sum()), lg + float(np.log(np.maximum(d2, 1e-300)).sum()), n + d2.size
    return float(np.sqrt(sq / n / np.exp(lg / n)))


def load_matrices(key: str) -> list[np.ndarray]:
    if key == SMOL:
        from llmcodec.modelio import load

        src = load(SMOL)
        state = {n: t for n, t in src.items() if n not in src.tied()}
    elif key == MINILM:
        from safetensors.torch import load_file

        state = load_file(str(next(minilm_dir().glob("*.safetensors"))))
    else:
        raise SystemExit(f"spread.py: error: unknown model {key!r}; choose {SMOL} or {MINILM}")
    return [state[n].float().numpy().astype(np.float64) for n in codable_names(state)]


def measured(rows: list[dict], key: str, prefix: str, budget: float, windows: str) -> float | None:
    """Relative error of the first row of a method at this target budget, None if not measured."""
    for r in rows:
        if (r["model"] == key and f"{r['method']} {r['setting']}".startswith(prefix)
                and r["setting"].endswith(f"bpw={budget}") and r["windows"] == (windows if key == SMOL else "")):
            return float(r["rel_error"])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=f"{SMOL},{MINILM}")
    ap.add_argument("--budgets", default="2.5,3.0,3.5,4.0")
    ap.add_argument("--windows", default="8", help="which SmolLM2 rows of results.csv to compare with")
    ap.add_argument("--csv", type=Path, default=RD / "results.csv")
    ap.add_argument("--out", type=Path, default=HERE / "SPREAD.md")
    args = ap.parse_args()
    info = sysinfo.describe()
    budgets = [float(b) for b in args.budgets.split(",")]
    rows = read_rows(args.csv)
    lines = [
        "# What an unequal step costs in weight error (high-rate theory against measurement)",
        "",
        "Regenerate: `.venv/bin/python benchmarks/experiments/spread.py "
        f"--models {args.models} --budgets {args.budgets}`. "
        "The theory and each step shape: the docstring of `spread.py`. *predicted*: the error factor "
        "of the step shape against one shared step at the same rate, from the weights alone. "
        "*measured*: relative error of the row it models divided by ECSQ shared-step's at the same "
        "budget (results.csv). For llmcodec rows, measured / predicted is the codec's own gain (< 1) "
        "or loss (> 1) against an ideal scalar quantizer on the same step shape. "
        "**SmolLM2-135M's weights were already 4-bit (GGUF Q4_1)**, so its high-rate figures are only indicative.",
        "",
    ]
    for key in args.models.split(","):
        ws = load_matrices(key)
        lines += [f"## {key} ({len(ws)} matrices, {sum(w.size for w in ws):,} weights)", "",
                  "| step shape | modelled row | predicted | " + " | ".join(f"measured {b}" for b in budgets) + " |",
                  "|---|---|---|" + "---|" * len(budgets)]
        for label, shape, prefixes in SHAPES:
            p = penalty(ws, shape)
            print(f"{key}: {label}: {p:.4f}", flush=True)
            for prefix in prefixes:
                cells = []
                for b in budgets:
                    ref = measured(rows, key, "ecsq-range shared-step", b, args.windows)
                    m = measured(rows, key, prefix, b, args.windows)
                    cells.append("—" if ref is None or m is None else f"{m / ref:.3f}")
                lines.append(f"| {label} | {prefix.strip()} | {p:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    write_markdown(args.out, lines, info)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

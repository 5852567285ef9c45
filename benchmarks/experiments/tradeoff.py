"""Where weight error and perplexity pull apart: one family of step shapes, scored on both models.

    .venv/bin/python benchmarks/experiments/tradeoff.py [--bpw 2.5,3.0,4.0]   # writes TRADEOFF.md here (resumable)

Issue 4 asks one default to give SmolLM2 the lowest perplexity and MiniLM the lowest weight error
and the highest embedding similarity. This script asks whether any one way of spreading the
quantization step over a model can do both, without a video codec in the way: uniform scalar
quantization with an ideal entropy coder (ECSQ, rate = each matrix's empirical entropy of its
levels) of ``W diag(c)``, ``c`` llmcodec's balance column multipliers of strength ``alpha``
(``importance.balance_importance``; alpha 0: none), with weight ``(r, j)`` of a matrix given the step

    d = g * T^gamma * (R_r / T)^beta

``T`` the matrix's RMS and ``R_r`` its row's RMS (both of ``W c``), ``g`` one number for the whole
model, set by bisection so that the model meets the budget with 8 bits per row and per column of
side information (what llmcodec's default stores). ``(1, 1, 1)`` is the default's shape (a step
proportional to each row's RMS, every matrix at one QP); ``gamma`` 0 gives every matrix the same
absolute error (``--allocation equal-error``), ``beta`` 0 every row of a matrix (``--shared-scale``);
``(0, 0, 0)`` is one step for the model (MSE-optimal at high rate; the ECSQ shared-step peer,
scored here with its own side information: none). Everything is measured: SmolLM2 perplexity on
8 PTB windows (4,088 tokens), MiniLM relative weight error and cosine similarity of its sentence
embeddings on 300 PTB sentences, as in ``run.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import global_rel_error, write_markdown  # noqa: E402
from run import MiniLM, Smol, balance_multipliers, codable_names  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.baselines import empirical_entropy_bits  # noqa: E402

SIDE_BITS = 8  # per row and per column, as the default's log-coded scales and column multipliers


@dataclass(frozen=True)
class Shape:
    alpha: float  # balance strength (0: no column multipliers)
    beta: float  # exponent of the row's RMS relative to the matrix's
    gamma: float  # exponent of the matrix's RMS
    side: bool = True  # count 8 bits per row and column (False: one shared step, nothing stored)

    @property
    def key(self) -> tuple:
        """How ``tradeoff.jsonl`` rows name the shape: the values of their ``shape`` field."""
        return tuple(asdict(self).values())

    @property
    def label(self) -> str:
        return f"({self.alpha:g}, {self.beta:g}, {self.gamma:g})" + ("" if self.side else ", no side info")


def row_steps(x: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """Relative step of each row of ``x``, shape (rows, 1): ``T^gamma * (R / T)^beta``."""
    x = x.astype(np.float64)
    rows = np.sqrt(np.mean(np.square(x), axis=1, keepdims=True))
    t = float(np.sqrt(np.mean(np.square(x))))
    return t**gamma * (np.maximum(rows, 1e-30) / t) ** beta


def quantize(ws: Sequence[np.ndarray], shape: Shape, bpw: float,
             mults: Sequence[float] | None = None) -> tuple[list[np.ndarray], float]:
    """Every matrix of ``ws`` quantized with ``shape``'s steps at ``bpw`` for the whole set:
    (restored matrices, bits per weight reached, side information included). ``mults`` scales
    each matrix's step (``edges.py``: finer steps for some matrices, the rest pay for them)."""
    cs = [balance_multipliers(w.astype(np.float32), shape.alpha).astype(np.float64)[None, :] if shape.alpha
          else np.ones((1, w.shape[1])) for w in ws]
    xs = [w.astype(np.float64) * c for w, c in zip(ws, cs, strict=True)]
    steps = [row_steps(x, shape.beta, shape.gamma) * m for x, m in zip(xs, mults or [1.0] * len(xs), strict=True)]
    n = sum(w.size for w in ws)
    side = sum(SIDE_BITS * sum(w.shape) for w in ws) if shape.side else 0

    def bits(g: float) -> float:
        return side + sum(empirical_entropy_bits(np.rint(x / (g * s)).astype(np.int64))
                          for x, s in zip(xs, steps, strict=True))

    lo, hi = 1e-6, 1e3  # g spans the possible steps; the rate falls as g grows
    while hi / lo > 1.0005:
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if bits(mid) > bpw * n else (lo, mid)
    out = [np.rint(x / (hi * s)) * hi * s / c for x, s, c in zip(xs, steps, cs, strict=True)]
    return out, bits(hi) / n


SHAPES = [
    Shape(1, 1, 1), Shape(1, 0.5, 1), Shape(1, 0, 1), Shape(1, 1, 0.5), Shape(1, 0.5, 0.5), Shape(1, 1, 0),
    Shape(0.5, 0.5, 0.5), Shape(0.3, 0, 0), Shape(0, 1, 1), Shape(0, 0, 0), Shape(0, 0, 0, side=False),
]


def measure(model, shape: Shape, bpw: float) -> dict:
    import torch

    names = codable_names(model.state)
    ws = [model.state[k].float().numpy() for k in names]
    restored, reached = quantize(ws, shape, bpw)
    state = dict(model.state)
    for k, r in zip(names, restored, strict=True):
        state[k] = torch.from_numpy(r.astype(np.float32)).to(model.state[k].dtype)
    return {"bpw": round(reached, 4), "error": round(global_rel_error(model.state, state, names), 5),
            **model.evaluate(state)}


def read_rows(path: Path) -> list[dict]:
    """The rows a resumable run has kept so far (one JSON object a line)."""
    return [json.loads(s) for s in path.read_text().splitlines()] if path.is_file() else []


def keep(path: Path, done: list[dict], row: dict) -> None:
    """Print a measured row and keep it, in ``done`` and at once on disk (so a stop loses nothing)."""
    print(json.dumps(row), flush=True)
    done.append(row)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bpw", default="2.5,3.0,4.0", help="budgets, comma-separated")
    ap.add_argument("--out", type=Path, default=HERE / "tradeoff.jsonl")
    ap.add_argument("--models", default="minilm,smollm2")
    args = ap.parse_args()
    info = sysinfo.describe()
    done = read_rows(args.out)
    have = {(r["model"], r["budget"], tuple(r["shape"].values())) for r in done}
    budgets = [float(b) for b in args.bpw.split(",")]
    for key, make in (("minilm", lambda: MiniLM(300)), ("smollm2", lambda: Smol(8))):
        if key not in args.models.split(","):
            continue
        todo = [(b, s) for b in budgets for s in SHAPES if (key, b, s.key) not in have]
        if not todo:
            continue
        model = make()  # loaded once for all budgets
        for b, s in todo:
            keep(args.out, done, {"model": key, "budget": b, "shape": asdict(s), **measure(model, s, b)})
    write_markdown(HERE / "TRADEOFF.md", report(done, info), info)
    print("wrote", HERE / "TRADEOFF.md")


def report(rows: list[dict], info: dict[str, str]) -> list[str]:
    budgets = sorted({r["budget"] for r in rows})
    lines = [
        "# One step shape for both models? Weight error against perplexity",
        "",
        f"Regenerate: `{info['command']}` (points already in `tradeoff.jsonl` are kept). "
        + " ".join(" ".join(p.split()) for p in __doc__.split("\n\n")[2:5]),
        "",
        "The SmolLM2 weights were already 4-bit (Q4_1); no shape here uses that grid.",
    ]
    for b in budgets:
        by = {(r["model"], tuple(r["shape"].values())): r for r in rows if r["budget"] == b}
        lines += ["", f"## {b:g} bits per weight", "",
                  "| (alpha, beta, gamma) | SmolLM2 perplexity | SmolLM2 error | MiniLM error | MiniLM cosine |",
                  "|---|---|---|---|---|"]
        for s in SHAPES:
            sm, mi = by.get(("smollm2", s.key)), by.get(("minilm", s.key))
            cells = [f"{float(sm['perplexity']):.1f}" if sm else "—", f"{sm['error']:.4f}" if sm else "—",
                     f"{mi['error']:.4f}" if mi else "—", f"{float(mi['cos_mean']):.4f}" if mi else "—"]
            lines.append(f"| {s.label} | " + " | ".join(cells) + " |")
        lines += _reading(by)
    return lines


def _reading(by: dict) -> list[str]:
    """The numbers the table's question turns on, taken from it."""
    both = [s for s in SHAPES if ("smollm2", s.key) in by and ("minilm", s.key) in by]
    default, shared = Shape(1, 1, 1), Shape(0, 0, 0, side=False)
    if default not in both or shared not in both:
        return []
    ppl = {s: float(by[("smollm2", s.key)]["perplexity"]) for s in both}
    err = {s: by[("minilm", s.key)]["error"] for s in both}
    cos = {s: float(by[("minilm", s.key)]["cos_mean"]) for s in both}
    low = min((s for s in both if s.side), key=lambda s: err[s])
    better = [s for s in both if s != default and err[s] < err[default] and ppl[s] <= ppl[default]]
    return ["", f"Reading: the default's shape {default.label} has MiniLM error {err[default]:.4f}, "
            f"{err[default] / err[shared] - 1:+.1%} against one shared step without side information "
            f"({err[shared]:.4f}, the ECSQ shared-step peer's shape). The lowest MiniLM error with side "
            f"information, {low.label}'s {err[low]:.4f} ({err[low] / err[shared] - 1:+.1%}), costs SmolLM2 "
            f"perplexity {ppl[low]:.1f} against {ppl[default]:.1f} ({ppl[low] / ppl[default] - 1:+.0%}). "
            + (f"Shapes with lower MiniLM error and no higher SmolLM2 perplexity than the default's: "
               f"{', '.join(s.label for s in better)}." if better else
               "No other shape has lower MiniLM error without higher SmolLM2 perplexity.")
            + (f" On MiniLM itself the default's shape has the highest cosine similarity of all ({cos[default]:.4f}), "
               "so there too a lower weight error comes with a lower similarity."
               if max(both, key=lambda s: cos[s]) == default else "")]


if __name__ == "__main__":
    main()

"""Where the error lands (issue 4): perplexity of the built-in model with VVC's error, and with
other errors of exactly the same total energy placed differently.

    .venv/bin/python benchmarks/rd/error_shape.py [--qp 37] [--windows 8]

Codes the 210 decoder matrices of SmolLM2-135M (its weights were already 4-bit, GGUF Q4_1) with
the default VVC profile at one QP (about 2.5 bits per weight), then scores variants that keep the
relative weight error fixed and change only its shape. Writes benchmarks/rd/ERROR_SHAPE.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import Harness  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import compress_source, restore_state_dict  # noqa: E402
from llmcodec.compress import CompressSettings  # noqa: E402

Variant = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]  # (w, vvc's w_hat, rng) -> w'


def _rms(x: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=axis, keepdims=True))


def _same_energy(w: np.ndarray, w_hat: np.ndarray, e: np.ndarray) -> np.ndarray:
    """w + e, with e scaled to the energy of VVC's error on this matrix."""
    return w + e * np.sqrt(np.sum(np.square(w - w_hat, dtype=np.float64)) / np.sum(np.square(e, dtype=np.float64)))


def _uniform(w: np.ndarray, w_hat: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Round-to-nearest with step = t * unit, t found by bisection to match VVC's error energy."""
    target = float(np.sum(np.square(w - w_hat, dtype=np.float64)))
    lo, hi = 1e-3, 1e2
    for _ in range(40):
        t = np.sqrt(lo * hi)
        err = float(np.sum(np.square(w - np.rint(w / (t * unit)) * t * unit, dtype=np.float64)))
        lo, hi = (lo, t) if err > target else (t, hi)
    return np.rint(w / (lo * unit)) * lo * unit


VARIANTS: dict[str, Variant] = {
    "VVC as decoded": lambda w, wh, rng: wh,
    "VVC's error, shuffled within each row": lambda w, wh, rng: w + rng.permuted(wh - w, axis=1),
    "VVC's error, shuffled within each column": lambda w, wh, rng: w + rng.permuted(wh - w, axis=0),
    "Gaussian noise, VVC's RMS per row": lambda w, wh, rng: w + rng.standard_normal(w.shape) * _rms(w - wh, 1),
    "Gaussian noise, one RMS per matrix": lambda w, wh, rng: _same_energy(w, wh, rng.standard_normal(w.shape)),
    "Gaussian noise ∝ column RMS of W": lambda w, wh, rng: _same_energy(
        w, wh, rng.standard_normal(w.shape) * _rms(w, 0)
    ),
    "Gaussian noise ∝ row RMS x column RMS of W": lambda w, wh, rng: _same_energy(
        w, wh, rng.standard_normal(w.shape) * _rms(w, 0) * _rms(w, 1)
    ),
    "Gaussian noise ∝ |w| (multiplicative)": lambda w, wh, rng: _same_energy(w, wh, rng.standard_normal(w.shape) * w),
    "round to nearest, one step per matrix": lambda w, wh, rng: _uniform(w, wh, np.ones((1, 1))),
    "round to nearest, step ∝ row RMS": lambda w, wh, rng: _uniform(w, wh, _rms(w, 1)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qp", type=int, default=37)
    ap.add_argument("--windows", type=int, default=8)
    args = ap.parse_args()
    info = sysinfo.describe()
    info["command"] = f".venv/bin/python benchmarks/rd/error_shape.py --qp {args.qp} --windows {args.windows}"
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    torch.manual_seed(0)
    h = Harness("smollm2-135m", args.windows)
    art = compress_source(h.src, CompressSettings(qp=args.qp))
    decoded = restore_state_dict(art)
    bpw = art.stats()["bits_per_weight"]
    rows = []
    for label, fn in VARIANTS.items():
        rng = np.random.default_rng(0)
        state = dict(h.state)
        for n in h.names:
            w = h.state[n].float().numpy()
            state[n] = torch.from_numpy(fn(w, decoded[n].float().numpy(), rng).astype(np.float32))
        t0 = time.perf_counter()
        res = h.evaluate(state)
        rows.append((label, h.rel_error(state), res.perplexity))
        secs = time.perf_counter() - t0
        print(f"{label:48s} rel {rows[-1][1]:.4f} ppl {rows[-1][2]:12,.1f} ({secs:.0f} s)", flush=True)
    base = h.evaluate(h.state).perplexity
    out = [
        "# Where the error lands: same error energy, different shapes",
        "",
        f"Regenerate: `{info['command']}`. Built-in SmolLM2-135M (**its weights were already 4-bit,",
        "GGUF Q4_1**), the 210 decoder linear matrices coded with VVC (default profile) at QP",
        f"{args.qp}: {bpw:.3f} bits per weight. Each variant below replaces every coded matrix by the",
        "original plus an error of the same energy as VVC's on that matrix (so the relative weight",
        "error is the same, or matched by bisection for the round-to-nearest rows), placed differently.",
        f"Perplexity: PTB test, {args.windows} windows of 512 tokens; uncompressed: {base:,.2f}.",
        "",
        "| error | relative weight error | perplexity |",
        "|---|---|---|",
        *[f"| {label} | {rel:.4f} | {ppl:,.1f} |" for label, rel, ppl in rows],
        "",
        "Measured on:",
        "",
        *[f"- {k}: `{v}`" for k, v in info.items()],
        "",
    ]
    (HERE / "ERROR_SHAPE.md").write_text("\n".join(out))
    print("wrote", HERE / "ERROR_SHAPE.md")


if __name__ == "__main__":
    main()

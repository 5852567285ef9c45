"""Where the optional data-aware mode puts the bits: each SmolLM2 matrix's QP offset from its loss
gradients on PTB *train*, against the data-free default's (one QP; below 3.25 bits per weight the
first and last block 6 QP finer and grouped-query attention's k_proj and v_proj finer).

    .venv/bin/python benchmarks/experiments/calibration.py [--tokens 2048]

Writes benchmarks/experiments/CALIBRATION.md: the offsets by block and kind of matrix, and the perplexity
rows of ``llmcodec-vvc-calib`` (``--extra vvc-calib:calibration=ptb-train`` of run.py) against the
default's from ``benchmarks/rd/w40/results.csv``. The built-in SmolLM2-135M's weights were already
4-bit (GGUF Q4_1); nothing here uses that grid.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import _calibration_model, _column_scales, _loss_weights  # noqa: E402
from llmcodec.calibration import STRENGTH, error_pattern, sensitivity_offsets  # noqa: E402
from llmcodec.compress import CompressSettings, is_codable, layer_index  # noqa: E402
from llmcodec.modelio import load  # noqa: E402

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def offsets(model: str, settings: CompressSettings, per: str = "window", strength: float = STRENGTH) -> dict[str, int]:
    """Each coded matrix's QP offset from ``settings.calibration`` (``per``: ``probe``, or the
    Fisher estimator of ``calibration.squared_gradients``; the library's: ``window``)."""
    src = load(model)
    tied = src.tied()
    names = [n for n in src.names() if n not in tied and is_codable(n, tuple(src.get(n).shape), settings)]
    cols = _column_scales(src, names, settings)
    if per == "probe":
        net, windows = _calibration_model(src, settings)
        pats = [error_pattern(src.get(n).float().numpy(), c, settings.group, settings.shared_scale)
                for n, c in zip(names, cols, strict=True)]
        weights = probed_loss_weights(net, windows, names, pats)
    else:
        weights = _loss_weights(src, names, settings, cols, None, per)
    numel = [int(np.prod(src.get(n).shape)) for n in names]
    codec, _ = settings.codec_profile()
    return dict(zip(names, sensitivity_offsets(weights, numel, codec.qp_per_octave, strength), strict=True))


def mean_loss(model, windows) -> float:
    """The language-model loss (nats per predicted token) over ``windows``."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=windows, labels=windows)
    if getattr(out, "loss", None) is None:
        raise ValueError("data-aware calibration needs a causal language model (one that returns a loss)")
    return float(out.loss)


def probed_loss_weights(
    model,
    windows,
    names: Sequence[str],
    patterns: Sequence[np.ndarray],
    rel: float = 0.15,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[float]:
    """``S = (L(W + k p z) - L(W)) / k^2`` for each matrix on its own: the loss on ``windows``
    with Gaussian noise ``z`` of the shape ``p`` (``error_pattern``) added to that matrix, ``k``
    giving it relative error ``rel``, against the clean loss. Measured at the size of error a
    budget of about 3 bits per weight gives, so it sees what the second-order model misses.
    A matrix whose noise does not raise the loss gets 0 (the coarsest step allowed)."""
    import torch

    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameter {missing[0]!r} to calibrate ({len(missing)} missing)")
    model.eval()
    base = mean_loss(model, windows)
    rng = np.random.default_rng(seed)
    out = []
    for k, (n, pat) in enumerate(zip(names, patterns, strict=True)):
        prm = params[n]
        w = prm.detach().clone()
        noise = pat * rng.standard_normal(pat.shape)
        scale = rel * float(torch.linalg.vector_norm(w.double())) / max(float(np.linalg.norm(noise)), 1e-300)
        with torch.no_grad():
            prm.add_(torch.from_numpy(scale * noise).to(prm.dtype))
        try:
            rise = mean_loss(model, windows) - base
        finally:
            with torch.no_grad():
                prm.copy_(w)
        out.append(max(rise, 0.0) / scale**2)
        if progress:
            progress("calibrate", k + 1, len(names))
    return out


def ppl_rows(path: Path) -> list[str]:
    """The default's and the data-aware rows of run.py's CSV, paired by budget."""
    if not path.is_file():
        return []
    methods = ("llmcodec-vvc", "llmcodec-vvc-calib", "llmcodec-vvc-calib-full", "llmcodec-vvc-nokv")
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for r in csv.DictReader(path.open()):
        if r["model"] != "smollm2-135m" or r["method"] not in methods:
            continue
        if r["method"] == "llmcodec-vvc" and not r["setting"].startswith("default bpw="):
            continue
        b = r["setting"].rsplit("bpw=", 1)[1]
        rows.setdefault(b, {})[r["method"]] = (float(r["bpw"]), float(r["perplexity"]))
    out = ["| target bpw | data-free default: bpw, perplexity | data-aware (`--calibration ptb-train`): bpw, "
           "perplexity | change | full-strength offsets: perplexity | the default before the key/value prior "
           "(`llmcodec-vvc-nokv`): perplexity |", "|---|---|---|---|---|---|"]

    def vs(x: tuple[float, float] | None, d: tuple[float, float]) -> str:
        return f"{x[1]:.1f} ({100 * (x[1] / d[1] - 1):+.1f}%)" if x else "—"

    for b in sorted(rows, key=float):
        d, c, f, n = (rows[b].get(m) for m in methods)
        if d and c:
            out.append(f"| {b} | {d[0]:.3f}, {d[1]:.1f} | {c[0]:.3f}, {c[1]:.1f} | {100 * (c[1] / d[1] - 1):+.1f}% | "
                       f"{vs(f, d)} | {vs(n, d)} |")
    return out if len(out) > 2 else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    args = ap.parse_args()
    info = sysinfo.describe()
    settings = CompressSettings(bpw=3.0, calibration="ptb-train", calibration_tokens=args.tokens)
    off = offsets("smollm2-135m", settings)
    blocks = sorted({layer_index(n) for n in off})
    lines = [
        "# The optional data-aware mode on SmolLM2: QP offsets from loss gradients",
        "",
        f"Regenerate: `python benchmarks/experiments/calibration.py --tokens {args.tokens}`. "
        "Calibration (`--calibration ptb-train`, off by default) measures each coded matrix's squared loss "
        f"gradients on the first {args.tokens} tokens of PTB *train* (windows of 128 tokens) and gives it the "
        "QP offset `3 log2(n / S)` (`llmcodec.calibration`: `S` its Fisher-weighted error pattern at one QP, "
        "`n` its weights; relative to the median matrix, within 2 octaves = 12 QP). Negative: finer than "
        "the median matrix. The data-free default instead codes every matrix at one QP, with the first and "
        "last block 6 QP finer and grouped-query attention's k_proj and v_proj 5 QP finer (`compress.kv_offsets`) "
        "below 3.25 bits per weight. The built-in model's weights were already 4-bit "
        "(GGUF Q4_1); nothing here uses that grid.",
        "",
        "## Offsets by block and kind",
        "",
        "| block | " + " | ".join(KINDS) + " |",
        "|---|" + "---|" * len(KINDS),
    ]
    for b in blocks:
        cells = [str(off.get(f"model.layers.{b}.{'self_attn' if k[0] in 'qkvo' else 'mlp'}.{k}.weight", ""))
                 for k in KINDS]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    mean = {k: np.mean([v for n, v in off.items() if f".{k}." in n]) for k in KINDS}
    lines.append("| mean | " + " | ".join(f"{mean[k]:+.1f}" for k in KINDS) + " |")
    ppl = ppl_rows(RD / "w40" / "results.csv")
    if ppl:
        lines += ["", "## Perplexity at equal rate (run.py, 40 PTB test windows, 20,440 tokens)", "",
                  "`llmcodec-vvc-calib` in `benchmarks/rd/w40/results.csv`; `llmcodec-vvc-calib-full` is the same "
                  "with the "
                  "full equal-slope spread and the quantizer's own row steps as the error pattern (measured first). "
                  "Changes are against today's data-free default; calibration replaces its priors between matrices.",
                  "", *ppl]
    write_markdown(HERE / "CALIBRATION.md", lines, info)


if __name__ == "__main__":
    main()

"""Where the optional data-aware mode puts the bits: each SmolLM2 matrix's QP offset from its loss
gradients on PTB *train*, against the data-free default's (one QP, the first and last block 6 QP
finer below 3.25 bits per weight).

    .venv/bin/python benchmarks/rd/calibration.py [--tokens 2048]

Writes benchmarks/rd/CALIBRATION.md: the offsets by block and kind of matrix, and the perplexity
rows of ``llmcodec-vvc-calib`` (``--extra vvc-calib:calibration=ptb-train`` of run.py) against the
default's from ``benchmarks/rd/w40/results.csv``. The built-in SmolLM2-135M's weights were already
4-bit (GGUF Q4_1); nothing here uses that grid.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import _column_scales, _squared_gradients  # noqa: E402
from llmcodec.calibration import sensitivity_offsets  # noqa: E402
from llmcodec.compress import CompressSettings, JobSpec, is_codable, layer_index, loss_weight_job  # noqa: E402
from llmcodec.modelio import load  # noqa: E402

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def offsets(model: str, settings: CompressSettings) -> dict[str, int]:
    src = load(model)
    tied = src.tied()
    names = [n for n in src.names() if n not in tied and is_codable(n, tuple(src.get(n).shape), settings)]
    fisher = _squared_gradients(src, names, settings, None)
    cols = _column_scales(src, names, settings)
    codec, profile = settings.codec_profile()
    spec = JobSpec(settings.codec, profile.name, settings.group, settings.sample_fraction)
    weights = [loss_weight_job(spec, n, src.get(n).float().numpy(), c, f)
               for n, c, f in zip(names, cols, fisher, strict=True)]
    numel = [int(np.prod(src.get(n).shape)) for n in names]
    return dict(zip(names, sensitivity_offsets(weights, numel, codec.qp_per_octave), strict=True))


def ppl_rows(path: Path) -> list[str]:
    if not path.is_file():
        return []
    rows = {}
    for r in csv.DictReader(path.open()):
        if r["model"] == "smollm2-135m" and r["method"] in ("llmcodec-vvc", "llmcodec-vvc-calib"):
            if r["method"] == "llmcodec-vvc" and not r["setting"].startswith("default bpw="):
                continue
            b = r["setting"].rsplit("bpw=", 1)[1]
            rows.setdefault(b, {})[r["method"]] = (float(r["bpw"]), float(r["perplexity"]))
    out = ["| target bpw | data-free default: bpw, perplexity | data-aware (PTB train): bpw, perplexity | change |",
           "|---|---|---|---|"]
    for b in sorted(rows, key=float):
        d, c = rows[b].get("llmcodec-vvc"), rows[b].get("llmcodec-vvc-calib")
        if d and c:
            out.append(f"| {b} | {d[0]:.3f}, {d[1]:.1f} | {c[0]:.3f}, {c[1]:.1f} | {100 * (c[1] / d[1] - 1):+.1f}% |")
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
        f"Regenerate: `python benchmarks/rd/calibration.py --tokens {args.tokens}`. "
        "Calibration (`--calibration ptb-train`, off by default) measures each coded matrix's squared loss "
        f"gradients on the first {args.tokens} tokens of PTB *train* (windows of 128 tokens) and gives it the "
        "QP offset `3 log2(n / S)` (`llmcodec.calibration`: `S` its Fisher-weighted error pattern at one QP, "
        "`n` its weights; relative to the median matrix, within 2 octaves = 12 QP). Negative: finer than "
        "the median matrix. The data-free default instead codes every matrix at one QP, with the first and "
        "last block 6 QP finer below 3.25 bits per weight. The built-in model's weights were already 4-bit "
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
    ppl = ppl_rows(HERE / "w40" / "results.csv")
    if ppl:
        lines += ["", "## Perplexity at equal rate (run.py, 40 PTB test windows, 20,440 tokens)", "", *ppl]
    write_markdown(HERE / "CALIBRATION.md", lines, info)


if __name__ == "__main__":
    main()

"""Which matrices deserve a finer step? Per-tensor step offsets at equal rate, on SmolLM2.

    .venv/bin/python benchmarks/experiments/edges.py [--bpw 3.0] [--variants base,edge6]   # writes EDGES.md (resumable)

Issue 4 asks for rate allocation across tensors with a data-free sensitivity proxy. Three priors
are tested here, each as one number per matrix from its name and shape alone: the kinds that
llama.cpp's k-quant mixes give more bits (``v_proj``, ``down_proj``); the ends of the stack (the
first block reads the embeddings, the last feeds the output head; ``compress.edge_offsets``, what
``--edge-layers`` / ``--edge-octaves`` do); and grouped-query attention (``kv`` variants): each
key/value head of SmolLM2 serves n_rep = 3 query heads, so an error in k_proj or v_proj reaches
three heads' outputs, and equal slopes give those matrices a step n_rep^-1/2 times the rest's,
log2(3)/2 = 0.79 octave finer (``compress.kv_offsets``, what ``--kv-sharing`` scales). A variant
codes its chosen matrices with a step ``2^-octaves`` times the rest's, and the whole model still
meets the budget: the others pay.

The quantizer is ECSQ with the default's step shape (``tradeoff.py``'s ``(1, 1, 1)``: column
balance, a step proportional to each row's RMS, 8 bits per row and column of side information;
rate = each matrix's empirical entropy), so a variant's effect is the allocation's alone.
Perplexity is scored on the first 40 windows of PTB *valid* (the split the choice is made on) and of
PTB *test* (the issue's protocol, 20,440 tokens), so a variant picked on one is checked on the other.

The ``calib`` variants are not data-free: they take each matrix's offset from the optional
data-aware mode (``llmcodec.calibration``, 2,048 tokens of PTB *train*), with the loss weights of
``calibw`` from each 128-token window's squared gradient (what ``--calibration`` uses), ``calibf``
from the per-position empirical Fisher (both to second order) and ``calibp`` from the loss rise
when noise of the default's shape (relative error 0.15) is added to one matrix at a time, times
0.5, 1 or 1.5. They show how far the data-free priors are from what text says.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import global_rel_error, write_markdown  # noqa: E402
from run import Smol, codable_names  # noqa: E402
from tradeoff import Shape, keep, quantize, read_rows  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.codecs import FFmpegCodec  # noqa: E402
from llmcodec.compress import edge_offsets  # noqa: E402
from llmcodec.evaluate import EvalSettings  # noqa: E402

WINDOWS = 40
QP_PER_OCTAVE = FFmpegCodec.qp_per_octave  # what edge_offsets' QPs mean in octaves
GQA_OCT = 0.5 * np.log2(3.0)  # SmolLM2: 9 query heads, 3 key/value heads


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    kinds: tuple[tuple[str, float], ...] = ()  # (substring of the name, octaves finer)
    edge_layers: int = 0
    edge_octaves: float = 0.0
    calib: float = 0.0  # times the data-aware offsets (calibration.py, PTB train; 0: none)
    tokens: int = 2048  # of PTB train, for those offsets
    per: str = "window"  # the loss weights: probe, or calibration.squared_gradients' estimator

    def octaves(self, names: list[str]) -> list[float]:
        """How many octaves finer each matrix's step is than the rest's."""
        edge = edge_offsets(names, self.edge_layers, self.edge_octaves, QP_PER_OCTAVE)
        calib = calibrated_offsets(self.tokens, self.per) if self.calib else {}
        return [sum(o for k, o in self.kinds if k in n) - (e + self.calib * calib.get(n, 0)) / QP_PER_OCTAVE
                for n, e in zip(names, edge, strict=True)]


@functools.cache
def calibrated_offsets(tokens: int, per: str) -> dict[str, int]:
    """The optional data-aware mode's QP offsets for SmolLM2 from ``tokens`` tokens of PTB train, at
    full strength (the variants scale them)."""
    from calibration import offsets

    from llmcodec.compress import CompressSettings

    return offsets("smollm2-135m", CompressSettings(bpw=3.0, calibration="ptb-train", calibration_tokens=tokens),
                   per, strength=1.0)


VARIANTS = [
    Variant("base", "every matrix at one relative step (the default before edges)"),
    Variant("vd3", "v_proj, down_proj 0.5 octave finer", (("v_proj", 0.5), ("down_proj", 0.5))),
    Variant("vd6", "v_proj, down_proj 1 octave finer", (("v_proj", 1.0), ("down_proj", 1.0))),
    Variant("v3", "v_proj 0.5 octave finer", (("v_proj", 0.5),)),
    Variant("d3", "down_proj 0.5 octave finer", (("down_proj", 0.5),)),
    Variant("l0_3", "first block 0.5 octave finer", (("layers.0.", 0.5),)),
    Variant("l29_3", "last block 0.5 octave finer", (("layers.29.", 0.5),)),
    Variant("edge3", "first and last block 0.5 octave finer", edge_layers=1, edge_octaves=0.5),
    Variant("edge6", "first and last block 1 octave finer", edge_layers=1,
            edge_octaves=1.0),
    Variant("edge2_3", "first two and last two blocks 0.5 octave finer", edge_layers=2, edge_octaves=0.5),
    # GQA: a key/value head serves n_rep = heads / kv heads query heads (3 in SmolLM2), so its error
    # reaches n_rep heads' outputs; equal slopes give it a step n_rep^-1/2 times the rest's.
    Variant("kv_gqa", "k_proj, v_proj log2(3)/2 = 0.79 octave finer (GQA sharing)",
            (("k_proj", GQA_OCT), ("v_proj", GQA_OCT))),
    Variant("kv_gqa05", "k_proj, v_proj 0.40 octave finer (half the GQA sharing)",
            (("k_proj", GQA_OCT / 2), ("v_proj", GQA_OCT / 2))),
    Variant("kv_gqa15", "k_proj, v_proj 1.19 octave finer (1.5 times the GQA sharing)",
            (("k_proj", 1.5 * GQA_OCT), ("v_proj", 1.5 * GQA_OCT))),
    Variant("k_gqa", "k_proj 0.79 octave finer", (("k_proj", GQA_OCT),)),
    Variant("v_gqa", "v_proj 0.79 octave finer", (("v_proj", GQA_OCT),)),
    Variant("kv_gqa_edge6", "k_proj, v_proj 0.79 octave finer, and edge6 (the default below 3.25 bpw)",
            (("k_proj", GQA_OCT), ("v_proj", GQA_OCT)), edge_layers=1, edge_octaves=1.0),
    Variant("calibw", "data-aware, squared window gradients: each matrix's full offset", calib=1.0, per="window"),
    Variant("calibw05", "data-aware, squared window gradients: half of each offset (the library's --calibration)",
            calib=0.5, per="window"),
    Variant("calibw15", "data-aware, squared window gradients: 1.5 times each offset", calib=1.5, per="window"),
    Variant("calibf", "data-aware, per-position Fisher: each matrix's full offset", calib=1.0, per="position"),
    Variant("calibf05", "data-aware, per-position Fisher: half of each offset", calib=0.5, per="position"),
    Variant("calibp", "data-aware, probed loss rise: each matrix's full offset", calib=1.0, per="probe"),
    Variant("calibp05", "data-aware, probed loss rise: half of each offset", calib=0.5, per="probe"),
]
BY_NAME = {v.name: v for v in VARIANTS}


def measure(model: Smol, variant: Variant, bpw: float) -> dict:
    import torch

    names = codable_names(model.state)
    ws = [model.state[k].float().numpy() for k in names]
    restored, reached = quantize(ws, Shape(1, 1, 1), bpw, [2.0 ** -o for o in variant.octaves(names)])
    state = dict(model.state)
    for k, r in zip(names, restored, strict=True):
        state[k] = torch.from_numpy(r.astype(np.float32)).to(model.state[k].dtype)
    row = {"bpw": bpw, "variant": variant.name, "reached": round(reached, 4),
           "error": round(global_rel_error(model.state, state, names), 5)}
    for split in ("valid", "test"):
        model.ev = EvalSettings(split=split, max_windows=WINDOWS)
        row[split] = round(float(model.evaluate(state)["perplexity"]), 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bpw", default="3.0", help="budgets, comma-separated")
    ap.add_argument("--variants", default=",".join(BY_NAME), help="comma-separated, of: " + ", ".join(BY_NAME))
    ap.add_argument("--out", type=Path, default=HERE / "edges.jsonl")
    args = ap.parse_args()
    info = sysinfo.describe()
    done = read_rows(args.out)
    have = {(r["bpw"], r["variant"]) for r in done}
    todo = [(float(b), BY_NAME[v]) for b in args.bpw.split(",") for v in args.variants.split(",")
            if (float(b), v) not in have]
    if todo:
        model = Smol(WINDOWS)
        for b, v in todo:
            keep(args.out, done, measure(model, v, b))
    write_markdown(HERE / "EDGES.md", report(done, info), info, measured=bool(todo))
    print("wrote", HERE / "EDGES.md")


def report(rows: list[dict], info: dict[str, str]) -> list[str]:
    lines = [
        "# Which matrices deserve a finer step? (SmolLM2, equal rate)",
        "",
        "Regenerate: `python benchmarks/experiments/edges.py` (3.0 bits per weight, every variant) and "
        "`python benchmarks/experiments/edges.py --bpw 2.0,2.5,3.5,4.0 --variants base,edge6,kv_gqa,kv_gqa_edge6` "
        "(rows already in `edges.jsonl` are kept). "
        + " ".join(" ".join(p.split()) for p in __doc__.split("\n\n")[2:5]),
        "",
        "The same choice with VVC (`w40/RESULTS.md`: `llmcodec-vvc-edge` against `llmcodec-vvc-noedge`, the "
        "default against `llmcodec-vvc-nokv` for the key/value prior, and from 3.25 bits per weight up, where "
        "the default has neither, `-edge`, `-kv` and `-ek` with both; off the 4-bit grid: `DEGRID.md`): see "
        "the README's results.",
        "",
        "SmolLM2's weights were already 4-bit (Q4_1); no variant here uses that grid.",
    ]
    for b in sorted({r["bpw"] for r in rows}):
        at = {r["variant"]: r for r in rows if r["bpw"] == b}
        base = at.get("base")
        lines += ["", f"## {b:g} bits per weight", "",
                  "| variant | what is finer | bpw | weight error | valid perplexity | test perplexity |",
                  "|---|---|---|---|---|---|"]
        for v in VARIANTS:
            r = at.get(v.name)
            if r is None:
                continue
            rel = {s: "" if base is None or r is base else f" ({r[s] / base[s] - 1:+.1%})" for s in ("valid", "test")}
            lines.append(f"| {v.name} | {v.label} | {r['reached']:.3f} | {r['error']:.4f} | "
                         f"{r['valid']:.1f}{rel['valid']} | {r['test']:.1f}{rel['test']} |")
    return lines


if __name__ == "__main__":
    main()

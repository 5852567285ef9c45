"""Which matrices' error costs perplexity, and why (issue 4): a diagnosis, not a method.

    .venv/bin/python benchmarks/experiments/diagnose.py [--config "profile=ai-faster-coef-dq,qp=30,weighting=none"]
                                               [--base "profile=...,qp=..."] [--out DIAGNOSE.md]

1. Codes the built-in model's 210 decoder matrices twice: with entropy-coded round-to-nearest
   (``baselines.ECSQ``, row scope, 2.5 bits per weight), or with the llmcodec configuration
   ``--base``, and with one llmcodec configuration.
2. Swaps one kind of matrix (q, k, v, o, gate, up, down) at a time from the first to the second and
   measures PTB-test perplexity (8 windows): which kinds carry the cost.
3. For v_proj and q_proj of layers 3 and 15, records their inputs on PTB *train* text (2 windows; this
   text is used here only to explain, never by llmcodec) and reports the share of each layer's output
   error that its four largest inputs carry, with the RMS of those inputs' weight columns.

Writes benchmarks/experiments/DIAGNOSE.md. The built-in model's weights were already 4-bit (GGUF Q4_1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import Harness, write_markdown  # noqa: E402
from run import _parse_kv  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.baselines import ECSQ  # noqa: E402
from llmcodec.compress import CompressSettings  # noqa: E402
from llmcodec.quant import relative_error  # noqa: E402

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROBES = [f"model.layers.{i}.self_attn.{k}" for i in (3, 15) for k in ("v_proj", "q_proj")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="profile=ai-faster-coef-dq,qp=30,weighting=none,centroids=false")
    ap.add_argument("--bpw", type=float, default=2.5, help="ECSQ's budget")
    ap.add_argument("--base", default=None, help="an llmcodec configuration as the base instead of ECSQ")
    ap.add_argument("--out", default="DIAGNOSE.md", help="report name in benchmarks/experiments")
    args = ap.parse_args()
    info = sysinfo.describe()
    info["command"] = (f'.venv/bin/python benchmarks/experiments/diagnose.py --config "{args.config}" --bpw {args.bpw}'
                       + (f' --base "{args.base}"' if args.base else "")
                       + (f" --out {args.out}" if args.out != "DIAGNOSE.md" else ""))
    h = Harness("smollm2-135m", 8)

    def llmcodec_state(config: str):
        return h.compress(CompressSettings(**dict(_parse_kv(p) for p in config.split(",") if p)))

    label = "base" if args.base else "ECSQ"  # what the tables call the matrices not from the codec
    if args.base:
        ecsq, base_bpw = llmcodec_state(args.base)
        base_text = f"llmcodec with `{args.base}` ({base_bpw:.3f} bits per weight)"
    else:
        ecsq = dict(h.state)
        q = ECSQ(args.bpw, coder="range", scope="row")
        for n in h.names:
            ecsq[n] = torch.from_numpy(q(h.state[n].float().numpy())[0])
        base_text = (f"uniform rounding with a step proportional to each row's RMS, range coded at {args.bpw} "
                     "bits per weight")
    codec, codec_bpw = llmcodec_state(args.config)
    lines = ["# Which matrices' error costs perplexity (diagnosis)", "",
             f"Regenerate: `{info['command']}`. SmolLM2-135M (**weights already 4-bit, GGUF Q4_1**), PTB test,",
             f"8 windows of 512 tokens. '{label}' (the base) = {base_text}; 'codec' = llmcodec with",
             f"`{args.config}` ({codec_bpw:.3f} bits per weight).", "",
             f"| matrices from the codec, the rest from {label} | rel. error of those ({label} / codec) | perplexity |",
             "|---|---|---|"]

    def ppl(state) -> str:
        return f"{h.evaluate(state).perplexity:,.1f}"

    lines.append(f"| none (all {label}) | - | {ppl(ecsq)} |")
    for kind in KINDS:
        names = [n for n in h.names if kind in n]
        mix = {**ecsq, **{n: codec[n] for n in names}}
        e = np.mean([relative_error(h.state[n].numpy(), ecsq[n].numpy()) for n in names])
        c = np.mean([relative_error(h.state[n].numpy(), codec[n].numpy()) for n in names])
        lines.append(f"| {kind} | {e:.3f} / {c:.3f} | {ppl(mix)} |")
        print(lines[-1], flush=True)
    lines.append(f"| all (all codec) | - | {ppl(codec)} |")

    import treebank

    from llmcodec.modelio import build_model

    model = build_model(h.state, h.src.config)
    acts: dict[str, list[torch.Tensor]] = {}
    mods = dict(model.named_modules())
    for t in PROBES:
        mods[t].register_forward_hook(
            lambda m, i, o, t=t: acts.setdefault(t, []).append(i[0].detach().reshape(-1, i[0].shape[-1]).double())
        )
    ids = h.tok(treebank.penn["train"][:20000], return_tensors="pt").input_ids[:, :1024]
    with torch.no_grad():
        model(ids)
    lines += ["", "Inputs recorded on 1,024 tokens of PTB *train* text (for this diagnosis only). For the four",
              "inputs with the largest mean square: that mean square and the RMS of their weight columns,",
              "each over its median, and the share of the layer's output error `||dW x||^2` they carry.", "",
              "| matrix | inputs' mean square / median | their columns' RMS / median | share of output error "
              f"({label} / codec) |", "|---|---|---|---|"]
    for t in PROBES:
        n = t + ".weight"
        x2 = torch.cat(acts[t]).pow(2).mean(0).numpy()
        w = h.state[n].double().numpy()
        top = np.argsort(x2)[-4:]
        col = np.sqrt((w**2).mean(0))
        shares = []
        for st in (ecsq, codec):
            d2 = ((st[n].double().numpy() - w) ** 2).sum(0) * x2
            shares.append(f"{d2[top].sum() / d2.sum():.0%}")
        big = ", ".join(f"{v:,.0f}" for v in x2[top] / np.median(x2))
        cols = ", ".join(f"{v:.2f}" for v in col[top] / np.median(col))
        lines.append(f"| {t.replace('model.layers.', 'layer ')} | {big} | {cols} | {' / '.join(shares)} |")
    out = HERE / args.out
    write_markdown(out, lines, info)
    print("wrote", out)


if __name__ == "__main__":
    main()

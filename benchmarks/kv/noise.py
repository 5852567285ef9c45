"""Screening for KV cache coding: which errors cost the built-in model's continuation perplexity.

    .venv/bin/python benchmarks/kv/noise.py [--prefix 1024] [--seeds 8] [--cases 0.119/0.175/4,...]

Adds Gaussian noise to the exact cache of the first P-1 PTB test tokens, shaped like the coded
layouts' errors (keys: per head channel, relative to the channel's RMS over tokens; values: per
token, relative to the token's RMS over channels) at given relative errors, optionally leaving the
first tokens (attention sinks) exact, and prints the continuation perplexity against the exact
cache's for several noise draws (their mean and standard deviation: the draw-to-draw noise of the
gap at that error). Not a codec measurement: a cheap model of where bits matter.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import load_source_model  # noqa: E402
from llmcodec.evaluate import ptb_text  # noqa: E402
from llmcodec.kv import build_cache, continuation_nll, layer_tensors, prefill, tokenize  # noqa: E402

# (key rel. error, value rel. error, sink tokens kept exact)
CASES = [(0.123, 0.169, 0), (0.123, 0.169, 1), (0.123, 0.169, 4), (0.123, 0.0, 0), (0.0, 0.169, 0),
         (0.10, 0.20, 0), (0.087, 0.24, 0), (0.146, 0.142, 0), (0.123, 0.0, 1), (0.0, 0.169, 1),
         (0.087, 0.24, 1), (0.062, 0.34, 1)]


def noisy(kv, ek: float, ev: float, sinks: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, v in kv:
        kn = k + ek * k.pow(2).mean(2, keepdim=True).sqrt() * torch.randn(k.shape, generator=g)
        vn = v + ev * v.pow(2).mean(3, keepdim=True).sqrt() * torch.randn(v.shape, generator=g)
        if sinks:
            kn[:, :, :sinks], vn[:, :, :sinks] = k[:, :, :sinks], v[:, :, :sinks]
        out.append((kn, vn))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--continuation", type=int, default=512)
    p.add_argument("--seeds", type=int, default=2, help="noise draws per case (default: %(default)s)")
    p.add_argument("--out", help="also write the lines printed, with machine and command, to this markdown file")
    p.add_argument("--cases", default="", help="KEY/VALUE/SINKS triples, comma-separated (default: the built-in list)")
    args = p.parse_args(argv)
    cases = [tuple(float(x) if i < 2 else int(x) for i, x in enumerate(c.split("/")))
             for c in args.cases.split(",") if c] or CASES
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(f"- {line}")
        print(line, flush=True)

    torch.set_grad_enabled(False)
    model, tok = load_source_model("smollm2-135m")
    model.eval()
    ids = tokenize(tok, ptb_text("test"), special=False)
    cont, last = ids[args.prefix: args.prefix + args.continuation], int(ids[args.prefix - 1])
    kv = [(k.clone(), v.clone()) for k, v in layer_tensors(prefill(model, ids[: args.prefix - 1]))]

    def ppl(c) -> float:
        nll, n = continuation_nll(model, build_cache(model, c), last, cont)
        return math.exp(nll / n)

    exact = ppl(kv)
    say(f"prefix {args.prefix}, continuation {len(cont)}: exact cache {exact:.3f}")
    for name, i in (("key", 0), ("value", 1)):
        e = torch.stack([t[i][0].pow(2).sum(-1).mean(0) for t in kv])
        ratio = (e[:, :5] / e.median(1, keepdim=True).values).mean(0)
        say(f"{name} energy of tokens 0-4 over the median token's (mean over layers): "
            + " ".join(f"{x:.2f}" for x in ratio.tolist()))
    for ek, ev, s in cases:
        r = torch.tensor([ppl(noisy(kv, ek, ev, s, seed)) / exact - 1 for seed in range(args.seeds)])
        spread = f" (mean {float(r.mean()):+.2%}, std {float(r.std()):.2%})" if len(r) > 1 else ""
        say(f"keys {ek:.3f} values {ev:.3f} sinks {s}: " + " ".join(f"{x:+.2%}" for x in r.tolist()) + spread)
    if args.out:
        info = sysinfo.describe()
        info["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        head = ["# KV cache: continuation perplexity after Gaussian noise (built-in model)", "",
                "Not a codec measurement; see benchmarks/kv/noise.py. Weights of the built-in model were already "
                "4-bit (Q4_1 GGUF); its cache is float32. Gaps are against the exact cache.", ""]
        write_markdown(Path(args.out), head + lines, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())

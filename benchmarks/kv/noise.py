"""Screening for KV cache coding: which errors cost the built-in model's continuation perplexity.

    .venv/bin/python benchmarks/kv/noise.py [--prefix 1024]

Adds Gaussian noise to the exact cache of the first P-1 PTB test tokens, shaped like the coded
layouts' errors (keys: per head channel, relative to the channel's RMS over tokens; values: per
token, relative to the token's RMS over channels) at given relative errors, optionally leaving the
first tokens (attention sinks) exact, and prints the continuation perplexity against the exact
cache's for two noise draws. Not a codec measurement: a cheap model of where bits matter.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from llmcodec.api import load_source_model
from llmcodec.evaluate import ptb_text
from llmcodec.kv import build_cache, continuation_nll, layer_tensors, prefill, tokenize

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
    args = p.parse_args(argv)
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
    print(f"prefix {args.prefix}, continuation {len(cont)}: exact cache {exact:.3f}")
    for name, i in (("key", 0), ("value", 1)):
        e = torch.stack([t[i][0].pow(2).sum(-1).mean(0) for t in kv])
        ratio = (e[:, :5] / e.median(1, keepdim=True).values).mean(0)
        print(f"{name} energy of tokens 0-4 over the median token's (mean over layers):",
              " ".join(f"{x:.2f}" for x in ratio.tolist()))
    for ek, ev, s in CASES:
        r = [ppl(noisy(kv, ek, ev, s, seed)) / exact - 1 for seed in (0, 1)]
        print(f"keys {ek:.3f} values {ev:.3f} sinks {s}: " + " ".join(f"{x:+.2%}" for x in r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

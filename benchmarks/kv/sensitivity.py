"""Where a coded KV cache loses its continuation perplexity: one coded cache, many hybrids.

    .venv/bin/python benchmarks/kv/sensitivity.py --prefix 1024 --bpw 3   # writes SENSITIVITY.md

The cache of the first P-1 PTB test tokens is coded once (llmcodec, ``kv save``'s options unless
given) and decoded; then parts of the exact cache are replaced by their decoded version and the
continuation is scored each time: every part coded; only the keys or only the values coded; the
whole cache coded except its last R tokens; with --per-layer, one layer (or one layer's keys) coded,
the rest exact. Each row's gap to the exact cache says how much of the loss that part carries (gaps
of parts need not add up). Realization noise: the coded cache's error with its sign flipped at
random per layer, head and keys/values (--flips draws): errors of the same size and structure.

The "s.e." column is the paired standard error of the gap over the continuation's tokens (per-token
log-likelihood differences): how much the gap would move on another continuation of that length.
Results land in sensitivity.csv (rows kept between runs) and SENSITIVITY.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import ResultsCSV, write_markdown  # noqa: E402
from run import _extra, _load, _setting  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import load_source_model, save  # noqa: E402
from llmcodec.argtypes import layer_bits  # noqa: E402
from llmcodec.evaluate import ptb_text  # noqa: E402
from llmcodec.kv import (  # noqa: E402
    KVOptions,
    _cache_kwarg,
    build_cache,
    compress_kv,
    layer_tensors,
    load_kv,
    prefill,
    tokenize,
)
from llmcodec.tensors import tensor_settings  # noqa: E402

FIELDS = ["prefix", "setting", "bits_per_element", "part", "perplexity", "vs_exact", "se"]
KEY = ("prefix", "setting", "part")


@torch.inference_mode()
def token_nll(model, kv, last: int, cont: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of ``cont`` after the cache ``kv``."""
    x = torch.cat([torch.tensor([last], dtype=cont.dtype), cont[:-1]])[None]
    logits = model(input_ids=x, use_cache=True, **{_cache_kwarg(model): build_cache(model, kv)}).logits[0].float()
    return torch.nn.functional.cross_entropy(logits, cont, reduction="none").double()


def flipped(kv, hat, seed: int):
    """The exact cache plus the coded cache's error with its sign flipped at random per layer, head and
    keys/values: errors of the same size and structure, another draw of how they fall."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for pair, pair_hat in zip(kv, hat, strict=True):
        out.append(tuple(t + (th - t) * (2 * torch.randint(0, 2, (1, t.shape[1], 1, 1), generator=g) - 1)
                         for t, th in zip(pair, pair_hat, strict=True)))
    return out


def hybrids(kv, hat, layers: int, recent: list[int], flips: int, per_layer: bool):
    """(part name, cache) pairs: the exact cache with the named part taken from the decoded one."""
    yield "all coded", hat
    for seed in range(flips):
        yield f"all coded, error signs flipped per layer and head (draw {seed})", flipped(kv, hat, seed)
    yield "keys coded, values exact", [(kh, v) for (_, v), (kh, _) in zip(kv, hat, strict=True)]
    yield "values coded, keys exact", [(k, vh) for (k, _), (_, vh) in zip(kv, hat, strict=True)]
    for r in recent:
        def mix(a, b, r=r):
            return torch.cat([b[:, :, :-r], a[:, :, -r:]], dim=2)
        yield f"all coded but the last {r} tokens", [(mix(k, kh), mix(v, vh))
                                                     for (k, v), (kh, vh) in zip(kv, hat, strict=True)]
    if not per_layer:
        return
    for i in range(layers):
        yield f"layer {i} coded", [hat[j] if j == i else kv[j] for j in range(layers)]
    for i in range(layers):
        yield f"layer {i} keys coded", [(hat[j][0], kv[j][1]) if j == i else kv[j] for j in range(layers)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--continuation", type=int, default=512)
    p.add_argument("--bpw", type=float, default=3.0)
    p.add_argument("--sinks", type=int, default=KVOptions().sinks)
    p.add_argument("--key-bits", type=float, default=KVOptions().key_bits)
    p.add_argument("--exact-tails", default="16,64,256", help="tails of the cache left exact in the hybrids")
    p.add_argument("--flips", type=int, default=8, help="draws of the error's signs (realization noise)")
    p.add_argument("--per-layer", action="store_true", help="also one layer coded at a time")
    p.add_argument("--recent", type=int, default=KVOptions().recent, help="kv save's --recent")
    p.add_argument("--layer-bits", type=layer_bits, default=KVOptions().layer_bits, metavar="L:B,...")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    info = sysinfo.describe()
    info["load"] = _load()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    torch.set_grad_enabled(False)
    model, tok = load_source_model("smollm2-135m")
    model.eval()
    ids = tokenize(tok, ptb_text("test"), special=False)
    cont, last = ids[args.prefix: args.prefix + args.continuation], int(ids[args.prefix - 1])
    kv = [(k.clone(), v.clone()) for k, v in layer_tensors(prefill(model, ids[: args.prefix - 1]))]
    elements = sum(k.numel() + v.numel() for k, v in kv)
    opts = KVOptions(sinks=args.sinks, key_bits=args.key_bits, recent=args.recent, layer_bits=args.layer_bits)
    extra = _extra(args.set)
    setting = _setting(args.bpw, opts) + "".join(f" {k}={v}" for k, v in extra.items())
    print(f"[{time.strftime('%H:%M:%S')}] coding {setting} at prefix {args.prefix}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "kv.llmc")
        save(compress_kv(kv, last, tensor_settings(bpw=args.bpw, workers=args.workers, **extra), opts), path)
        bpe = 8 * path.stat().st_size / elements
        loaded = load_kv(path, model, workers=args.workers)
    hat = [(layer.keys.clone(), layer.values.clone()) for layer in loaded.cache.layers]
    results = ResultsCSV(HERE / "sensitivity.csv", FIELDS, KEY)
    ref = token_nll(model, kv, last, cont)
    exact = math.exp(float(ref.mean()))
    base = {"prefix": args.prefix, "setting": setting, "bits_per_element": f"{bpe:.4f}"}
    results.add({**base, "part": "none (exact cache)", "perplexity": f"{exact:.4f}", "vs_exact": "+0.00%", "se": ""})
    tails = [int(r) for r in args.exact_tails.split(",") if r]
    for part, c in hybrids(kv, hat, len(kv), tails, args.flips, args.per_layer):
        d = token_nll(model, c, last, cont) - ref
        gap, se = math.expm1(float(d.mean())), float(d.std()) / math.sqrt(len(d))
        results.add({**base, "part": part, "perplexity": f"{exact * (1 + gap):.4f}", "vs_exact": f"{gap:+.2%}",
                     "se": f"{se:.2%}"})
        print(f"{part}: {gap:+.2%} (s.e. {se:.2%})", flush=True)
    report(results, info)
    return 0


def report(results: ResultsCSV, info: dict[str, str]) -> None:
    rows = list(results.rows.values())
    lines = ["# KV cache: which part of a coded cache carries the perplexity loss (built-in model)", "",
             "SmolLM2-135M-Instruct from a Q4_1 GGUF (its weights were already 4-bit; the cache is float32). "
             "PTB test, 512 continuation tokens. One coded cache per setting; each row puts the named part "
             "of it into the exact cache and scores the continuation. s.e.: paired standard error of the gap "
             "over the continuation's tokens. Regenerate: `.venv/bin/python benchmarks/kv/sensitivity.py "
             "--prefix P --bpw B` (see its docstring).", ""]
    for key in sorted({(int(r["prefix"]), r["setting"]) for r in rows}):
        sub = [r for r in rows if (int(r["prefix"]), r["setting"]) == key]
        lines += [f"## Prefix {key[0]}, {key[1]} ({float(sub[0]['bits_per_element']):.3f} bits per element)", "",
                  "| part coded | perplexity | vs exact | s.e. |", "|---|---:|---:|---:|"]
        lines += [f"| {r['part']} | {float(r['perplexity']):.3f} | {r['vs_exact']} | {r['se'] or '-'} |" for r in sub]
        lines.append("")
    write_markdown(HERE / "SENSITIVITY.md", lines, info, True)


if __name__ == "__main__":
    sys.exit(main())

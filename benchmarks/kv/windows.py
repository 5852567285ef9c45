"""The KV cache benchmark over several disjoint windows of PTB test: a gap with a smaller error bar.

    .venv/bin/python benchmarks/kv/windows.py --prefix 1024 --windows 4 --bpw 3 [--sinks 4 --key-bits 0 ...]

One 512-token continuation after one prefix (run.py) moves the perplexity gap by about a percentage
point between draws of the same error. Here window w takes the PTB test tokens from
w x (prefix + continuation): the cache of its first P-1 tokens is coded (llmcodec, ``kv save``'s
options unless given) and the continuation scored, as in run.py. Reported: each window's gap to the
exact cache, and the pooled gap (the perplexity ratio over all windows' tokens) with its paired
standard error over tokens. Rows land in windows.csv (kept between runs) and WINDOWS.md.
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
from sensitivity import token_nll  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import load_source_model, save  # noqa: E402
from llmcodec.argtypes import layer_bits  # noqa: E402
from llmcodec.evaluate import ptb_text  # noqa: E402
from llmcodec.kv import KVOptions, compress_kv, layer_tensors, load_kv, prefill, tokenize  # noqa: E402
from llmcodec.tensors import tensor_settings  # noqa: E402

FIELDS = ["prefix", "setting", "window", "bits_per_element", "exact", "perplexity", "vs_exact", "nll_diff"]
KEY = ("prefix", "setting", "window")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--continuation", type=int, default=512)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--bpw", type=float, default=3.0)
    p.add_argument("--sinks", type=int, default=KVOptions().sinks)
    p.add_argument("--key-bits", type=float, default=KVOptions().key_bits)
    p.add_argument("--recent", type=int, default=KVOptions().recent)
    p.add_argument("--layer-bits", type=layer_bits, default=KVOptions().layer_bits, metavar="L:B,...")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    info = sysinfo.describe()
    info["load"] = _load()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    results = ResultsCSV(HERE / "windows.csv", FIELDS, KEY)
    if not args.report_only:
        measure(args, results)
    report(results, info, not args.report_only)
    return 0


def measure(args, results: ResultsCSV) -> None:
    torch.set_grad_enabled(False)
    model, tok = load_source_model("smollm2-135m")
    model.eval()
    ids = tokenize(tok, ptb_text("test"), special=False)
    opts = KVOptions(sinks=args.sinks, key_bits=args.key_bits, recent=args.recent, layer_bits=args.layer_bits)
    extra = _extra(args.set)
    setting = _setting(args.bpw, opts) + "".join(f" {k}={v}" for k, v in extra.items())
    span = args.prefix + args.continuation
    for w in range(args.windows):
        if results.has(str(args.prefix), setting, str(w)):
            continue
        part = ids[w * span: (w + 1) * span]
        if len(part) < span:
            raise SystemExit(f"PTB test holds only {w} windows of {span} tokens")
        cont, last = part[args.prefix:], int(part[args.prefix - 1])
        kv = [(k.clone(), v.clone()) for k, v in layer_tensors(prefill(model, part[: args.prefix - 1]))]
        elements = sum(k.numel() + v.numel() for k, v in kv)
        print(f"[{time.strftime('%H:%M:%S')}] window {w}: {setting} (load {_load()})", flush=True)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "kv.llmc")
            save(compress_kv(kv, last, tensor_settings(bpw=args.bpw, workers=args.workers, **extra), opts), path)
            bpe = 8 * path.stat().st_size / elements
            loaded = load_kv(path, model, workers=args.workers)
        hat = [(layer.keys, layer.values) for layer in loaded.cache.layers]
        ref = token_nll(model, kv, last, cont)
        d = token_nll(model, hat, last, cont) - ref
        exact = math.exp(float(ref.mean()))
        results.add({"prefix": args.prefix, "setting": setting, "window": w, "bits_per_element": f"{bpe:.4f}",
                     "exact": f"{exact:.4f}", "perplexity": f"{exact * math.exp(float(d.mean())):.4f}",
                     "vs_exact": f"{math.expm1(float(d.mean())):+.2%}",
                     "nll_diff": " ".join(f"{x:.5f}" for x in d.tolist())})


def report(results: ResultsCSV, info: dict[str, str], measured: bool) -> None:
    rows = list(results.rows.values())
    lines = ["# KV cache over disjoint PTB windows (built-in model)", "",
             "SmolLM2-135M-Instruct from a Q4_1 GGUF (its weights were already 4-bit; the cache is float32). "
             "Window w: PTB test tokens from w x (prefix + 512); the cache of its first P-1 tokens coded, the "
             "512 continuation tokens scored. Pooled: the perplexity ratio over all windows' tokens; s.e.: its "
             "paired standard error over tokens. Regenerate: `.venv/bin/python benchmarks/kv/windows.py "
             "--prefix P --windows N --bpw B` (see its docstring).", "",
             "| prefix | setting | windows | bits per element (mean) | gap per window | pooled gap | s.e. |",
             "|---:|---|---:|---:|---|---:|---:|"]
    for prefix, setting in sorted({(int(r["prefix"]), r["setting"]) for r in rows}):
        sub = sorted((r for r in rows if (int(r["prefix"]), r["setting"]) == (prefix, setting)),
                     key=lambda r: int(r["window"]))
        d = torch.tensor([float(x) for r in sub for x in r["nll_diff"].split()], dtype=torch.float64)
        gap, se = math.expm1(float(d.mean())), float(d.std()) / math.sqrt(len(d))
        bpe = sum(float(r["bits_per_element"]) for r in sub) / len(sub)
        lines.append(f"| {prefix} | {setting} | {len(sub)} | {bpe:.3f} | {' '.join(r['vs_exact'] for r in sub)} | "
                     f"{gap:+.2%} | {se:.2%} |")
    write_markdown(HERE / "WINDOWS.md", lines, info, measured)


if __name__ == "__main__":
    sys.exit(main())

"""The tied embedding/head's QP offset for a sample-domain codec (issue 32): the whole built-in model
at one whole-file budget, one compress per offset, the embedding's and the other matrices' QPs, bits
and errors, and perplexity (PTB, 40 windows by default), as ``llmcodec bench`` measures a cell.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/experiments/embed_offset_sample.py \\
        --codec x264 --bpw 2.5 --offsets default,-12,-8

Appends one JSON line per point to benchmarks/experiments/embed_offset_sample.jsonl (the code that
measured it in ``code``: llmcodec.codeid).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from llmcodec import sysinfo
from llmcodec.api import compress_source, restore_state_dict
from llmcodec.bench import BenchSettings, evaluate, global_rel_error, load_model
from llmcodec.codeid import code_id
from llmcodec.settings import CompressSettings

ROOT = Path(__file__).resolve().parents[2]


def summary(cts: list, model) -> dict:
    weights, bits = sum(c.numel for c in cts), sum(c.bits for c in cts)
    qps = [c.qp for c in cts]
    return {"weights": weights, "bpw": bits / weights, "qp_min": min(qps), "qp_median": float(np.median(qps)),
            "qp_max": max(qps), "rel_error": global_rel_error([c.rel_error for c in cts],
                                                              [model.norm_sq(c.name) for c in cts])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="x264")
    ap.add_argument("--bpw", type=float, default=2.5)
    ap.add_argument("--offsets", default="default,-12", help="embedding offsets; default: the library's")
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/experiments/embed_offset_sample.jsonl")
    args = ap.parse_args()
    print(json.dumps(sysinfo.describe()), flush=True)
    bs = BenchSettings(model="smollm2-135m", out=Path("."), windows=args.windows)
    model = load_model("smollm2-135m", None)
    for off in args.offsets.split(","):
        cs = CompressSettings(codec=args.codec, bpw=args.bpw, workers=1,
                              embedding_offset=None if off == "default" else int(off))
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        art = compress_source(model.src, cs)
        encode_s = time.perf_counter() - t0
        cts = list(art.coded.values())
        ppl, _ = evaluate(model, restore_state_dict(art, workers=1), bs)
        row = {"code": code_id(), "codec": args.codec, "bpw": args.bpw, "offset": off,
               "variant": "no row steps", "bits_per_weight": sum(c.bits for c in cts) / sum(c.numel for c in cts),
               "embedding": summary([c for c in cts if "embed" in c.name], model),
               "others": summary([c for c in cts if "embed" not in c.name], model),
               "perplexity": ppl, "windows": args.windows, "encode_s": round(encode_s), "load1": round(load, 1)}
        print(json.dumps(row), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

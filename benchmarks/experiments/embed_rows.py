"""Per-row (per-token) steps in the tied embedding/head of the built-in model (issue 29): the
embedding alone coded at a fixed QP (every other tensor exact), 8 PTB windows, with and without
row step factors from data-free priors (the tokenizer's BPE rank, the rows' RMS).

    .venv/bin/python benchmarks/experiments/embed_rows.py --variants base,rank --qps 18,20,22

Appends one JSON line per point to benchmarks/experiments/embed_rows.jsonl. The factors reach the
quantizer by wrapping ``coder.quantize`` for the embedding's shape (an experiment, not the library path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Harness  # noqa: E402

from llmcodec import coder, sysinfo  # noqa: E402
from llmcodec.api import compress_source, restore_state_dict  # noqa: E402
from llmcodec.compress import CompressSettings  # noqa: E402
from llmcodec.quant import group_rms  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EMB = "model.embed_tokens.weight"


def bpe_rank(vocab: int, first_merge: int = 273) -> np.ndarray:
    """A token's rank as a frequency prior: its id (later ids = later merges = rarer), with the
    special and single-byte tokens before the first merge counted at the first merge's rank."""
    return np.maximum(np.arange(vocab, dtype=np.float64), first_merge)


def factors(variant: str, w: np.ndarray) -> np.ndarray | None:
    """Row step factors (median 1) for a variant name ``kind[:alpha[:clip]]``."""
    if variant == "base":
        return None
    kind, *rest = variant.split(":")
    alpha = float(rest[0]) if rest else 1.0
    clip = float(rest[1]) if len(rest) > 1 else 4.0
    rms = group_rms(w, None)[:, 0]
    rank = bpe_rank(w.shape[0])
    if kind == "rank":  # step ~ frequency^(-alpha/2) on top of each row's RMS; Zipf: frequency ~ 1/rank
        log_f = 0.5 * alpha * np.log2(rank)
    elif kind == "rankabs":  # the same weighted absolute error in every row
        log_f = 0.5 * alpha * np.log2(rank) - np.log2(rms)
    elif kind == "abs":  # one absolute step for every row
        log_f = -alpha * np.log2(rms)
    elif kind == "norm":  # larger rows finer (steps ~ rms^-alpha on top of the RMS)
        log_f = -alpha * np.log2(rms)
    else:
        raise SystemExit(f"unknown variant {variant}")
    log_f -= np.median(log_f)
    return np.exp2(np.clip(log_f, -np.log2(clip), np.log2(clip)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="base,rank")
    ap.add_argument("--qps", default="20")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/experiments/embed_rows.jsonl")
    args = ap.parse_args()
    info = sysinfo.describe()
    print(json.dumps(info), flush=True)
    h = Harness("smollm2-135m", args.windows)
    w = h.state[EMB].float().numpy()
    current: dict[str, np.ndarray | None] = {"f": None}
    plain = coder.quantize

    def wrapped(x, spec, known=None, row_step=None):
        f = current["f"]
        if f is not None and row_step is None and x.shape[0] == f.shape[0]:
            return plain(x, spec, row_step=f)
        return plain(x, spec, known, row_step)

    coder.quantize = wrapped
    for variant in args.variants.split(","):
        current["f"] = factors(variant, w)
        for qp in (int(q) for q in args.qps.split(",")):
            t0 = time.perf_counter()
            art = compress_source(h.src, CompressSettings(qp=qp, only=r"embed_tokens", workers=1, token_rows=0.0))
            ct = art.coded[EMB]
            state = restore_state_dict(art)
            secs = time.perf_counter() - t0
            res = h.evaluate(state)
            err = state[EMB].float().numpy() - w
            row_err = np.sqrt(np.mean(np.square(err), axis=1) / np.maximum(np.mean(np.square(w), axis=1), 1e-30))
            row = {"variant": variant, "qp": qp, "bpw": ct.bits / ct.numel, "bytes": ct.bits / 8,
                   "rel_error": float(np.linalg.norm(err) / np.linalg.norm(w)),
                   "row_rel_error_first_4k": float(np.median(row_err[:4096])),
                   "row_rel_error_last_8k": float(np.median(row_err[-8192:])),
                   "perplexity": res.perplexity, "windows": args.windows, "code_seconds": round(secs),
                   "load": round(os.getloadavg()[0], 1)}
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

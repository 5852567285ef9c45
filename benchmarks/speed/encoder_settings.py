"""What libvvenc settings cost and save on coefficient-domain frames (issue 31, item 2).

    nice -n 10 .venv/bin/python benchmarks/speed/encoder_settings.py                # writes encoder-settings.csv
    nice -n 10 .venv/bin/python benchmarks/speed/encoder_settings.py --base default-dq --qp 22

Each variant is the base profile (the default below 3.25 bits per weight, or ``--base``) with one
set of ``-vvenc-params`` added (later keys override the base's) or another preset. Every variant
codes the same matrices of the built-in model (SmolLM2-135M-Instruct from its Q4_1 GGUF, exported
to float32 safetensors: its weights were already 4-bit) at one fixed QP, one FFmpeg process at a
time, variants interleaved per matrix so that load drift hits them alike; ``--repeats`` passes.
Per variant: encoder CPU-seconds (FFmpeg children's user + system time), bitstream bytes, weight
error (relative Frobenius, after the pipeline's reconstruction table and refit) and whether the
decoded integers are identical to the base's (then the error is identical too). Every stream is
decoded by FFmpeg's native vvc decoder and checked by ``coder.finish`` as the pipeline does.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402

from llmcodec.codecs.registry import get_codec  # noqa: E402
from llmcodec.coder import finish, prepare  # noqa: E402

MATRICES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")

# name -> (preset or None for the base's, extra vvenc params)
VARIANTS: dict[str, tuple[str | None, tuple[tuple[str, str], ...]]] = {
    "base": (None, ()),
    "IntraEstDecBit=5": (None, (("IntraEstDecBit", "5"),)),
    "no SCC tools (IBC, TS, BDPCM)": (None, (("IBC", "0"), ("TransformSkip", "0"), ("BDPCM", "0"))),
    "SelectiveRDOQ=0": (None, (("SelectiveRDOQ", "0"),)),
    "MTSImplicit=0": (None, (("MTSImplicit", "0"),)),
    "DualITree=0": (None, (("DualITree", "0"),)),
    "MCTF=0, BIM=0": (None, (("MCTF", "0"), ("BIM", "0"))),
    "Log2MaxTbSize=5": (None, (("Log2MaxTbSize", "5"),)),
    "MIP=0, MRL=0": (None, (("MIP", "0"), ("MRL", "0"))),
    "FastHAD=1, LCTUFast=1": (None, (("FastHAD", "1"), ("LCTUFast", "1"))),
    "preset fast": ("fast", ()),
    "preset medium": ("medium", ()),
}


def matrices(folder: Path, layers: list[int]) -> list[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    out = []
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        for layer in layers:
            for m in MATRICES:
                name = f"model.layers.{layer}.{m}.weight"
                out.append((name, f.get_tensor(name).astype(np.float32)))
    return out


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="default", help="vvc profile the variants start from")
    ap.add_argument("--qp", type=int, default=28)
    ap.add_argument("--layers", default="3,15,27")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    ap.add_argument("--extra", action="append", default=[],
                    help="another variant: 'NAME|PRESET|Key=Val:Key=Val' (PRESET '-' keeps the base's)")
    ap.add_argument("--out", type=Path, default=HERE / "encoder-settings.csv")
    args = ap.parse_args()

    variants = dict(VARIANTS)
    for spec in args.extra:
        name, preset, kv = (spec.split("|") + ["", ""])[:3]
        pairs = tuple(tuple(x.split("=", 1)) for x in kv.split(":") if x)
        variants[name] = (None if preset in ("-", "") else preset, pairs)
    if args.only:
        keep = {"base", *args.only.split(","), *(e.split("|")[0] for e in args.extra)}
        variants = {k: v for k, v in variants.items() if k in keep}
    codec = get_codec("vvc")
    base = codec.profile(args.base)
    mats = matrices(run.export_builtin(run.CACHE / "smollm2-135m-f32"), [int(x) for x in args.layers.split(",")])
    load = [os.getloadavg()[0]]
    stats = {v: {"cpu": 0.0, "bytes": 0, "err2": 0.0, "same": True, "fail": ""} for v in variants}
    norm2 = sum(float(np.sum(w.astype(np.float64) ** 2)) for _, w in mats)
    for rep in range(args.repeats):
        for name, w in mats:
            p = prepare(name, w, codec, base, None, compact=True, packed=True)
            ref = None
            for v, (preset, extra) in variants.items():
                prof = replace(base, preset=preset or base.preset, options=base.options + extra)
                c0 = children_cpu()
                try:
                    stream = codec.encode(p.frames, args.qp, prof)
                except Exception as e:  # an unknown key or a failing encoder: recorded, not fatal
                    stats[v]["fail"] = str(e).splitlines()[0][:120]
                    continue
                stats[v]["cpu"] += children_cpu() - c0
                if rep:
                    continue
                ct = finish(p, w, "float32", args.qp, stream, codec, base)  # decodes with the native decoder
                stats[v]["bytes"] += len(stream)
                stats[v]["err2"] += (ct.rel_error or 0.0) ** 2 * float(np.sum(w.astype(np.float64) ** 2))
                if ref is None:
                    ref = ct.decoded_sha256
                stats[v]["same"] &= ct.decoded_sha256 == ref
            print(f"{name}: done", flush=True)
    load.append(os.getloadavg()[0])
    b = stats["base"]
    rows = []
    for v, s in stats.items():
        rows.append({
            "base": args.base, "variant": v, "qp": args.qp, "matrices": len(mats), "repeats": args.repeats,
            "encoder_cpu_s": f"{s['cpu']:.2f}", "cpu_vs_base": f"{s['cpu'] / b['cpu']:.3f}" if b["cpu"] else "",
            "bytes": s["bytes"], "bytes_vs_base": f"{s['bytes'] / b['bytes']:.4f}" if b["bytes"] else "",
            "rel_error": f"{np.sqrt(s['err2'] / norm2):.5f}", "same_integers_as_base": s["same"],
            "failed": s["fail"], "load1_start_end": f"{load[0]:.1f}/{load[1]:.1f}",
        })
        print(rows[-1], flush=True)
    new = not args.out.is_file()
    with open(args.out, "a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            wr.writeheader()
        wr.writerows(rows)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

"""Error feedback through the inverse Hessian with the codec (VVC, default coefficient-domain profile),
on a few matrices of the built-in model: layer output error ``||(W - W_hat) X||^2`` on held-out
activations against bits, for

- ``default``: today's coding (column balance, per-row steps, one QP), no feedback;
- ``coef``  (design b): GPTQ on the coded coefficients with the codec's scalar step at that QP, then
  coded at that QP;
- ``strip`` (design a): strips of ``--strip`` columns coded one after another at that QP, each decoded
  and its error folded into the later columns (``feedback.block_update``);
- ``strip+coef``: (a) with (b) inside each strip.

    .venv/bin/python benchmarks/experiments/feedback.py [--qps 22,25,28,31,34] [--tokens 4096]

Hessians from the first ``--tokens`` tokens of PTB *train* (windows of 128), the error measured on the
next ``--tokens`` (held out). Writes benchmarks/experiments/FEEDBACK.md and feedback.jsonl. The
built-in SmolLM2-135M's weights were already 4-bit (GGUF Q4_1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import load_source_model  # noqa: E402
from llmcodec.calibration import calibration_windows  # noqa: E402
from llmcodec.codecs import get_codec  # noqa: E402
from llmcodec.coder import Prepared, decode_matrix, decode_tensor, finish, prepare  # noqa: E402
from llmcodec.coefdomain import block_dct, block_idct, place, spread, take  # noqa: E402
from llmcodec.evaluate import ptb_text  # noqa: E402
from llmcodec.feedback import (  # noqa: E402
    block_update,
    column_hessian,
    feedback,
    inverse_factor,
    output_error,
    vvc_coef_step,
)
from llmcodec.frames import to_frames  # noqa: E402
from llmcodec.importance import balance_importance, column_scales  # noqa: E402

MATRICES = (
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj",
    "model.layers.10.self_attn.o_proj",
    "model.layers.10.mlp.gate_proj",
    "model.layers.20.mlp.down_proj",
    "model.layers.29.mlp.up_proj",
)


def hessians(model, windows, names) -> dict[str, np.ndarray]:
    """``X^T X`` of each named linear layer's input over the windows (float64)."""
    import torch

    mods = dict(model.named_modules())
    acc: dict[str, np.ndarray] = {}

    def hook(name):
        def f(module, inputs, output):
            x = inputs[0].detach().double().reshape(-1, inputs[0].shape[-1])
            acc[name] = acc.get(name, 0) + (x.T @ x).numpy()

        return f

    hs = [mods[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad():
        for x in windows:
            model(input_ids=x[None])
    for h in hs:
        h.remove()
    return acc


class Coder:
    """Codes a matrix of coefficient units (``u = (w c - offset) / s``) with the default profile."""

    def __init__(self) -> None:
        self.codec = get_codec("vvc")
        self.profile = self.codec.profile("default")
        self.n, self.used, self.mid = 32, self.profile.coef_cols, 512

    def samples(self, u: np.ndarray) -> np.ndarray:
        y = block_idct(place(u, self.n, self.used), self.n)
        return np.clip(np.rint(y) + self.mid, 0, 1023).astype(np.uint16)

    def code(self, u: np.ndarray, qp: int) -> tuple[np.ndarray, int]:
        """Decoded units and bitstream bits."""
        q = self.samples(u)
        s = spread(q, self.n, self.mid)
        layout = self.codec.plan(s.shape[0], s.shape[1], self.profile)
        bs = self.codec.encode(to_frames(s, layout), qp, self.profile)
        dec = decode_matrix(bs, layout, self.codec, self.profile, self.n)
        u_hat = take(block_dct(dec.astype(np.float64) - self.mid, self.n), self.n, self.used, *u.shape)
        return u_hat, 8 * len(bs)


def units(p: Prepared, w: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coefficient units of ``w`` under ``p``'s quantizer, and its row scale and offset (rows, 1)."""
    qz = p.quantized
    s, o = qz.scale.astype(np.float64), qz.offset.astype(np.float64)
    return (w.astype(np.float64) * c[None, :] - o) / s, s, o


def weights(u: np.ndarray, s: np.ndarray, o: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (u * s + o) / c[None, :]


def strips(coder: Coder, u: np.ndarray, factor: np.ndarray, qp: int, width: int, inner: bool) -> tuple[np.ndarray, int]:
    """Design (a): code ``width`` columns at a time, fold each strip's decoded error forward."""
    w = u.copy()
    out = np.empty_like(w)
    bits = 0
    step = vvc_coef_step(qp)
    cols = w.shape[1]
    for b0 in range(0, cols, width):
        b1 = min(cols, b0 + width)
        target = feedback(w[:, b0:b1], factor[b0:b1, b0:b1], step) if inner else w[:, b0:b1]
        dec, b = coder.code(target, qp)
        bits += b
        out[:, b0:b1] = dec
        if b1 < cols:
            w[:, b1:] = block_update(w[:, b1:], w[:, b0:b1] - dec, factor, b0, b1)
    return out, bits


def finished(coder: Coder, p: Prepared, q_new: np.ndarray | None, w: np.ndarray, qp: int) -> tuple[np.ndarray, int]:
    """The whole pipeline's restore (reconstruction table and least-squares scales), optionally
    with other integers ``q_new`` in place of the quantizer's."""
    if q_new is not None:
        s = spread(q_new, coder.n, coder.mid)
        p = Prepared(p.name, replace(p.quantized, q=q_new), p.layout, to_frames(s, p.layout), p.col_scale)
    bs = coder.codec.encode(p.frames, qp, coder.profile)
    ct = finish(p, w, "float32", qp, bs, coder.codec, coder.profile)
    return decode_tensor(ct, coder.codec, coder.profile).astype(np.float64), 8 * len(bs)


def run_matrix(coder: Coder, name: str, w: np.ndarray, h_fit: np.ndarray, h_eval: np.ndarray, qps, width: int):
    c = column_scales(balance_importance(w), 1.0).astype(np.float64)
    p = prepare(name, w, coder.codec, coder.profile, None, False, c.astype(np.float32), True, True)
    u, s, o = units(p, w, c)
    factor = inverse_factor(column_hessian(h_fit, c))
    ref = output_error(w, np.zeros_like(w), h_eval)
    rows = []
    for qp in qps:
        step = vvc_coef_step(qp)
        t0 = time.time()
        u_fb = feedback(u, factor, step)
        t_fb = time.time() - t0
        variants = {}
        dec, bits = coder.code(u, qp)
        variants["default"] = (weights(dec, s, o, c), bits)
        dec_fb, bits_fb = coder.code(u_fb, qp)
        variants["coef"] = (weights(dec_fb, s, o, c), bits_fb)
        moved = float(np.mean(np.abs(dec_fb - u_fb) > 0.5 * step))
        variants["strip"] = tuple(strips(coder, u, factor, qp, width, False))
        variants["strip+coef"] = tuple(strips(coder, u, factor, qp, width, True))
        dw, b = variants["strip"]
        variants["strip"] = (weights(dw, s, o, c), b)
        dw, b = variants["strip+coef"]
        variants["strip+coef"] = (weights(dw, s, o, c), b)
        variants["default+finish"] = finished(coder, p, None, w, qp)
        variants["coef+finish"] = finished(coder, p, coder.samples(u_fb), w, qp)
        # the quantizer model alone, no codec: GPTQ against rounding on the same lattice
        variants["model-rtn"] = (weights(step * np.rint(u / step), s, o, c), 0)
        variants["model-gptq"] = (weights(u_fb, s, o, c), 0)
        for k, (wh, bits) in variants.items():
            rows.append({
                "matrix": name, "qp": qp, "variant": k, "bpw": bits / w.size,
                "out_err": output_error(w, wh, h_eval) / ref,
                "fit_err": output_error(w, wh, h_fit) / output_error(w, np.zeros_like(w), h_fit),
                "weight_err": float(np.sqrt(np.mean(np.square(w - wh)) / np.mean(np.square(w)))),
                "moved": moved if k == "coef" else None, "gptq_s": t_fb if k == "coef" else None,
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def at_bits(rows: list[dict], variant: str, bpw: float) -> float | None:
    """Output error at ``bpw`` by linear interpolation of log error in bits (None outside the sweep)."""
    pts = sorted((r["bpw"], np.log(r["out_err"])) for r in rows if r["variant"] == variant)
    xs = [x for x, _ in pts]
    if not pts or not xs[0] <= bpw <= xs[-1]:
        return None
    return float(np.exp(np.interp(bpw, xs, [y for _, y in pts])))


def report(rows: list[dict], command: str, out: Path, targets=(2.0, 2.5, 3.0)) -> None:
    variants = ("default", "coef", "strip", "strip+coef", "default+finish", "coef+finish")
    lines = [
        "# Error feedback through the inverse Hessian, with the codec (VVC default profile)", "",
        f"Command: `{command}`", "",
        "Built-in SmolLM2-135M (weights already 4-bit, GGUF Q4_1). Layer output error",
        "`||(W - W_hat) X||^2 / ||W X||^2` on held-out PTB train activations, interpolated at equal",
        "bitstream bits per weight (side information is the same for every variant).", "",
        "| matrix | bpw | " + " | ".join(variants) + " |",
        "|---|---:|" + "---:|" * len(variants),
    ]
    for m in dict.fromkeys(r["matrix"] for r in rows):
        mr = [r for r in rows if r["matrix"] == m]
        for t in targets:
            vals = [at_bits(mr, v, t) for v in variants]
            cells = ["-" if v is None else f"{v:.4f}" for v in vals]
            lines.append(f"| {m.removeprefix('model.')} | {t} | " + " | ".join(cells) + " |")
    lines += ["", "Quantizer model alone (no codec) at the same QP, output error: rounding / GPTQ", "",
              "| matrix | qp | rounding | GPTQ | share of (b)'s values the codec moved off them |",
              "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["variant"] == "model-rtn":
            same = [x for x in rows if x["matrix"] == r["matrix"] and x["qp"] == r["qp"]]
            g = next(x for x in same if x["variant"] == "model-gptq")
            mv = next(x for x in same if x["variant"] == "coef")
            lines.append(f"| {r['matrix'].removeprefix('model.')} | {r['qp']} | {r['out_err']:.4f} | "
                         f"{g['out_err']:.4f} | {mv['moved']:.3f} |")
    info = sysinfo.describe()
    info["load average"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    write_markdown(out, lines, info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qps", default="22,25,28,31,34")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--strip", type=int, default=128)
    ap.add_argument("--matrices", default=",".join(MATRICES))
    ap.add_argument("--out", type=Path, default=HERE / "FEEDBACK.md")
    args = ap.parse_args()
    names = args.matrices.split(",")
    model, tok = load_source_model("smollm2-135m")
    win = calibration_windows(tok, ptb_text("train"), 2 * args.tokens)
    half = len(win) // 2
    h_fit = hessians(model, win[:half], names)
    h_eval = hessians(model, win[half:], names)
    mods = dict(model.named_modules())
    coder = Coder()
    rows = []
    qps = [int(q) for q in args.qps.split(",")]
    for n in names:
        w = mods[n].weight.detach().float().numpy()
        rows += run_matrix(coder, n, w, h_fit[n], h_eval[n], qps, args.strip)
    with open(args.out.with_suffix(".jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    report(rows, " ".join(sys.argv), args.out)


if __name__ == "__main__":
    main()

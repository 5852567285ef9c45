"""Why error feedback codes without sign-bit hiding: GPTQ on the coefficient lattice
(``feedback.feedback``) coded with the default profile (sign-bit hiding on) and with the same profile
without it (``ai-faster-coef-sq`` in half-filled blocks), on two matrices of the built-in model
(weights already 4-bit, GGUF Q4_1): bits per weight, held-out layer output error and the share of
values the codec moved off the lattice.

    .venv/bin/python benchmarks/experiments/feedback_sbh.py > benchmarks/experiments/FEEDBACK_SBH.txt
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import feedback as proto  # noqa: E402

from llmcodec import feedback as fb  # noqa: E402
from llmcodec.api import load_source_model  # noqa: E402
from llmcodec.calibration import calibration_windows  # noqa: E402
from llmcodec.coder import prepare  # noqa: E402
from llmcodec.evaluate import ptb_text  # noqa: E402
from llmcodec.importance import balance_importance, column_scales  # noqa: E402

NAMES = ["model.layers.1.self_attn.v_proj", "model.layers.10.self_attn.o_proj"]


def main() -> None:
    model, tok = load_source_model("smollm2-135m")
    win = calibration_windows(tok, ptb_text("train"), 8192)
    h_fit, h_eval = proto.hessians(model, win[:32], NAMES), proto.hessians(model, win[32:], NAMES)
    mods = dict(model.named_modules())
    co = proto.Coder()
    sq = proto.Coder()
    sq.profile = replace(co.codec.profile("ai-faster-coef-sq"), name="sq-half", coef_cols=16)
    print("matrix qp variant bits_per_weight held_out_output_error moved_off_lattice")
    for n in NAMES:
        w = mods[n].weight.detach().float().numpy()
        c = column_scales(balance_importance(w)).astype(np.float64)
        p = prepare(n, w, co.codec, co.profile, None, False, c.astype(np.float32), True, True)
        u, s, o = proto.units(p, w, c)
        factor = fb.inverse_factor(fb.column_hessian(h_fit[n], c))
        ref = fb.output_error(w, 0 * w, h_eval[n])
        for qp in (26, 30):
            ufb = fb.feedback(u, factor, fb.vvc_coef_step(qp))
            for label, cod, x in (("default", co, u), ("default-nosbh", sq, u), ("coef-nosbh", sq, ufb),
                                  ("coef-sbh", co, ufb)):
                d, b = cod.code(x, qp)
                moved = np.mean(np.abs(d - x) > 0.5 * fb.vvc_coef_step(qp)) if label.startswith("coef") else None
                err = fb.output_error(w, proto.weights(d, s, o, c), h_eval[n]) / ref
                print(n.removeprefix("model."), qp, label, round(b / w.size, 4), round(err, 5), moved, flush=True)


if __name__ == "__main__":
    main()

"""Quick comparisons of llmcodec options at fixed QPs on the built-in model (issue 4).

    .venv/bin/python benchmarks/experiments/fixed_qp.py [--windows 8] ["qp=37,compand=1.0" ...]

Each configuration (``CompressSettings`` fields, comma-separated) codes the 210 decoder matrices
of SmolLM2-135M (its weights were already 4-bit, GGUF Q4_1) once at its QP, with no rate control,
so a sweep of options costs one encode each; compare rows at similar bits per weight. Writes
benchmarks/experiments/FIXED_QP.md (rows already there are kept and re-measured only with --fresh).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RD = HERE.parent / "rd"  # run.py and report.py, and the results they write
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RD))
sys.path.insert(0, str(HERE.parent))

from common import Harness, write_markdown  # noqa: E402
from run import _parse_kv  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import compress_source, restore_state_dict  # noqa: E402
from llmcodec.compress import CompressSettings  # noqa: E402

OLD = "weighting=none,centroids=false"  # rows measured before balance weighting and reconstruction tables
DEFAULT_CONFIGS = (
    f"profile=ai-faster-dq,qp=37,compand=1.0,{OLD}",
    f"profile=ai-faster-dq,qp=37,compand=1.0,rotate=true,{OLD}",
    f"profile=ai-faster-dq,qp=41,compand=0.5,{OLD}",
    f"profile=ai-faster-dq,qp=40,compand=0.6,{OLD}",
    f"profile=ai-faster-dq,qp=39,compand=0.7,{OLD}",
    f"profile=ai-faster-dq,qp=38,compand=0.8,{OLD}",
    f"profile=ai-faster-coef,qp=30,{OLD}",
    f"profile=ai-faster-coef-dq,qp=30,{OLD}",
    # reconstruction tables, then column balance at three strengths, then dependent quantization with it
    "profile=ai-faster-coef,qp=30,weighting=none",
    "profile=ai-faster-coef,qp=30,weighting=balance,alpha=0.5",
    "profile=ai-faster-coef,qp=30,weighting=balance,alpha=1.0",
    "profile=ai-faster-coef,qp=30,weighting=balance,alpha=1.5",
    "profile=ai-faster-coef-dq,qp=30,weighting=balance,alpha=1.0",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=list(DEFAULT_CONFIGS))
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    info = sysinfo.describe()
    store = HERE / "fixed_qp.jsonl"
    rows = {} if args.fresh or not store.is_file() else {
        r["config"]: r for r in map(json.loads, store.read_text().splitlines()) if r.get("windows") == args.windows
    }
    h = Harness("smollm2-135m", args.windows)
    for spec in args.configs:
        if spec in rows:
            continue
        art = compress_source(h.src, CompressSettings(**dict(_parse_kv(p) for p in spec.split(",") if p)))
        state = restore_state_dict(art)
        res = h.evaluate(state)
        rows[spec] = {"config": spec, "windows": args.windows, "bpw": art.stats()["bits_per_weight"],
                      "rel_error": h.rel_error(state), "perplexity": res.perplexity, "tokens": res.tokens}
        print(json.dumps(rows[spec]), flush=True)
        tmp = store.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
        tmp.replace(store)
    # the command that measures every row of the table, not only this run's
    info["command"] = ".venv/bin/python benchmarks/experiments/fixed_qp.py " + " ".join(f'"{c}"' for c in rows)
    lines = [
        "# Options at fixed QPs (built-in model)",
        "",
        f"Regenerate: `{info['command']}` (results kept in `fixed_qp.jsonl`). SmolLM2-135M, **its",
        "weights were already 4-bit (GGUF Q4_1)**; the 210 decoder linear matrices coded with VVC (the",
        f"profile given) at the QP given, no rate control. Perplexity: PTB test, {args.windows} windows of 512",
        "tokens. Compare rows at similar bits per weight.",
        "",
        "| configuration | bits/weight | rel. weight error | perplexity |",
        "|---|---|---|---|",
        *[f"| `{r['config']}` | {r['bpw']:.3f} | {r['rel_error']:.4f} | {r['perplexity']:,.1f} |"
          for r in sorted(rows.values(), key=lambda r: r["bpw"])],
    ]
    write_markdown(HERE / "FIXED_QP.md", lines, info)
    print("wrote", HERE / "FIXED_QP.md")


if __name__ == "__main__":
    main()

"""Which ingredient buys how much (issue 4): llmcodec's data-free options switched on one by one,
at equal bit budgets, on the built-in model.

    .venv/bin/python benchmarks/ablation.py [--bpw 2.5,3.0] [--windows 40]

Writes benchmarks/ablation/results.csv and benchmarks/ablation/RESULTS.md (points already in the
CSV are kept; --fresh re-measures). The built-in model's weights were already 4-bit (GGUF Q4_1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OLD_DEFAULTS as OLD  # noqa: E402
from common import Harness, ResultsCSV, w40_default_rows, write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.codecs.vvc import VVC  # noqa: E402
from llmcodec.compress import CompressSettings  # noqa: E402
from llmcodec.priors import EDGE_MAX_BPW, KV_MAX_BPW  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/ablation"
FIELDS = ["config", "target_bpw", "bpw", "rel_error", "perplexity", "tokens", "seconds", "settings"]

# The default is the base plus seven ingredients below 3.25 bits per weight (half-filled blocks, edge
# layers and the key/value sharing prior); from 3.25 up, the first five and dependent quantization on
# the medium preset in full blocks instead (DEFAULT_PATH, path_at). Every row before edge layers
# became a default (2026-12-03) was measured without them, and every row before the key/value prior
# without it: NOEDGE and NOKV say so, so that each row can still be measured again as it was. The
# log codes of the side information were stored a byte each until they were packed (2026-12-04, the
# last step): LOG8 names that on every row measured before.
# The previous defaults' path, in the sample domain, follows (base -> dependent quantization ->
# companding), then alternatives tried on top of either (measured, not kept). Every configuration
# names all the settings it was measured with that differ from today's library defaults, so each
# row can be measured again as it was.
HALF, DQM = "+ half-filled blocks", "+ dependent quantization on the medium preset (from 3.25 bpw)"
EDGE, KV = "+ edge layers (below 3.25 bpw)", "+ key/value sharing (below 3.25 bpw)"
PACKED = "+ packed side information"
DEFAULT_PATH = ("base: per-row scales, equal QP", "+ coefficient domain", "+ reconstruction tables",
                "+ column balance", "+ 8-bit side information", HALF, EDGE, KV, DQM, PACKED)
LOG8 = {"side": "log8"}
NOKV = {"kv_sharing": 0.0}
NOEDGE = {"edge_octaves": 0.0, **NOKV}
CONFIGS: dict[str, dict] = {
    "base: per-row scales, equal QP": {"profile": "ai-faster", **OLD},
    "+ coefficient domain": {"profile": "ai-faster-coef", **OLD},
    "+ reconstruction tables": {"profile": "ai-faster-coef", "weighting": "none", "side": "fp16", **NOEDGE},
    "+ column balance": {"side": "fp16", "profile": "ai-faster-coef", **NOEDGE},
    "+ 8-bit side information": {"profile": "ai-faster-coef", **NOEDGE, **LOG8},
    # the default profile below 3.25 bits per weight since 2026-12-03 (codecs/vvc.py)
    HALF: {"profile": "ai-faster-coef-half", **NOEDGE, **LOG8},
    # the default below 3.25 bits per weight since 2026-12-03 (compress.EDGE_MAX_BPW)
    EDGE: {**NOKV, **LOG8},
    "default + dependent quantization": {"profile": "ai-faster-coef-dq", **NOEDGE, **LOG8},
    "balance + dependent quantization": {"profile": "ai-faster-coef-dq", "side": "fp16", **NOEDGE},
    "coefficient domain + dependent quantization": {"profile": "ai-faster-coef-dq", **OLD},
    "+ dependent quantization": {"profile": "ai-faster-dq", **OLD},
    "+ companding p=0.8": {"profile": "ai-faster-dq", **OLD, "compand": 0.8},
    "+ shared step, equal-error QPs": {"profile": "ai-faster-dq", "shared_scale": True, "allocation": "equal-error",
                                       **OLD},
    "+ data-free column weighting": {"profile": "ai-faster-dq", "shared_scale": True, "allocation": "equal-error",
                                     **OLD, "weighting": "data-free"},
    "dq + rotation": {"profile": "ai-faster-dq", "rotate": True, **OLD},
    "dq + companding p=0.7": {"profile": "ai-faster-dq", **OLD, "compand": 0.7},
    "dq + companding p=0.9": {"profile": "ai-faster-dq", **OLD, "compand": 0.9},
    # from the high-rate threshold the default profile is default-dq: dependent quantization with
    # libvvenc's medium preset ("default + dependent quantization" above is that on the faster preset)
    DQM: {"profile": "default-dq", **NOEDGE, **LOG8},
    # grouped-query attention's k_proj and v_proj finer (compress.kv_offsets), the default below 3.25 bpw
    KV: LOG8,
    # the log codes Golomb-Rice packed (sideinfo.pack), the default since 2026-12-04
    PACKED: {},
}


def path_at(bpw: float) -> tuple[str, ...]:
    """DEFAULT_PATH's steps at a budget: below the high-rate profile's threshold all but dependent
    quantization on the medium preset, from there that one instead of half-filled blocks; the
    edge-layer and key/value priors below their own thresholds only."""
    skip = {DQM} if bpw < VVC.high_rate_profile[1] else {HALF}
    skip |= ({EDGE} if bpw >= EDGE_MAX_BPW else set()) | ({KV} if bpw >= KV_MAX_BPW else set())
    return tuple(step for step in DEFAULT_PATH if step not in skip)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--bpw", default="2.5,3.0")
    ap.add_argument("--windows", type=int, default=40, help="PTB test windows of 512 tokens (0: all)")
    ap.add_argument("--configs", default=None, help="comma-separated config numbers (default: all)")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="redraw RESULTS.md from the CSVs")
    args = ap.parse_args()
    info = sysinfo.describe()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    csv = ResultsCSV(OUT / "results.csv", FIELDS, ("config", "target_bpw"), args.fresh)
    if args.report_only:
        return write_report(csv, info, args.windows, measured=False)
    h = Harness(args.model, args.windows)
    chosen = list(CONFIGS.items())
    if args.configs:
        chosen = [chosen[int(i)] for i in args.configs.split(",")]
    borrowed = w40_default_rows(args.windows)
    for bpw in args.bpw.split(","):
        for name, kw in chosen:
            if csv.has(name, bpw):
                continue
            if name == PACKED and float(bpw) in borrowed:
                print(f"skipping {name!r} at {bpw} bpw: measured in benchmarks/rd/w40", flush=True)
                continue
            settings = CompressSettings(bpw=float(bpw), **kw)
            # e.g. the last step of DEFAULT_PATH is the 8-bit step's encoding below 3.25 bpw
            same = [c for c, ckw in CONFIGS.items() if c != name and csv.has(c, bpw)
                    and settings.same_encoding(CompressSettings(bpw=float(bpw), **ckw))]
            if same:
                print(f"skipping {name!r} at {bpw} bpw: the same encoding as {same[0]!r}", flush=True)
                continue

            out, got, secs = h.timed(lambda s=settings: h.compress(s))
            res = h.evaluate(out)
            csv.add({"config": name, "target_bpw": bpw, "bpw": f"{got:.4f}", "rel_error": f"{h.rel_error(out):.4f}",
                     "perplexity": f"{res.perplexity:.3f}", "tokens": res.tokens, "seconds": f"{secs:.0f}",
                     "settings": str(kw)})
    write_report(csv, info, args.windows)


# rows of benchmarks/e2e (measured with the defaults of their day, i.e. OLD)
E2E_PROFILES = {"base: per-row scales, equal QP": "ai-faster", "+ dependent quantization": "ai-faster-dq"}


def e2e_rows(have: set[tuple[str, str]]) -> list[dict]:
    """Points of the first two steps that benchmarks/e2e.py measured under the same protocol (rate
    control, same model and tokens, no companding) at budgets this CSV lacks."""
    import csv as csvlib

    path = ROOT / "benchmarks/e2e/results.csv"
    if not path.is_file():
        return []
    out = []
    with path.open() as f:
        for r in csvlib.DictReader(f):
            for config, profile in E2E_PROFILES.items():
                target = f"{float(r['target_bpw']):.1f}" if r["target_bpw"] else ""
                if r["method"] == "vvc" and r["setting"] == f"bpw={target},profile={profile}":
                    if (config, target) not in have and float(target) >= 2.5:
                        out.append({"config": config, "target_bpw": target, "bpw": r["bpw"],
                                    "rel_error": r["rel_error"], "perplexity": r["perplexity"],
                                    "tokens": r["tokens"], "seconds": r["seconds"],
                                    "settings": f"{CONFIGS[config]} (benchmarks/e2e)"})
    return out


def write_report(csv: ResultsCSV, info: dict, windows: int, measured: bool = True) -> None:
    rows = list(csv.rows.values())
    rows += e2e_rows({(r["config"], f"{float(r['target_bpw']):.1f}") for r in rows})
    have = {float(r["target_bpw"]) for r in rows if r["config"] == PACKED}
    rows += [{"config": PACKED, "target_bpw": f"{b:.1f}", **r, "settings": "{} (benchmarks/rd/w40)"}
             for b, r in w40_default_rows(windows).items() if b not in have and b >= 2.5]
    rows = sorted(rows, key=lambda r: (float(r["target_bpw"]), list(CONFIGS).index(r["config"])
                                       if r["config"] in CONFIGS else 99))
    lines = ["# Ablation: what each data-free ingredient buys", "",
             "Regenerate: `.venv/bin/python benchmarks/ablation.py`. Built-in SmolLM2-135M (**its weights were",
             "already 4-bit, GGUF Q4_1**), the 210 decoder linear matrices coded with VVC (libvvenc), rate",
             "control to the target bits per weight (side information counted), PTB test perplexity over the",
             "tokens listed (512-token windows). The default is reached by",
             f"{' -> '.join(DEFAULT_PATH)}: the weights are placed in the codec's transform-coefficient",
             "domain (src/llmcodec/coefdomain.py), so its quantizer acts on each weight; each decoded level",
             "is restored at the centroid of the weights that reached it (quant.Recon); every input column",
             "is coded at the same RMS (importance.balance_importance); scales and column multipliers are",
             "stored as 8-bit log codes and offsets only where they pay (sideinfo.py), the codes a byte each",
             "until the last step packs them (Golomb-Rice about their median, sideinfo.pack); below 3.25",
             "bits per weight the weights fill only the left 16 coefficient columns of each 32x32 block",
             "(coefdomain.place),",
             "and the first and last block of the stack get a step one octave finer than the rest's",
             "(compress.edge_offsets; benchmarks/experiments/EDGES.md); from 3.25 bits per weight the codec instead",
             "quantizes full blocks with dependent (trellis) quantization and libvvenc's medium preset, not",
             "RDOQ and the faster preset, without edge layers (that step follows the 8-bit step there;",
             "src/llmcodec/codecs/vvc.py); below 3.25 k_proj and v_proj, whose heads each serve 3 query",
             "heads in SmolLM2, get a step 3^-1/2 times the rest's (compress.kv_offsets). An earlier default",
             "was reached in the sample domain: base -> '+ dependent quantization' -> '+ companding p=0.8';",
             "the rows after it are alternatives tried on top of that. The settings column gives each",
             "row's settings that differ from today's defaults (rows measured before a setting existed ran",
             "with it off: their settings were recorded then, and `CONFIGS` in the script now names them in",
             "full). A",
             "configuration missing from the table was not measured. Rows marked",
             "'(benchmarks/e2e)' come from",
             "`benchmarks/e2e/results.csv`, and rows marked '(benchmarks/rd/w40)' (today's default) from",
             "`benchmarks/rd/w40/results.csv`: the same protocol (rate control, same tokens), run there. Rows",
             "measured before rate control's fill round (src/llmcodec/rate.py, step 3) existed land further",
             "below the target: compare their bits/weight (at 2.5, '+ column balance' is one of them).", "",
             "| target bpw | configuration | settings | bits/weight | rel. weight error | perplexity | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target_bpw']} | {r['config']} | `{r['settings']}` | {r['bpw']} | {r['rel_error']} | "
                     f"{float(r['perplexity']):,.2f} | {r['seconds']} |")
    lines += path_summary(rows)
    write_markdown(OUT / "RESULTS.md", lines, info, measured)


def path_summary(rows: list[dict]) -> list[str]:
    """The default's path as one table: each step's perplexity at each budget and its change
    against the step before it that was measured on that budget's path."""
    got = {(r["config"], float(r["target_bpw"])): r for r in rows}
    budgets = sorted({b for _, b in got if b >= 2.5})
    lines = ["", "## What each step of the default's path buys", "",
             "Perplexity at each budget, from the rows above, with its bits per weight and the change",
             "against the step before it on that budget's path. n/a: the step is not part of the default",
             "at that budget; —: not measured. The last step at each budget is checked to code exactly",
             "as `llmcodec compress --bpw B` does today (`CompressSettings.same_encoding`). Near 3.5-4 bits",
             "per weight a change of a few per cent is inside one point's realization noise on this",
             "4-bit-sourced model (benchmarks/experiments/NOISE.md, rd/w40/noise): read those as ties.", "",
             "| step | " + " | ".join(f"{b:g} bpw" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    prev: dict[float, float] = {}
    for step in DEFAULT_PATH:
        cells = []
        for b in budgets:
            r = got.get((step, b))
            if step not in path_at(b):
                cells.append("n/a")
            elif r is None:
                cells.append("—")
            else:
                ppl = float(r["perplexity"])
                change = f"; {100 * (ppl / prev[b] - 1):+.1f}%" if b in prev else ""
                cells.append(f"{ppl:,.1f} ({float(r['bpw']):.2f} bpw{change})")
                prev[b] = ppl
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    today = [f"{b:g}" for b in budgets if CompressSettings(bpw=b, **CONFIGS[path_at(b)[-1]])
             .same_encoding(CompressSettings(bpw=b))]
    lines += ["", f"The last step is today's default encoding at {', '.join(today) or 'no budget'} bits per weight."]
    return lines


if __name__ == "__main__":
    main()

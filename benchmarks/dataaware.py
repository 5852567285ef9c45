"""The optional data-aware mode at whole-file budgets on the built-in model (issue 30, item 2):
``--calibration`` alone (QPs between matrices from loss gradients) and with ``--error-feedback``
(GPTQ's inverse-Hessian update with the codec in the loop), against the calibration-free default.

    .venv/bin/python benchmarks/dataaware.py [--bpw 2.5,3.0] [--modes feedback,calibration,default]
    .venv/bin/python benchmarks/dataaware.py --report-only

Calibration: the first ``--tokens`` tokens of PTB *train*; evaluation: the first 40 windows of 512
tokens of PTB test (the README's protocol). Writes benchmarks/dataaware/results.csv (resumable: rows
already there are skipped) and the note benchmarks/peers/dataaware.md. Rows are keyed by the commit the
library was at (``code``): the default changes between commits, so compare rows of one commit. The built-in
SmolLM2-135M-Instruct's weights were already 4-bit (GGUF Q4_1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Harness, ResultsCSV, write_markdown  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import compress_source, restore_state_dict, save  # noqa: E402
from llmcodec.budget import whole_file  # noqa: E402
from llmcodec.compress import CompressSettings, WorkDir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["code", "mode", "target_bpw", "calibration", "bits_per_parameter", "bits_per_coded_weight", "file_bytes",
          "perplexity", "next_token_acc", "next_word_acc", "last_word_acc", "tokens", "windows", "seconds",
          "load", "source"]
MODES = {
    "default": {},
    "calibration": {"calibration": "ptb-train"},
    "feedback": {"calibration": "ptb-train", "error_feedback": True},
}
FLAGS = {"default": "(no data)", "calibration": "--calibration ptb-train --calibration-tokens 4096",
         "feedback": "--calibration ptb-train --calibration-tokens 4096 --error-feedback"}


def _f(x) -> str:
    return "" if x is None else f"{x:.4f}"


def report(path: Path, rows: list[dict], info: dict, tokens: int, uncompressed: str, measured: bool = True) -> None:
    lines = [
        "# The data-aware mode at whole-file budgets (issue 30, item 2)",
        "",
        "Built-in SmolLM2-135M-Instruct; **its weights were already 4-bit (GGUF Q4_1)**. Whole-file bits per",
        "parameter (`--bpw`), PTB test perplexity and accuracy over the first 40 windows of 512 tokens",
        f"(uncompressed: {uncompressed}). Data-aware rows: calibration on the first {tokens} tokens of PTB",
        "*train* (`--calibration-tokens`). Regenerate: `.venv/bin/python benchmarks/dataaware.py --modes",
        "feedback,calibration,default` (raw rows: benchmarks/dataaware/results.csv). `code`: the commit",
        "the library was at; the calibration-free default changed between them, so compare within one.",
        "",
        "| code | llmcodec | --bpw | bits per parameter | perplexity | next token | next word | last word | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {m: i for i, m in enumerate(MODES)}
    for r in sorted(rows, key=lambda r: (r["code"], float(r["target_bpw"]), order.get(r["mode"], 9))):
        def pct(k, r=r):
            return f"{100 * float(r[k]):.1f}%" if r[k] else "-"

        src = f" ({r['source']})" if r.get("source") else ""
        lines.append(f"| {r['code']} | {r['mode']} `{FLAGS[r['mode']]}`{src} | {r['target_bpw']} | "
                     f"{float(r['bits_per_parameter']):.3f} | {float(r['perplexity']):.1f} | {pct('next_token_acc')} | "
                     f"{pct('next_word_acc')} | {pct('last_word_acc')} | {r['seconds']} |")
    write_markdown(path, lines, info, measured)


def commit() -> str:
    """The short commit of the checkout, marked if the library's sources differ from it."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "src") else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bpw", default="2.5,3.0")
    ap.add_argument("--modes", default="feedback,calibration")
    ap.add_argument("--tokens", type=int, default=4096, help="calibration tokens of PTB train")
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out/dataaware")
    ap.add_argument("--csv", type=Path, default=ROOT / "benchmarks/dataaware/results.csv")
    ap.add_argument("--note", type=Path, default=ROOT / "benchmarks/peers/dataaware.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    info = sysinfo.describe()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    csv = ResultsCSV(args.csv, FIELDS, ("code", "mode", "target_bpw", "calibration"))
    filesize = ResultsCSV(ROOT / "benchmarks/filesize/results.csv", [], ("setting",))
    uncompressed = filesize.rows.get(("uncompressed",), {}).get("perplexity", "?")
    code = commit()
    if args.report_only:
        report(args.note, list(csv.rows.values()), info, args.tokens, uncompressed, measured=False)
        return
    h = Harness("smollm2-135m", args.windows)
    args.out.mkdir(parents=True, exist_ok=True)
    for b in (float(x) for x in args.bpw.split(",")):
        for m in args.modes.split(","):
            calib = f"ptb-train {args.tokens}" if m != "default" else "none"
            if csv.has(code, m, str(b), calib):
                continue
            extra = dict(MODES[m])
            if m != "default":
                extra["calibration_tokens"] = args.tokens
            settings = CompressSettings(bpw=b, workers=args.workers, **extra)
            t0 = time.perf_counter()
            art = compress_source(h.src, settings, work=WorkDir(args.out / "cache", resume=True))
            path = args.out / f"{m}-{b}.llmc"
            save(art, path)
            secs = time.perf_counter() - t0
            whole = whole_file(path)
            res = h.evaluate(restore_state_dict(art))
            csv.add({"code": code, "mode": m, "target_bpw": b, "calibration": calib,
                     "bits_per_parameter": f"{whole['bits_per_parameter']:.4f}",
                     "bits_per_coded_weight": f"{art.stats()['bits_per_weight']:.4f}",
                     "file_bytes": whole["file_bytes"], "perplexity": f"{res.perplexity:.3f}",
                     "next_token_acc": _f(res.next_token_accuracy), "next_word_acc": _f(res.next_word_accuracy),
                     "last_word_acc": _f(res.last_word_accuracy), "tokens": res.tokens, "windows": args.windows,
                     "seconds": f"{secs:.0f}", "load": " ".join(f"{x:.1f}" for x in os.getloadavg())})
            info["load (1, 5, 15 min)"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
            report(args.note, list(csv.rows.values()), info, args.tokens, uncompressed)


if __name__ == "__main__":
    main()

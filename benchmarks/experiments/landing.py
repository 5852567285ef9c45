"""Where a whole-file --bpw lands short: rate control's landing, or the header bound's slack.

    .venv/bin/python benchmarks/experiments/landing.py [--budgets 2.5,4,5,6] [--artifact FILE ...]

Under ``--budget model`` the coded matrices get ``budget.coded_bits``: the target minus the kept
tensors minus ``artifact.header_bound`` (the header with every value coding decides written at its
longest). What the file falls short of ``B x parameters`` splits exactly into

* landing: the matrices' budget minus what rate control's allocation totals (bitstreams plus its
  estimate of the side information; it may land up to ``tolerance`` below, it aims at a quarter of it);
* side information: the allocation's side estimate minus the side pieces as stored;
* header slack: the header bound minus the header as written.

The tiny Llama is the test suite's 1.3 M-parameter one (tests/test_budget.py, ``wide_llama``),
built from a config with random weights. ``--artifact`` adds the header slack of finished artifacts
(e.g. of the built-in model, whose weights were already 4-bit: GGUF Q4_1), from their headers alone.
Writes benchmarks/experiments/LANDING.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from common import write_markdown  # noqa: E402

import llmcodec  # noqa: E402
from llmcodec import artifact, budget, compress, sysinfo  # noqa: E402
from llmcodec.artifact import header_bound, piece_bytes  # noqa: E402


def _side_and_data(pieces: dict[str, int]) -> tuple[int, int, int]:
    """Bytes of the coded bitstreams, of the coded side pieces, and of the kept tensors."""
    stream = sum(v for k, v in pieces.items() if k.endswith("::bitstream"))
    kept = sum(v for k, v in pieces.items() if k.endswith("::raw"))
    files = sum(v for k, v in pieces.items() if k.startswith("file::"))
    return stream, sum(pieces.values()) - stream - kept - files, kept


def measure(folder: Path, bpw: float, out: Path) -> dict:
    """Compress ``folder`` at ``bpw`` and split the file's shortfall (percent of the target)."""
    rec: dict = {}
    allocate, bound = compress.allocate, budget.header_bound

    def allocate_seen(**kw):
        rec["kw"], rec["alloc"] = kw, allocate(**kw)
        return rec["alloc"]

    def bound_seen(*a, **k):
        rec["bound"] = bound(*a, **k)
        return rec["bound"]

    compress.allocate, budget.header_bound = allocate_seen, bound_seen
    try:
        art = llmcodec.compress_model(folder, out, llmcodec.CompressSettings(bpw=bpw))
    finally:
        compress.allocate, budget.header_bound = allocate, bound
    whole = budget.whole_file(out)
    pieces = piece_bytes(out)
    stream, side, _ = _side_and_data(pieces)
    target = bpw * whole["parameters"]
    kw, alloc = rec["kw"], rec["alloc"]
    coded_budget = kw["target_bpw"] * sum(kw["numel"])
    header = whole["file_bytes"] - sum(pieces.values())
    pct = lambda bits: 100 * bits / target  # noqa: E731
    return {
        "bpw": bpw, "parameters": whole["parameters"], "embed_qp": art.coded["model.embed_tokens.weight"].qp,
        "reached": whole["bits_per_parameter"], "short": pct(target - 8 * (whole["file_bytes"] - whole["files_bytes"])),
        "landing": pct(coded_budget - alloc.total_bits),
        "side": pct(alloc.total_bits - 8 * (stream + side)),
        "header": pct(8 * (rec["bound"] - header)), "bound": rec["bound"], "written": header,
        "qps": f"{min(alloc.qps)}-{max(alloc.qps)}",
    }


def header_slack(path: Path) -> dict:
    """A finished artifact's header bound (recomputed from its header) against its header as written."""
    art = artifact.read(path)
    whole = budget.whole_file(path)
    written = whole["file_bytes"] - sum(piece_bytes(path).values())
    coded = {n: tuple(c.shape) for n, c in art.coded.items()}
    bound = header_bound(dataclasses.replace(art, coded={}), coded, art.settings.get("group"), llmcodec.__version__)
    bpw = float(art.settings["bpw"])
    return {"file": path.name, "bpw": bpw, "parameters": whole["parameters"], "coded": len(coded),
            "bound": bound, "written": written, "header": 100 * 8 * (bound - written) / (bpw * whole["parameters"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="2.5,4,5,6")
    ap.add_argument("--artifact", type=Path, action="append", default=[])
    ap.add_argument("--out", type=Path, default=HERE / "LANDING.md")
    args = ap.parse_args()
    info = sysinfo.describe()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    from conftest import make_tiny_llama

    lines = [
        "# Where a whole-file budget lands short",
        "",
        f"Regenerate: `{info['command']}`. What each column is: the docstring of `landing.py`. "
        "Percent of the target `B x parameters`; the tiny Llama's weights are random (from a config).",
        "",
        "| model | --bpw | parameters | embedding QP | reached | short | landing | side information "
        "| header slack | header bound / written (bytes) | QPs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as d:
        folder = make_tiny_llama(Path(d) / "wide", hidden=192, layers=2, vocab_words=2000)
        for b in args.budgets.split(","):
            r = measure(folder, float(b), Path(d) / f"b{b}.llmc")
            print(r, flush=True)
            lines.append(f"| tiny Llama | {r['bpw']} | {r['parameters']:,} | {r['embed_qp']} | {r['reached']:.4f} "
                         f"| {r['short']:.2f}% | {r['landing']:.2f}% | {r['side']:.2f}% | {r['header']:.2f}% "
                         f"| {r['bound']:,} / {r['written']:,} | {r['qps']} |")
    for p in args.artifact:
        r = header_slack(p)
        print(r, flush=True)
        lines.append(f"| {r['file']} ({r['coded']} coded) | {r['bpw']} | {r['parameters']:,} | | | | | "
                     f"| {r['header']:.2f}% | {r['bound']:,} / {r['written']:,} | |")
    write_markdown(args.out, lines, info)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

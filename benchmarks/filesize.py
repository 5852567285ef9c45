"""Whole-file bit budgets on the built-in model (issue 29): for ``--bpw B`` (bits per parameter of the
whole file), the artifact's size, its bits per parameter and perplexity, next to the source GGUF's size
and the fp16 folder's; and a sweep of the token embedding / output head's QP offset.

    .venv/bin/python benchmarks/filesize.py                      # all points not yet in the CSV
    .venv/bin/python benchmarks/filesize.py --report-only        # redraw the report from the CSV

Writes benchmarks/filesize/results.csv and the "Whole file" section of BENCHMARKS.md (between its
markers; the rest of the file is left as it is). Artifacts go to out/filesize/ (not tracked); finished
encodes are cached in out/filesize/cache so that points sharing matrices and QPs share encodes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Harness, ResultsCSV, measuring_command  # noqa: E402

from llmcodec import sysinfo  # noqa: E402
from llmcodec.api import compress_source, restore_state_dict, save  # noqa: E402
from llmcodec.artifact import piece_bytes, read_header  # noqa: E402
from llmcodec.budget import file_shares, whole_file  # noqa: E402
from llmcodec.compress import EMBEDDING_OFFSET, CompressSettings, WorkDir  # noqa: E402
from llmcodec.modelio import builtin_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["setting", "target_bpw", "embedding_offset", "file_bytes", "files_bytes", "parameters",
          "bits_per_parameter", "bits_per_coded_weight", "embeddings_head_share", "header_bytes", "kept_bytes",
          "perplexity", "tokens", "windows", "seconds"]
BEGIN, END = "<!-- filesize: begin (benchmarks/filesize.py) -->", "<!-- filesize: end -->"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def fp16_folder_bytes(h: Harness) -> tuple[int, int]:
    """The fp16 Hugging Face folder of the model (all files, and its weights alone)."""
    from llmcodec.modelio import build_model

    model = build_model(h.state, h.src.config).half()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        for f, data in h.src.files.items():
            Path(d, f).write_bytes(data)
        weights = sum(f.stat().st_size for f in Path(d).glob("*.safetensors"))
        return folder_bytes(Path(d)), weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--windows", type=int, default=40, help="PTB test windows of 512 tokens (default 40)")
    ap.add_argument("--bpw", default="2.5,3.0,4.0,2.0", help="whole-file budgets at the default settings")
    ap.add_argument("--sweep-bpw", type=float, default=2.5, help="budget of the embedding offset sweep")
    ap.add_argument("--offsets", default="0,-3,-6",
                    help="embedding/head QP offsets to sweep (the default's is the --sweep-bpw budget's row)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out/filesize")
    ap.add_argument("--csv", type=Path, default=ROOT / "benchmarks/filesize/results.csv")
    ap.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    info = sysinfo.describe()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    csv = ResultsCSV(args.csv, FIELDS, ("setting",))
    if args.report_only:
        write_report(args.report, list(csv.rows.values()), None)
        return
    h = Harness(args.model, args.windows)
    args.out.mkdir(parents=True, exist_ok=True)

    if not csv.has("uncompressed"):
        t0 = time.perf_counter()
        # the same deterministic model and tokens as benchmarks/e2e.py's uncompressed row: measured once
        e2e = ResultsCSV(ROOT / "benchmarks/e2e/results.csv", [], ("method", "setting")).rows.get(("uncompressed", "-"))
        if e2e is not None and args.windows == 40 and e2e["tokens"] == "20440":
            ppl, tokens = float(e2e["perplexity"]), int(e2e["tokens"])
        else:
            res = h.evaluate(h.state)
            ppl, tokens = res.perplexity, res.tokens
        gguf = builtin_path(args.model).stat().st_size if args.model == "smollm2-135m" else 0
        params = sum(t.numel() for n, t in h.state.items() if n not in h.src.tied())
        csv.add({"setting": "uncompressed", "file_bytes": gguf, "parameters": params,
                 "bits_per_parameter": f"{8 * gguf / params:.4f}", "perplexity": f"{ppl:.3f}",
                 "tokens": tokens, "windows": args.windows, "seconds": f"{time.perf_counter() - t0:.0f}"})
    if not csv.has("fp16 folder"):
        total, weights = fp16_folder_bytes(h)
        params = int(csv.rows[("uncompressed",)]["parameters"])
        csv.add({"setting": "fp16 folder", "file_bytes": total, "files_bytes": total - weights,
                 "parameters": params, "bits_per_parameter": f"{8 * weights / params:.4f}"})

    def run(b: float, offset: int | None) -> None:
        setting = f"bpw={b}" + ("" if offset is None else f" embedding_offset={offset}")
        if csv.has(setting):
            return
        settings = CompressSettings(bpw=b, embedding_offset=offset, workers=args.workers)
        t0 = time.perf_counter()
        art = compress_source(h.src, settings, work=WorkDir(args.out / "cache", resume=True))
        path = args.out / (setting.replace(" ", "_").replace("=", "") + ".llmc")
        save(art, path)
        secs = time.perf_counter() - t0
        whole = whole_file(path)
        shares = file_shares(read_header(path), piece_bytes(path), whole["file_bytes"])
        st = art.stats()
        res = h.evaluate(restore_state_dict(art))
        csv.add({"setting": setting, "target_bpw": b, "embedding_offset": settings.resolved_embedding_offset(),
                 "file_bytes": whole["file_bytes"], "files_bytes": whole["files_bytes"],
                 "parameters": whole["parameters"], "bits_per_parameter": f"{whole['bits_per_parameter']:.4f}",
                 "bits_per_coded_weight": f"{st['bits_per_weight']:.4f}",
                 "embeddings_head_share": f"{shares['embeddings/head'] / whole['file_bytes']:.4f}",
                 "header_bytes": shares["header"], "kept_bytes": st["raw_bytes"],
                 "perplexity": f"{res.perplexity:.3f}", "tokens": res.tokens, "windows": args.windows,
                 "seconds": f"{secs:.0f}"})

    for b in (float(x) for x in args.bpw.split(",") if x):
        run(b, None)
        write_report(args.report, list(csv.rows.values()), info)
    for o in (int(x) for x in args.offsets.split(",") if x):
        if o != EMBEDDING_OFFSET or not csv.has(f"bpw={args.sweep_bpw}"):
            run(args.sweep_bpw, o)
            write_report(args.report, list(csv.rows.values()), info)


def _mb(x: str) -> str:
    return f"{int(x) / 1e6:.1f}" if x else "-"


def write_report(path: Path, rows: list[dict], info: dict | None) -> None:
    """Replace the section between BEGIN and END in ``path`` (appended if absent)."""
    by = {r["setting"]: r for r in rows}
    ref = by.get("uncompressed", {})
    fp16 = by.get("fp16 folder", {})
    lines = [
        BEGIN,
        "## Whole file: `--bpw` as bits per parameter of the file (issue 29)",
        "",
        "Regenerate with `.venv/bin/python benchmarks/filesize.py`; raw points: `benchmarks/filesize/results.csv`.",
        "**The built-in SmolLM2-135M-Instruct comes from a GGUF file whose weights were already quantized to",
        "4 bits (Q4_1, blocks of 32).** `--bpw B` counts every stored byte of every tensor (coded matrices and",
        "their side information, the token embedding tied to the output head, norms stored at 16 bits, the",
        "artifact's header) over the model's parameters; the config and tokenizer files are stored compressed",
        "beside and not counted (their bytes are in the last column). Perplexity: PTB test, 512-token windows,",
        "the first `windows` of them (the README's protocol).",
        "",
        "| model | file MB | bits per parameter | bits per coded weight | embedding+head share | perplexity "
        "| windows | config+tokenizer MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if ref:
        lines.append(f"| source GGUF (Q4_1, with its tokenizer) | {_mb(ref['file_bytes'])} | "
                     f"{float(ref['bits_per_parameter']):.2f} | - | - | {float(ref['perplexity']):.1f} | "
                     f"{ref['windows']} | in the file |")
    if fp16:
        lines.append(f"| fp16 folder (transformers) | {_mb(fp16['file_bytes'])} | "
                     f"{float(fp16['bits_per_parameter']):.2f} | - | - | - | - | {_mb(fp16['files_bytes'])} |")
    coded = sorted((r for r in rows if r["setting"].startswith("bpw=")),
                   key=lambda r: ("embedding_offset" in r["setting"], float(r["target_bpw"]),
                                  int(r["embedding_offset"] or 0)))
    for r in coded:
        name = (f"llmcodec --bpw {r['target_bpw']}" + (f" --embedding-offset {r['embedding_offset']}"
                                                      if "embedding_offset" in r["setting"] else ""))
        lines.append(f"| {name} | {_mb(r['file_bytes'])} | {float(r['bits_per_parameter']):.3f} | "
                     f"{float(r['bits_per_coded_weight']):.3f} | {100 * float(r['embeddings_head_share']):.1f}% | "
                     f"{float(r['perplexity']):.1f} | {r['windows']} | {_mb(r['files_bytes'])} |")
    lines += ["", f"Default QP offset of the token embedding / output head: {EMBEDDING_OFFSET} (the sweep rows "
              "name theirs). Done-when of issue 29: file <= 1.01 x B x parameters / 8 bytes plus the config "
              "and tokenizer: "
              + ", ".join(f"B={r['target_bpw']}: {'yes' if _within(r) else 'NO'}" for r in coded
                          if "embedding_offset" not in r["setting"]) + "."]
    if info is not None:
        lines += ["", "Measured on: " + "; ".join(f"{k} `{v}`" for k, v in info.items() if k != "command")
                  + f"; command `{measuring_command(info)}`."]
    else:
        old = path.read_text() if path.is_file() else ""
        prev = old[old.index(BEGIN):old.index(END)] if BEGIN in old and END in old else ""
        kept = [x for x in prev.splitlines() if x.startswith("Measured on: ")]
        lines += ["", *kept]
    lines.append(END)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    section = "\n".join(lines)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _within(r: dict) -> bool:
    b, params = float(r["target_bpw"]), int(r["parameters"])
    return int(r["file_bytes"]) <= 1.01 * b * params / 8 + int(r["files_bytes"])


if __name__ == "__main__":
    main()

"""Speed and memory of compression and restore (issue 6), against RTN and plain safetensors loading.

    .venv/bin/python benchmarks/speed/run.py  # writes benchmarks/speed/all-codecs/ (results.csv, RESULTS.md)
    .venv/bin/python benchmarks/speed/run.py --codecs vvc --skip-synthetic    # a shorter run

Every measurement runs in a fresh Python process, so its peak resident memory (``ru_maxrss``) is
its own; the CPU time of the process and of its FFmpeg children (``getrusage``) split the work
into "inside the codec" and "llmcodec's own code". Models:

- ``smollm2-135m`` (the built-in model from its GGUF file: its weights were already 4-bit Q4_1),
  read from the GGUF (transformers loads the whole model) and from a float32 safetensors folder
  export of it (read lazily, one tensor at a time);
- ``llama3-8b-shapes``: one matrix of each LLaMA-3-8B linear shape (4096x4096, 1024x4096,
  14336x4096, 4096x14336; 138 M weights, bf16, Gaussian with per-row scales), as safetensors.

Compression uses a fixed QP per codec, chosen first (by rate control on a slice) to give about
2.5 bits per weight, so every run codes each tensor exactly once; ``rate-controlled`` rows add
the full ``--bpw 2.5`` search.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"  # exported models and artifacts (holds a .gitignore of "*")
FIELDS = [
    "model",
    "task",
    "codec",
    "workers",
    "mweights",
    "seconds",
    "mw_per_s",
    "peak_rss_mb",
    "peak_before_save_mb",
    "base_rss_mb",
    "largest_tensor_mb",
    "codec_cpu_share",
    "self_cpu_s",
    "codec_cpu_s",
    "bpw",
    "load1",
    "note",
]
SYNTH_SHAPES = {
    "layers.0.self_attn.q_proj.weight": (4096, 4096),
    "layers.0.self_attn.k_proj.weight": (1024, 4096),
    "layers.0.mlp.gate_proj.weight": (14336, 4096),
    "layers.0.mlp.down_proj.weight": (4096, 14336),
}
LLAMA3_8B_PARAMS = 8.03e9
LLAMA3_8B_EMBED = 2 * 128256 * 4096  # input embedding + untied output head


# ------------------------------------------------------------------------------------------------
# Child side: one measurement per process.


def _status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. ru_maxrss would not do: Linux carries it over exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def child(task: dict) -> dict:
    import numpy as np
    import torch

    import llmcodec  # noqa: F401  (imports counted in the fixed overhead)
    from llmcodec import api
    from llmcodec.compress import CompressSettings, is_codable
    from llmcodec.modelio import load

    base = _status_mb("VmRSS")
    out: dict = {"base_rss_mb": base, "llmcodec_path": str(Path(llmcodec.__file__).parent)}
    kind = task["task"]
    t0 = time.perf_counter()
    s0, c0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    if kind == "compress":
        src = load(task["model"])
        settings = CompressSettings(
            codec=task["codec"], qp=task.get("qp"), bpw=task.get("bpw"), workers=task["workers"],
            **task.get("settings", {}),
        )
        t0 = time.perf_counter()  # reading the model (GGUF: all of it) is reported separately
        s0, c0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        art = api.compress_source(src, settings)
        out["peak_before_save_mb"] = _status_mb("VmHWM")  # coding only; artifact.write copies what it saves
        api.save(art, task["out"])
        st = art.stats()
        out.update(mweights=st["coded_weights"] / 1e6, bpw=st["bits_per_weight"])
    elif kind == "restore":
        if task["mode"] == "model":
            api.load_model(task["artifact"], task["workers"])
        else:
            state = api.load_state_dict(task["artifact"], task["workers"])
            del state
        from llmcodec.artifact import read_header

        out["mweights"] = read_header(task["artifact"])["stats"]["coded_weights"] / 1e6
    elif kind == "safetensors":
        if task["mode"] == "model":
            from transformers import AutoModelForCausalLM

            AutoModelForCausalLM.from_pretrained(task["model"])
        else:
            from safetensors.torch import load_file

            for f in sorted(Path(task["model"]).glob("*.safetensors")):
                load_file(str(f))
        src = load(task["model"])
        out["mweights"] = sum(int(np.prod(src.shape(n))) for n in src.names()) / 1e6
    elif kind == "rtn":
        from llmcodec.quant import rtn

        src = load(task["model"])
        settings = CompressSettings()
        n = 0
        for name in src.names():
            t = src.get(name)
            if is_codable(name, tuple(t.shape), settings):
                w = t.to(torch.float32).numpy()
                rtn(w, bits=task["bits"], group=128)
                n += w.size
        out["mweights"] = n / 1e6
    elif kind == "prepare":
        # llmcodec's own per-tensor work (quantize + frame layout) on 1 vs 2 threads: does the GIL serialize it?
        from concurrent.futures import ThreadPoolExecutor

        from llmcodec.codecs import get_codec
        from llmcodec.coder import prepare

        src = load(task["model"])
        c = get_codec("vvc")
        p = c.profile(None)
        mats = [
            src.get(n).to(torch.float32).numpy() for n in src.names() if is_codable(n, src.shape(n), CompressSettings())
        ]
        t0 = time.perf_counter()
        s0, c0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        with ThreadPoolExecutor(task["workers"]) as pool:
            list(pool.map(lambda w: prepare("x", w, c, p, None), mats))
        out["mweights"] = sum(w.size for w in mats) / 1e6
    else:
        raise ValueError(kind)
    out["seconds"] = time.perf_counter() - t0
    self_cpu, kids_cpu = _cpu(resource.RUSAGE_SELF) - s0, _cpu(resource.RUSAGE_CHILDREN) - c0
    out["codec_cpu_share"] = kids_cpu / (kids_cpu + self_cpu) if kids_cpu + self_cpu > 0 else 0.0
    out["self_cpu_s"], out["codec_cpu_s"] = self_cpu, kids_cpu
    out["peak_rss_mb"] = _status_mb("VmHWM")
    return out


# ------------------------------------------------------------------------------------------------
# Parent side: prepare models, run children, write the table.


def run_child(task: dict) -> dict:
    load1 = os.getloadavg()[0]
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(task)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"child {task} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["load1"] = load1
    return out


def make_cache() -> None:
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # exported models and artifacts: never committed


def export_builtin(folder: Path) -> Path:
    """The built-in GGUF model as a float32 safetensors folder (what a Hugging Face user would have)."""
    if (folder / "config.json").is_file():
        return folder
    from llmcodec.modelio import load, save_folder

    src = load("smollm2-135m")
    return save_folder(dict(src.items()), src.config, src.files, folder, aliases=src.tied())  # the tied head once


def make_synthetic(folder: Path) -> Path:
    if (folder / "model.safetensors").is_file():
        return folder
    import numpy as np
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for name, (r, c) in SYNTH_SHAPES.items():
        # Gaussian rows with log-normal row scales: real weight rows differ in scale.
        w = rng.standard_normal((r, c), dtype=np.float32) * 0.02
        w *= np.exp(0.3 * rng.standard_normal((r, 1))).astype(np.float32)
        tensors[name] = torch.from_numpy(w).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def largest_tensor_mb(folder: Path) -> float:
    from llmcodec.modelio import load

    src = load(folder)
    best = 0
    for n in src.names():
        t = src.get(n)
        best = max(best, t.numel() * t.element_size())
    return best / 2**20


def pick_qp(codec: str, folder: Path, bpw: float = 2.5) -> int:
    """The median QP rate control picks for ``bpw`` on a few of the model's matrices (one slice each)."""
    import numpy as np
    import torch

    from llmcodec.compress import CompressSettings, compress_matrices, is_codable
    from llmcodec.modelio import load

    src = load(folder)
    names = [n for n in src.names() if is_codable(n, src.shape(n), CompressSettings())]
    pick = names[len(names) // 2 : len(names) // 2 + 3] if len(names) > 4 else names[:2]
    mats = [(n, src.get(n)[:512].to(torch.float32).numpy(), "float32") for n in pick]
    out = compress_matrices(mats, CompressSettings(codec=codec, bpw=bpw, workers=2))
    return int(np.median([c.qp for c in out]))


def write_results(rows: list[dict], info: dict, csv_path: Path, md_path: Path, qps: dict) -> None:
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    md_path.write_text(render_md(rows, info, qps))


def _fmt(x, f=".2f") -> str:
    return "" if x is None or x == "" else format(x, f)


def render_md(rows: list[dict], info: dict, qps: dict) -> str:
    from llmcodec import sysinfo

    lines = [
        "# Speed and memory (issue 6)",
        "",
        "Generated by `benchmarks/speed/run.py` (the command is below); raw numbers in `results.csv`.",
        "",
        "**Timings were taken on a shared 2-core machine** while teammates' jobs ran on it too: `load1`",
        "is the 1-minute load average when each measurement started (2.0 = both cores busy before",
        "we began). Rates under load above ~2 are pessimistic.",
        "",
        sysinfo.markdown(info),
        "",
        f"QP per codec (chosen by rate control for 2.5 bits per weight on slices of each model): {qps}",
        "",
        "| model | task | codec | workers | Mweights | s | Mw/s | peak RSS MB | peak before save MB | fixed MB"
        " | largest tensor MB"
        " | codec CPU share | own CPU s | codec CPU s | bpw | load1 | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cols = [
        ("model", None),
        ("task", None),
        ("codec", None),
        ("workers", None),
        ("mweights", ".1f"),
        ("seconds", ".1f"),
        ("mw_per_s", ".3f"),
        ("peak_rss_mb", ".0f"),
        ("peak_before_save_mb", ".0f"),
        ("base_rss_mb", ".0f"),
        ("largest_tensor_mb", ".0f"),
        ("codec_cpu_share", ".2f"),
        ("self_cpu_s", ".1f"),
        ("codec_cpu_s", ".1f"),
        ("bpw", ".3f"),
        ("load1", ".1f"),
        ("note", None),
    ]
    for r in rows:
        cells = [str(r.get(k, "")) if f is None else _fmt(r.get(k), f) for k, f in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *derived(rows), "", *notes(rows)]
    return "\n".join(lines) + "\n"


def _rate(rows, model, task, codec=None, workers=None) -> float | None:
    for r in rows:
        if r["model"] == model and r["task"] == task and (codec is None or r.get("codec") == codec):
            if workers is None or r.get("workers") == workers:
                return r.get("mw_per_s")
    return None


def derived(rows: list[dict]) -> list[str]:
    """Speed-ups, the 8B download-plus-restore figure, and the 70B cluster projection."""
    out = ["## Derived figures", ""]
    codecs = sorted({r["codec"] for r in rows if r.get("codec") and r["task"].startswith("compress")})
    for c in codecs:
        for model in ("smollm2-135m (safetensors)",):
            for task in ("compress", "compress (speed-up check)"):
                one, two = _rate(rows, model, task, c, 1), _rate(rows, model, task, c, 2)
                if one and two:
                    loads = [
                        r["load1"]
                        for r in rows
                        if r["model"] == model and r["task"] == task and r.get("codec") == c and "load1" in r
                    ]
                    out.append(
                        f"- {task} {c}, {model}: 2 workers / 1 worker = **{two / one:.2f}x**"
                        f" (1-minute load average at the starts: {', '.join(f'{x:.1f}' for x in loads)})"
                    )
            one, two = (
                _rate(rows, model, "restore (state dict)", c, 1),
                _rate(rows, model, "restore (state dict)", c, 2),
            )
            if one and two:
                out.append(f"- restore {c}, {model}: 2 workers / 1 worker = **{two / one:.2f}x**")
    out += [
        "",
        "Wall-clock speed-ups above are capped by the other jobs on the machine (see load1). The",
        "load-independent figures below use CPU time instead: Mweights per CPU-second of llmcodec plus",
        "its FFmpeg children, i.e. the rate of one core that is ours alone.",
        "",
        "| model | task | codec | Mweights per CPU-s (one core) | own-code share of CPU |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = (r.get("self_cpu_s") or 0) + (r.get("codec_cpu_s") or 0)
        if r["task"].startswith(("compress", "restore (state")) and cpu > 0 and r.get("workers") in (2, None):
            out.append(
                f"| {r['model']} | {r['task']} | {r.get('codec', '')} | {r['mweights'] / cpu:.3f}"
                f" | {1 - r['codec_cpu_share']:.2f} |"
            )
    rc = _core_rate(rows, "smollm2-135m (safetensors)", "compress rate-controlled", "vvc")
    fixed = _core_rate(rows, "smollm2-135m (safetensors)", "compress", "vvc")
    rc_factor = fixed / rc if rc and fixed else 2.0
    out += [
        "",
        f"Rate control (`--bpw 2.5`: probes on row samples, then full encodes at one or two QPs per tensor)"
        f" costs {rc_factor:.2f}x the CPU of a single fixed-QP pass"
        + (" (measured on the built-in model with vvc)." if rc else " (assumed; not measured in this run)."),
        "",
        "### An 8B model over the network (LLaMA-3-8B: 8.03 G weights, 1.05 G of them embeddings)",
        "",
    ]
    fp16_bytes = 2 * LLAMA3_8B_PARAMS
    coded = LLAMA3_8B_PARAMS - LLAMA3_8B_EMBED
    art_all = 2.5 / 8 * LLAMA3_8B_PARAMS  # embeddings coded too (--include-embeddings)
    art_kept = 2.5 / 8 * coded + 2 * LLAMA3_8B_EMBED  # embeddings kept exactly (the default)
    out.append(
        "| link | codec | fp16 download s | artifact (all 2.5 bpw) download + restore s |"
        " artifact (embeddings exact) download + restore s |"
    )
    out.append("|---|---|---|---|---|")
    for c in codecs:
        dec = _core_rate(rows, "llama3-8b-shapes", "restore (state dict)", c)
        if not dec:
            continue
        dec *= 2  # both cores of this machine
        for name, bps in (("100 Mbit/s", 100e6), ("1 Gbit/s", 1e9)):
            t_fp16 = fp16_bytes * 8 / bps
            t_all = art_all * 8 / bps + LLAMA3_8B_PARAMS / 1e6 / dec
            t_kept = art_kept * 8 / bps + coded / 1e6 / dec
            out.append(f"| {name} | {c} | {t_fp16:,.0f} | {t_all:,.0f} | {t_kept:,.0f} |")
    out += [
        "",
        "Restore time = coded weights / (2 cores x the per-core restore rate measured on the 8B-shaped layers:",
        "decode + dequantize to a state dict); download = bytes / link rate. The artifact figures assume",
        "2.5 bits per coded weight; 'embeddings exact' adds 2.1 GB of bf16 embedding and output head.",
        "",
        "### A 70B model on a Ray cluster",
        "",
    ]
    for c in codecs:
        per_core = _core_rate(rows, "llama3-8b-shapes", "compress", c)
        if not per_core:
            continue
        core_h = 70e9 / 1e6 / per_core / 3600 * rc_factor
        out.append(
            f"- {c}: {per_core:.3f} Mweights/s per core (one fixed-QP pass over 8B-shaped layers) x {rc_factor:.2f}"
            f" for rate control -> {core_h:,.0f} core-hours for 70 G weights: ~{core_h / 64:,.1f} h on 64 cores,"
            f" ~{core_h / 256:,.1f} h on 256 cores (tensor-level parallelism: a 70B model has ~560 linear matrices)"
        )
    return out


def notes(rows: list[dict]) -> list[str]:
    """Memory against the target (peak under 2x the largest tensor plus a fixed overhead), and caveats."""
    out = ["## Memory", ""]
    for r in rows:
        if r["task"] == "compress" and "GGUF" in r["model"]:
            out.append(
                f"- {r['model']}, {r['codec']}, {r['workers']} worker(s):"
                f" peak {r['peak_rss_mb'] - r['base_rss_mb']:,.0f}"
                " MB above the fixed overhead: the whole model as transformers loads it from GGUF (see below)"
            )
        if not r["task"].startswith("compress") or not r.get("largest_tensor_mb"):
            continue
        fixed, big = r["base_rss_mb"], r["largest_tensor_mb"]
        coding = r.get("peak_before_save_mb")
        coding_s = f"{coding - fixed:,.0f} MB while coding" if coding else "coding peak not recorded"
        out.append(
            f"- {r['model']}, {r['task']}, {r['codec']}, {r['workers']} worker(s):"
            f" peak {r['peak_rss_mb'] - fixed:,.0f} MB above"
            f" the fixed {fixed:,.0f} MB (Python, torch, transformers imported), {coding_s};"
            f" 2x the largest tensor = {2 * big:,.0f} MB"
        )
    out += [
        "",
        "- The fixed overhead is the process after `import llmcodec` (torch and transformers included),",
        "  measured before the model is opened.",
        "- The 'compress (speed-up check)' rows were measured with the current code. The plain 'compress'",
        "  rows of the built-in model predate returning freed memory to the OS after each job, and the",
        "  vvc ones also predate keeping raw tensors out of memory while coding: their peaks are higher.",
        "- Built-in model, safetensors export: the embedding (the largest tensor, kept exactly, 108 MB",
        "  as float32) is not held while coding; `artifact.write` reads it once to hash it and once to",
        "  stream it into the file, so the peak is at writing: what coding left (bitstreams, allocator",
        "  slack; each job returns freed memory to the OS with `malloc_trim`) plus one copy of it.",
        "- Built-in model from its GGUF file: transformers loads and dequantizes the whole model (135 M",
        "  weights as float32, ~540 MB) before anything is coded, so that path holds the whole model.",
        "- 8B-shaped layers: each job quantizes a matrix of up to 58.7 M weights in float64 (quant.py),",
        "  with several full-size float64 temporaries (~8 bytes per weight each), plus the float64",
        "  error checks when verifying; two such jobs at once make the multi-GB peak. The peak does not grow",
        "  with the number of tensors (it is bounded by `workers` x the largest matrix), but it is well above",
        "  2x the largest tensor; quantizing in row blocks or in float32 would bring it near 10 bytes per",
        "  weight per job.",
        "- 'load uncompressed safetensors' uses `safetensors.torch.load_file`, which memory-maps: the time is",
        "  a lower bound (pages are read on first use). `from_pretrained` is the fair comparison for a model.",
        "- QPs were chosen on slices of each model: the measured bpw lands near, not exactly at, 2.5.",
        "- Gaussian weights (the 8B-shaped layers) code slower with vvc than the built-in model's real ones.",
    ]
    return out


def _core_rate(rows, model, task, codec) -> float | None:
    """Mweights per CPU-second (llmcodec + FFmpeg children), averaged over the matching rows."""
    rates = [
        r["mweights"] / (r["self_cpu_s"] + r["codec_cpu_s"])
        for r in rows
        if r["model"] == model and r["task"] == task and r.get("codec") == codec and r.get("self_cpu_s") is not None
    ]
    return sum(rates) / len(rates) if rates else None


def rows_from_log(log: Path) -> tuple[list[dict], dict]:
    from llmcodec import sysinfo

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    info = sysinfo.describe()
    info["command"] = ".venv/bin/python benchmarks/speed/run.py --rate-control (table re-rendered from its log)"
    return rows, info


def qps_from_rows(rows: list[dict]) -> dict:
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["task"] == "compress" and str(r.get("note", "")).startswith("QP "):
            out.setdefault(r["model"], {})[r["codec"]] = r["note"].split(";")[0].removeprefix("QP ")
    return out


def speedup(args) -> None:
    """The acceptance check alone: compress the built-in model (safetensors export) on 1, then 2 workers."""
    make_cache()
    folder = export_builtin(CACHE / "smollm2-135m-f32")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, info = rows_from_log(Path(args.from_log)) if args.from_log and args.append else ([], {})
    if not info:
        from llmcodec import sysinfo

        info = sysinfo.describe()
    qps = qps_from_rows(rows)
    qp = int(qps.get("smollm2-135m (safetensors)", {}).get(args.speedup) or pick_qp(args.speedup, folder))
    if args.from_log and args.append:
        info["command"] += f"; then --speedup {args.speedup} --from-log LOG --append (the speed-up check rows)"
    for workers in (1, 2):
        res = run_child(
            {
                "task": "compress",
                "model": str(folder),
                "codec": args.speedup,
                "qp": qp,
                "workers": workers,
                "out": str(CACHE / f"speedup-{workers}.llmc"),
            }
        )
        r = {
            "model": "smollm2-135m (safetensors)",
            "task": "compress (speed-up check)",
            "codec": args.speedup,
            "workers": workers,
            "note": f"QP {qp}",
            "largest_tensor_mb": largest_tensor_mb(folder),
            **res,
        }
        r["mw_per_s"] = r["mweights"] / r["seconds"]
        rows.append(r)
        print(json.dumps(r), flush=True)
    write_results(rows, info, args.out / "results.csv", args.out / "RESULTS.md", qps_from_rows(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--codecs", default="vvc,x265,svtav1")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-builtin", action="store_true")
    ap.add_argument("--rate-control", action="store_true", help="also time one full --bpw 2.5 run (vvc, 2 workers)")
    ap.add_argument("--speedup", metavar="CODEC", help="only compress the built-in model with 1 and 2 workers")
    ap.add_argument("--from-log", metavar="LOG", help="rebuild the table from the JSON lines an earlier run printed")
    ap.add_argument("--append", action="store_true", help="keep the rows of --from-log and add the new ones")
    ap.add_argument("--out", type=Path, default=HERE / "all-codecs",
                    help="folder for results.csv and RESULTS.md (default: %(default)s)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.speedup:
        return speedup(args)
    if args.from_log:
        rows, info = rows_from_log(Path(args.from_log))
        write_results(rows, info, args.out / "results.csv", args.out / "RESULTS.md", qps_from_rows(rows))
        return

    from llmcodec import sysinfo
    from llmcodec.codecs import CODECS

    make_cache()
    codecs = [c for c in args.codecs.split(",") if c in CODECS]
    missing = [c for c in args.codecs.split(",") if c not in CODECS]
    info = sysinfo.describe()
    info["codecs not available in this tree"] = ", ".join(missing) or "none"
    rows: list[dict] = []
    qps: dict[str, dict[str, int]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = args.out / "results.csv", args.out / "RESULTS.md"

    def add(model: str, task: str, res: dict, **kw) -> None:
        r = {"model": model, "task": task, **kw, **res}
        if r.get("mweights") and r.get("seconds"):
            r["mw_per_s"] = r["mweights"] / r["seconds"]
        rows.append(r)
        print(json.dumps(r), flush=True)
        write_results(rows, info, csv_path, md_path, qps)

    models = []
    if not args.skip_builtin:
        models.append(("smollm2-135m (safetensors)", export_builtin(CACHE / "smollm2-135m-f32"), True))
    if not args.skip_synthetic:
        models.append(("llama3-8b-shapes", make_synthetic(CACHE / "llama3-8b-shapes"), False))
    for label, folder, has_config in models:
        big = largest_tensor_mb(folder)
        qps[label] = {}
        for c in codecs:
            qp = qps[label][c] = pick_qp(c, folder)
            for workers in (1, 2) if has_config else (2,):
                art = CACHE / f"{folder.name}-{c}.llmc"
                res = run_child(
                    {
                        "task": "compress",
                        "model": str(folder),
                        "codec": c,
                        "qp": qp,
                        "workers": workers,
                        "out": str(art),
                    }
                )
                add(label, "compress", res, codec=c, workers=workers, largest_tensor_mb=big, note=f"QP {qp}")
            for workers in (1, 2) if has_config else (2,):
                res = run_child({"task": "restore", "artifact": str(art), "workers": workers, "mode": "state_dict"})
                add(label, "restore (state dict)", res, codec=c, workers=workers, note="decode + dequantize")
            if has_config:
                res = run_child({"task": "restore", "artifact": str(art), "workers": 2, "mode": "model"})
                add(label, "restore (transformers model)", res, codec=c, workers=2, note="load_model, no folder")
        res = run_child({"task": "safetensors", "model": str(folder), "mode": "state_dict"})
        add(label, "load uncompressed safetensors", res, note="safetensors.torch.load_file, all weights")
        if has_config:
            res = run_child({"task": "safetensors", "model": str(folder), "mode": "model"})
            add(label, "load uncompressed model", res, note="AutoModelForCausalLM.from_pretrained")
        res = run_child({"task": "rtn", "model": str(folder), "bits": 3})
        add(label, "RTN 3-bit g128", res, note="quantize + dequantize, numpy")
        for workers in (1, 2):
            res = run_child({"task": "prepare", "model": str(folder), "workers": workers})
            add(label, "prepare (own code)", res, workers=workers, note="quantize + frame layout only")
    if not args.skip_builtin:
        # The GGUF path: transformers loads (and dequantizes) the whole model before anything is coded.
        c = codecs[0]
        qp = qps["smollm2-135m (safetensors)"][c]
        res = run_child(
            {
                "task": "compress",
                "model": "smollm2-135m",
                "codec": c,
                "qp": qp,
                "workers": 2,
                "out": str(CACHE / "gguf.llmc"),
            }
        )
        add("smollm2-135m (GGUF)", "compress", res, codec=c, workers=2, note=f"QP {qp}; whole model in memory")
        if args.rate_control:
            folder = CACHE / "smollm2-135m-f32"
            res = run_child(
                {
                    "task": "compress",
                    "model": str(folder),
                    "codec": c,
                    "bpw": 2.5,
                    "workers": 2,
                    "out": str(CACHE / "rc.llmc"),
                }
            )
            add("smollm2-135m (safetensors)", "compress rate-controlled", res, codec=c, workers=2, note="--bpw 2.5")
    write_results(rows, info, csv_path, md_path, qps)
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()

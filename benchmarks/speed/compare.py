"""Before/after speed of the default path (issue 31), side by side in one run, with reference rates.

    nice -n 5 .venv/bin/python benchmarks/speed/compare.py                # writes benchmarks/speed/RESULTS.md
    nice -n 5 .venv/bin/python benchmarks/speed/compare.py --bpw 2.5,3.5  # and 3.5 (no perplexity there)
    .venv/bin/python benchmarks/speed/compare.py --skip-builtin --out /tmp/x  # the tiny model only

"Before" is llmcodec at ``--before`` (the commit before issue 31's speed work), "after" at ``--after``
(default HEAD); each is unpacked with ``git archive`` into a temporary folder and imported through
PYTHONPATH (each child checks where llmcodec came from). Each measurement runs in a fresh process
(run.py's ``--child``), so its peak resident memory and CPU time (own + FFmpeg children) are its
own. Before and after run at the same time (``--one-at-a-time``: one after the other, for wall times on a
quiet machine), each with ``--workers`` threads, so both see the same
machine load (on an idle 2-core machine that halves each one's wall-clock rate; the CPU times do
not depend on it); the 1-minute load average at each start is in the table, and ``uptime`` at the
start and end of the run.

Rows: the built-in model (SmolLM2-135M-Instruct from its Q4_1 GGUF, exported once to float32
safetensors; its weights were already 4-bit) compressed at each ``--bpw`` as before's default
meant it (bits per coded weight, embeddings kept; after gets ``budget="coded",
include_embeddings=False``), then restored to a state dict; perplexity of both artifacts at the
first budget (PTB test, ``--windows`` windows); a ~1.4 M-weight random Llama (hidden 256, 2 layers)
compressed and restored, in-process and as whole ``llmcodec`` commands; HQQ (2 and 3 bits, group 64)
and llama.cpp's ``llama-quantize`` (Q2_K, when its binary is built under benchmarks/peers) as
reference rates; and after's own default (whole-file budget, embedding and head coded), alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (the child-process machinery of the main speed benchmark)

FIELDS = ["model", "task", "code", "bpw_target", "workers", "mweights", "seconds", "mw_per_s", "cpu_s",
          "mw_per_cpu_s", "peak_rss_mb", "bpw", "load1", "note"]
LLAMA_QUANTIZE = ROOT / "benchmarks" / "peers" / "llamacpp" / "build" / "cmake" / "bin" / "llama-quantize"
TINY_CONFIG = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512}


def tree(ref: str) -> Path:
    """llmcodec at ``ref``, unpacked with ``git archive`` into a temporary folder (once per commit)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"llmcodec-speed-{sha}"
    if not (path / "src" / "llmcodec").is_dir():
        path.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive.stdout, check=True)
    return path


def child(task: dict, src: Path) -> dict:
    """run.py's child measurement with llmcodec imported from ``src``."""
    load1 = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, str(HERE / "run.py"), "--child", json.dumps(task)], capture_output=True,
                         text=True, check=False, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"child {task} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if Path(out.pop("llmcodec_path", "")).resolve() != (src / "llmcodec").resolve():
        raise RuntimeError(f"child {task} imported llmcodec from elsewhere than {src}")
    out["load1"] = load1
    return out


def tiny_model(folder: Path) -> Path:
    """A random Llama of about 1 M weights (hidden 256, 2 layers), saved as a model folder."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_CONFIG))
    model.save_pretrained(folder)
    return folder


def hqq_rate(folder: Path, bits: int) -> dict:
    """HQQ (baselines.HQQ: group 64, optimized scale and zero) on every matrix llmcodec codes."""
    import resource

    import torch

    from llmcodec.baselines import HQQ
    from llmcodec.compress import CompressSettings, is_codable
    from llmcodec.modelio import load

    src = load(str(folder))
    q, n = HQQ(bits=bits), 0
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for name in src.names():
        t = src.get(name)
        if is_codable(name, tuple(t.shape), CompressSettings()):
            q(t.to(torch.float32).numpy())
            n += t.numel()
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    return {"mweights": n / 1e6, "seconds": time.perf_counter() - t0, "cpu_s": cpu}


def llama_quantize(exe: Path, f32_gguf: Path, out: Path, kind: str = "Q2_K") -> dict:
    import resource

    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(exe), str(f32_gguf), str(out), kind, "2"], check=True, capture_output=True)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": time.perf_counter() - t0, "cpu_s": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime}


def cli(argv: list[str], src: Path) -> dict:
    """Wall and CPU time (the command's process and its FFmpeg children) of one ``llmcodec`` command,
    process start and imports included. Run one at a time: the CPU time is what this process's
    finished children used."""
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    load1, t0, c0 = os.getloadavg()[0], time.perf_counter(), cpu()
    subprocess.run([sys.executable, "-c", "import sys; from llmcodec.cli import main; sys.exit(main())", *argv],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(src)})
    return {"seconds": time.perf_counter() - t0, "cpu_s": cpu() - c0, "load1": load1}


def perplexity(artifact: Path, src: Path, windows: int) -> float:
    code = ("import sys, json; from llmcodec import api; from llmcodec.evaluate import EvalSettings, perplexity;"
            "m, t = api.load_model(sys.argv[1]);"
            "print(json.dumps(perplexity(m, t, EvalSettings(max_windows=int(sys.argv[2]))).perplexity))")
    res = subprocess.run([sys.executable, "-c", code, str(artifact), str(windows)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(src)})
    return float(res.stdout.strip().splitlines()[-1])


def write(rows: list[dict], info: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    lines = ["# Speed before and after issue 31 (compress and restore, side by side in one run)", "",
             f"Generated by `{info['command']}`; raw numbers in `results.csv`.", ""]
    lines += [f"- {k}: `{v}`" for k, v in info.items() if k != "command"]
    together = info.get("before and after") != "one after the other"
    lines += ["", ("Before and after ran at the same time" if together else "Before and after ran one after the other")
              + " on this 2-core machine, which other jobs may share (load1: the",
              "1-minute load average at each start; above 2 every wall time is pessimistic"
              + (", and 'before' and 'after' saw the same load)." if together else ")."),
              "Mw/s = million coded weights per second of wall time; CPU s = llmcodec",
              "plus its FFmpeg children, which depends less on the load; Mw per CPU-s = the rate of one core",
              "that is ours alone. Peak RSS is the measuring process's own. The built-in model is SmolLM2-135M-",
              "Instruct from its Q4_1 GGUF (its weights were already 4-bit). 'after' at the built-in model's",
              "budget codes what 'before' coded: bits per coded weight, embedding and head kept",
              "(`budget=\"coded\", include_embeddings=False`); 'after (its default)' is today's `--bpw 2.5`",
              "(whole file, embedding and head coded), measured alone. 'command' rows are whole `llmcodec`",
              "commands (process start, imports, the config check included), one at a time.", ""]
    head = ["model", "task", "code", "target bpw", "workers", "Mweights", "s", "Mw/s", "CPU s", "Mw per CPU-s",
            "peak RSS MB", "bpw", "load1", "note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r.get(k, "") for k in FIELDS]
        lines.append("| " + " | ".join(f"{v:,.3f}" if isinstance(v, float) else str(v) for v in vals) + " |")
    speed = _speedups(rows)
    if speed:
        lines += ["", "## After against before", ""] + speed
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")


def _speedups(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r.get("code") != "after":
            continue
        b = next((x for x in rows if x.get("code") == "before" and x["model"] == r["model"]
                  and x["task"] == r["task"] and x.get("bpw_target") == r.get("bpw_target")), None)
        if b and b.get("seconds") and r.get("seconds") and b.get("cpu_s") and r.get("cpu_s"):
            out.append(f"- {r['model']}, {r['task']}" + (f" at {r['bpw_target']}" if r.get("bpw_target") else "")
                       + f": **{b['seconds'] / r['seconds']:.2f}x** wall time ({b['seconds']:.1f} s -> "
                       f"{r['seconds']:.1f} s), **{b['cpu_s'] / r['cpu_s']:.2f}x** CPU time ({b['cpu_s']:.1f} -> "
                       f"{r['cpu_s']:.1f} CPU-s)")
    return out


# "after" with the budget "before" had: bits per coded weight, embeddings and output head kept
LIKE_BEFORE = {"budget": "coded", "include_embeddings": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="3db0cab", help="git commit to compare against (default: %(default)s)")
    ap.add_argument("--after", default="HEAD", help="git commit measured as after (default: %(default)s)")
    ap.add_argument("--bpw", default="2.5", help="comma-separated budgets; the first gets perplexities")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ppl", action="store_true", help="skip the perplexity check at the first --bpw")
    ap.add_argument("--no-default", action="store_true",
                    help="skip after's own default (whole-file budget, embeddings coded), which before lacks")
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--llama-quantize", type=Path, default=LLAMA_QUANTIZE)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--skip-builtin", action="store_true", help="only the tiny model (a quick check of this script)")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="run before's and after's task one after the other (wall times on a quiet machine)")
    args = ap.parse_args()

    from llmcodec import sysinfo

    run.make_cache()
    cache = run.CACHE
    info = sysinfo.describe()
    info["command"] = "nice -n 5 .venv/bin/python benchmarks/speed/compare.py " + " ".join(sys.argv[1:])
    info["before and after"] = "one after the other" if args.one_at_a_time else "at the same time"
    info["uptime at start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    trees = {"before": tree(args.before) / "src", "after": tree(args.after) / "src"}
    for code, ref in (("before", args.before), ("after", args.after)):
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", ref], capture_output=True,
                             text=True, check=True).stdout.strip()
        info[code] = f"{ref} ({sha})"
    folder = run.export_builtin(cache / "smollm2-135m-f32")
    tiny = tiny_model(cache / "tiny-llama-1m")
    rows: list[dict] = []

    def add(row: dict) -> None:
        if row.get("mweights") and row.get("seconds"):
            row["mw_per_s"] = row["mweights"] / row["seconds"]
        if "cpu_s" not in row and row.get("self_cpu_s") is not None:
            row["cpu_s"] = row["self_cpu_s"] + row["codec_cpu_s"]
        if row.get("mweights") and row.get("cpu_s"):
            row["mw_per_cpu_s"] = row["mweights"] / row["cpu_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, info, args.out)

    def both(tasks: dict[str, dict], row: dict) -> None:
        """One task per code (``tasks[code]``), before's and after's at the same time; one row each."""
        if args.one_at_a_time:
            for code in ("before", "after"):
                add({**row, "code": code, **child(tasks[code], trees[code])})
            return
        with ThreadPoolExecutor(2) as pool:
            futs = {code: pool.submit(child, tasks[code], trees[code]) for code in ("before", "after")}
            for code, f in futs.items():
                add({**row, "code": code, **f.result()})

    def compress(bpw: float, code: str, art: Path, settings: dict | None = None, model: Path = folder) -> dict:
        return {"task": "compress", "model": str(model), "codec": "vvc", "bpw": bpw, "workers": args.workers,
                "out": str(art), **({"settings": settings} if settings else {})}

    def restore(art: Path) -> dict:
        return {"task": "restore", "artifact": str(art), "workers": args.workers, "mode": "state_dict"}

    budgets = [float(b) for b in args.bpw.split(",")]
    builtin = [] if args.skip_builtin else budgets
    for k, bpw in enumerate(builtin):
        arts = {code: cache / f"cmp-{code}-{bpw}.llmc" for code in trees}
        note = "bits per coded weight, embeddings kept (before's default)"
        both({"before": compress(bpw, "before", arts["before"]),
              "after": compress(bpw, "after", arts["after"], LIKE_BEFORE)},
             {"model": "smollm2-135m", "task": "compress", "bpw_target": bpw, "workers": args.workers, "note": note})
        both({code: restore(arts[code]) for code in trees},
             {"model": "smollm2-135m", "task": "restore (state dict)", "bpw_target": bpw, "workers": args.workers,
              "note": "decode + dequantize"})
        if k == 0:
            ppl_arts = (bpw, arts)
    tiny_art = {code: cache / f"cmp-tiny-{code}.llmc" for code in trees}
    both({code: compress(budgets[0], code, tiny_art[code], model=tiny) for code in trees},
         {"model": "tiny-llama-1m", "task": "compress", "bpw_target": budgets[0], "workers": args.workers,
          "note": "each code's default; random weights; process start not counted"})
    both({code: restore(tiny_art[code]) for code in trees},
         {"model": "tiny-llama-1m", "task": "restore (state dict)", "bpw_target": budgets[0], "workers": args.workers,
          "note": "process start not counted"})
    for code in ("before", "after"):  # what a user waits for, process start and imports included
        art, restored = cache / f"cmp-tiny-cli-{code}.llmc", cache / f"cmp-tiny-cli-{code}"
        shutil.rmtree(restored, ignore_errors=True)
        res = cli(["compress", str(tiny), str(art), "--bpw", str(budgets[0]), "--quiet"], trees[code])
        add({"model": "tiny-llama-1m", "task": "llmcodec compress (command)", "code": code,
             "bpw_target": budgets[0], "workers": 2, "note": "whole command, each code's default", **res})
        res = cli(["decompress", str(art), str(restored), "--quiet"], trees[code])
        add({"model": "tiny-llama-1m", "task": "llmcodec decompress (command)", "code": code,
             "bpw_target": budgets[0], "workers": 2, "note": "whole command, writes a model folder", **res})
        shutil.rmtree(restored, ignore_errors=True)
    for bits in () if args.skip_builtin else (2, 3):
        add({"model": "smollm2-135m", "task": f"HQQ {bits}-bit g64 (reference)", "code": "hqq", "workers": 1,
             "load1": os.getloadavg()[0], "note": "quantize + dequantize, torch on CPU", **hqq_rate(folder, bits)})
    exe = args.llama_quantize
    f32 = exe.parents[2] / "model-f32.gguf" if exe.is_file() else None
    if exe.is_file() and f32 is not None and f32.is_file() and not args.skip_builtin:
        out = cache / "llama-q2k.gguf"
        res = llama_quantize(exe, f32, out)
        res["mweights"] = 134.5  # every tensor of the model: llama-quantize codes the embedding too
        add({"model": "smollm2-135m", "task": "llama-quantize Q2_K (reference)", "code": "llama.cpp", "workers": 2,
             "load1": os.getloadavg()[0], "note": "whole GGUF, 2 threads", **res})
        out.unlink(missing_ok=True)
    else:
        info["llama-quantize"] = f"not measured: no binary at {exe} (benchmarks/peers/llamacpp/setup.sh builds it)"
    if builtin and not args.no_ppl:  # last of the side-by-side rows: the speed rows are written first
        bpw, arts = ppl_arts
        with ThreadPoolExecutor(2) as pool:
            futs = {code: pool.submit(perplexity, arts[code], trees[code], args.windows) for code in trees}
            for code, f in futs.items():
                info[f"perplexity {code} at {bpw} ({args.windows} PTB test windows)"] = f"{f.result():.2f}"
        write(rows, info, args.out)
    if not args.no_default and not args.skip_builtin:  # after's default, alone: before has no such budget
        art = cache / "cmp-after-default.llmc"
        add({"model": "smollm2-135m", "task": "compress", "code": "after (its default)", "bpw_target": budgets[0],
             "workers": args.workers, "note": "whole-file budget, embedding and head coded (alone, not side by side)",
             **child(compress(budgets[0], "after", art), trees["after"])})
        add({"model": "smollm2-135m", "task": "restore (state dict)", "code": "after (its default)",
             "bpw_target": budgets[0], "workers": args.workers, "note": "alone, not side by side",
             **child(restore(art), trees["after"])})
    info["uptime at end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    write(rows, info, args.out)
    for f in cache.glob("cmp-*.llmc"):
        f.unlink()
    print(f"wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()

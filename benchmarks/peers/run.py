"""Peers at whole-file size on the built-in model: llama.cpp (every type, with and without an importance
matrix), GPTQ, HQQ, RTN and llmcodec; perplexity and accuracy on PTB test, rows in results.csv.

    .venv/bin/python benchmarks/peers/run.py --peers llamacpp,gptq,rtn,hqq,llmcodec   # resumable
    .venv/bin/python benchmarks/peers/run.py --peers dataaware --dataaware-budgets 2.5,5.0
    .venv/bin/python benchmarks/peers/report.py                                        # RESULTS.md + plot

llama.cpp needs ``bash benchmarks/peers/llamacpp/setup.sh`` first. Calibration (llama.cpp's importance
matrix, GPTQ's Hessians): the first ``--calib-windows`` windows of ``--window`` tokens of PTB *train*.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "llamacpp"))

from common import Harness, ResultsCSV  # noqa: E402
from wholefile import EMBEDDING_LABEL, whole_file  # noqa: E402

from llmcodec.evaluate import EvalResult, EvalSettings, ptb_text, token_windows  # noqa: E402

CSV = HERE / "results.csv"
FIELDS = ["peer", "setting", "calibration", "bpp", "decoder_bpw", "storage", "perplexity", "next_token_acc",
          "next_word_acc", "last_word_acc", "words", "sentences", "tokens", "windows", "seconds", "note"]
MODEL = "smollm2-135m"
DATAAWARE = "llmcodec data-aware"


def measured(res: EvalResult) -> dict:
    def f(x):
        return "" if x is None else f"{x:.4f}"

    return {"perplexity": f"{res.perplexity:.3f}", "next_token_acc": f(res.next_token_accuracy),
            "next_word_acc": f(res.next_word_accuracy), "last_word_acc": f(res.last_word_accuracy),
            "words": res.words, "sentences": res.sentences, "tokens": res.tokens, "windows": res.windows}


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.h = Harness(MODEL, args.windows)
        self.tied = self.h.src.tied()
        self.h.coded_weights_all = sum(t.numel() for n, t in self.h.state.items() if n not in self.tied)
        self.csv = ResultsCSV(args.csv, FIELDS, ("peer", "setting"))
        self.calib_label = f"PTB train, first {args.calib_windows}x{args.window} tokens"

    def calib_windows(self) -> torch.Tensor:
        # a prefix of the split, comfortably longer than the windows need (PTB: about 4.5 characters a token)
        text = ptb_text("train")[: 16 * self.args.window * self.args.calib_windows]
        return token_windows(self.h.tok, text,
                             EvalSettings(window=self.args.window, max_windows=self.args.calib_windows))

    def add(self, row: dict, state: dict[str, torch.Tensor], t0: float) -> None:
        res = self.h.evaluate(state)
        self.csv.add({**row, **measured(res), "seconds": f"{time.perf_counter() - t0:.0f}"})

    def python_peer(self, peer: str, setting: str, calibration: str, state, decoder_bits, t0) -> None:
        out, bits, params = whole_file(state, self.tied, decoder_bits)
        dp = sum(self.h.state[n].numel() for n in decoder_bits)
        self.add({"peer": peer, "setting": setting, "calibration": calibration, "bpp": f"{bits / params:.4f}",
                  "decoder_bpw": f"{sum(decoder_bits.values()) / dp:.4f}", "storage": EMBEDDING_LABEL}, out, t0)

    # --- peers ---------------------------------------------------------------------------------

    def reference(self) -> None:
        from gguf_files import file_bits

        from llmcodec.modelio import builtin_path

        if self.csv.has("reference", "uncompressed"):
            return
        t0 = time.perf_counter()
        fb = file_bits(builtin_path(MODEL))
        self.add({"peer": "reference", "setting": "uncompressed", "calibration": "none",
                  "bpp": f"{fb.bpp:.4f}", "decoder_bpw": f"{fb.decoder_bpw:.4f}",
                  "storage": f"the source GGUF: token_embd {fb.embedding_type}; decoder matrices: "
                             + ", ".join(f"{k} {v}" for k, v in fb.types.items())}, self.h.state, t0)

    def rtn_hqq(self, kind: str, bits_list: list[int]) -> None:
        from llmcodec.baselines import HQQ, RTN

        for b in bits_list:
            q = RTN(bits=b, group=128) if kind == "rtn" else HQQ(bits=b, group=64)
            if self.csv.has(kind, q.label):
                continue
            t0 = time.perf_counter()
            state, dbits = dict(self.h.state), {}
            for n in self.h.names:
                w_hat, nb = q(self.h.state[n].float().numpy())
                state[n], dbits[n] = torch.from_numpy(w_hat), nb
            self.python_peer(kind, q.label, "none", state, dbits, t0)

    def gptq(self, bits_list: list[int]) -> None:
        from gptq import GPTQSettings, quantize_model

        from llmcodec.modelio import build_model

        for b in bits_list:
            s = GPTQSettings(bits=b)
            setting = f"gptq b={b} g={s.group} damp={s.damp}"
            if self.csv.has("gptq", setting):
                continue
            t0 = time.perf_counter()
            model = build_model({k: v.clone() for k, v in self.h.state.items()}, self.h.src.config)
            torch.manual_seed(0)
            dbits = quantize_model(model, self.calib_windows(), s, progress=lambda i, n: print(f"gptq layer {i}/{n}",
                                                                                             end="\r", flush=True))
            own = model.state_dict()
            state = {k: own[k].detach().clone() if k in dbits else v for k, v in self.h.state.items()}
            del model
            self.python_peer("gptq", setting, self.calib_label, state, dbits, t0)

    def llmcodec(self, budgets: list[float]) -> None:
        from llmcodec.compress import CompressSettings

        for b in budgets:
            s = CompressSettings(bpw=b, include_embeddings=True)
            setting = f"default bpw={b} include_embeddings"
            if self.csv.has("llmcodec", setting):
                continue
            self._llmcodec_row("llmcodec", setting, "none", s, b, "")

    def _llmcodec_row(self, peer: str, setting: str, calibration: str, s, b: float, flags: str) -> None:
        from llmcodec.api import compress_source, restore_state_dict

        t0 = time.perf_counter()
        art = compress_source(self.h.src, s)
        st = art.stats()
        state = restore_state_dict(art)
        params = st["coded_weights"] + st["raw_weights"]
        bits = st["coded_bits"] + 8 * st["raw_bytes"]
        dec = [c for n, c in art.coded.items() if "layers." in n]
        qps = [c.qp for c in art.coded.values() if c.qp is not None]
        self.add({"peer": peer, "setting": setting, "calibration": calibration, "bpp": f"{bits / params:.4f}",
                  "decoder_bpw": f"{sum(c.bits for c in dec) / sum(c.numel for c in dec):.4f}",
                  "storage": f"all matrices coded (--bpw {b}{' ' + flags if flags else ''}, the whole file), "
                             f"{st['raw_tensors']} small tensors kept at their dtype",
                  "note": f"QPs {min(qps)}-{max(qps)}" if qps else ""}, state, t0)

    def dataaware(self, budgets: list[float]) -> None:
        """llmcodec's optional data-aware mode: ``--calibration ptb-train --calibration-tokens N
        --error-feedback`` (QP offsets from loss gradients, GPTQ's inverse-Hessian update with the codec
        in the loop) on the first ``--dataaware-tokens`` tokens of PTB train."""
        from llmcodec.compress import CompressSettings

        tokens = self.args.dataaware_tokens
        calib = f"PTB train, first {tokens} tokens"
        for b in budgets:
            s = CompressSettings(bpw=b, include_embeddings=True, calibration="ptb-train", calibration_tokens=tokens,
                                 error_feedback=True)
            setting = f"data-aware bpw={b} calibration=ptb-train:{tokens} error-feedback include_embeddings"
            if self.csv.has(DATAAWARE, setting):
                continue
            self._llmcodec_row(DATAAWARE, setting, calib, s, b, "--calibration ptb-train "
                               f"--calibration-tokens {tokens} --error-feedback")

    def llamacpp(self, imatrix_modes: list[bool], types: list[str]) -> None:
        from gguf_files import file_bits, tensor_digest, vendored_bits, vendored_f32
        from quantize import f32_file, imatrix_file, quantized_file

        from llmcodec.modelio import ModelError, builtin_path, load

        f32 = f32_file(builtin_path(MODEL))
        calib = self.h.tok.decode(self.calib_windows().flatten())
        imat = imatrix_file(f32, calib, self.args.calib_windows, self.args.window) if any(imatrix_modes) else None
        seen: dict[str, dict] = {r["note"].split("tensors ")[-1][:16]: r for r in self.csv.rows.values()
                                 if r["peer"] == "llama.cpp" and "tensors " in r["note"]}
        for qtype in types:
            for use in imatrix_modes:
                setting = f"{qtype}{' imatrix' if use else ''}"
                if self.csv.has("llama.cpp", setting):
                    continue
                t0 = time.perf_counter()
                path, tail = quantized_file(f32, qtype, imat if use else None)
                row = {"peer": "llama.cpp", "setting": setting, "calibration": self.calib_label if use else "none"}
                if path is None:
                    self.csv.add({**row, "note": f"refused: {tail}"})
                    continue
                load_path, reader = path, "gguf"
                try:
                    fb, digest = file_bits(path), tensor_digest(path)
                except (ValueError, KeyError):  # a type newer than the gguf package: llama.cpp's own gguf-py
                    try:
                        fb, digest = vendored_bits(path)
                        load_path = vendored_f32(path, path.with_name(path.stem + "-dequantized-f32.gguf"))
                        reader = "llama.cpp's gguf-py, dequantized to an F32 GGUF to load"
                    except ValueError as e:
                        self.csv.add({**row, "note": f"neither gguf nor llama.cpp's gguf-py reads it: {e}"[:300]})
                        continue
                types_note = ", ".join(f"{k} {v}" for k, v in sorted(fb.types.items(), key=lambda x: -x[1]))
                row |= {"bpp": f"{fb.bpp:.4f}", "decoder_bpw": f"{fb.decoder_bpw:.4f}",
                        "storage": f"token_embd {fb.embedding_type}; decoder matrices: {types_note}",
                        "note": f"tensors {digest}" + ("" if reader == "gguf" else f"; read with {reader}")}
                if digest in seen and seen[digest].get("perplexity"):  # identical tensors: same measurement
                    same = seen[digest]
                    self.csv.add({**row, **{k: same[k] for k in FIELDS[6:14]}, "seconds": "0",
                                  "note": f"tensors {digest} (identical to {same['setting']})"})
                    continue
                try:
                    src = load(load_path)
                except ModelError as e:  # a type transformers' GGUF loader cannot dequantize
                    self.csv.add({**row, "note": f"tensors {digest}; not loadable by transformers: {e}"[:300]})
                    continue
                state = {k: v for k, v in src.items()}
                self.add(row, state, t0)
                seen[digest] = self.csv.rows[("llama.cpp", setting)]
                if not self.args.keep_files and qtype != "F16":
                    path.unlink()
                    if load_path != path:
                        load_path.unlink()


def record_run(path: Path) -> None:
    """Machine, versions, load and command of each run, for the report's footer."""
    import importlib.metadata as md
    import json

    from llmcodec import sysinfo

    info = sysinfo.describe()
    info["load (1, 5, 15 min)"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    info["gguf"] = md.version("gguf")
    sdists = sorted((HERE / "llamacpp/build/sdist").glob("*.tar.gz"))
    info["llama.cpp"] = f"vendored in {sdists[-1].name}" if sdists else "not built"
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    info["commit"] = git.stdout.strip() or "unknown"
    info["threads"] = os.environ.get("OMP_NUM_THREADS", "unset")
    runs = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*runs, info], indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", default="reference,llamacpp,gptq,llmcodec,rtn,hqq,dataaware")
    ap.add_argument("--windows", type=int, default=40, help="PTB test windows scored (the issue's 40)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--calib-windows", type=int, default=32, help="PTB train windows for calibration")
    ap.add_argument("--types", default=",".join(__import__("quantize").TYPES), help="llama.cpp types, in order")
    ap.add_argument("--imatrix", default="with,without", help="llama.cpp: with and/or without the imatrix")
    ap.add_argument("--bits", default="2,3,4", help="GPTQ, RTN and HQQ bit widths")
    ap.add_argument("--budgets", default="2.5,3.0,3.5,4.5", help="llmcodec --bpw targets")
    ap.add_argument("--dataaware-budgets", default="2.5,5.0", help="llmcodec data-aware --bpw targets")
    ap.add_argument("--dataaware-tokens", type=int, default=4096, help="calibration tokens of the data-aware mode")
    ap.add_argument("--csv", type=Path, default=CSV)
    ap.add_argument("--keep-files", action="store_true", help="keep the quantized GGUF files")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    record_run(args.csv.parent / "runs.json")
    b = Bench(args)
    bits = [int(x) for x in args.bits.split(",")]
    for peer in args.peers.split(","):
        if peer == "reference":
            b.reference()
        elif peer == "llamacpp":
            modes = {"with": True, "without": False}
            b.llamacpp([modes[m] for m in args.imatrix.split(",")], args.types.split(","))
        elif peer == "gptq":
            b.gptq(bits)
        elif peer in ("rtn", "hqq"):
            b.rtn_hqq(peer, bits)
        elif peer == "llmcodec":
            b.llmcodec([float(x) for x in args.budgets.split(",")])
        elif peer == "dataaware":
            b.dataaware([float(x) for x in args.dataaware_budgets.split(",")])
        else:
            raise SystemExit(f"unknown peer {peer!r}")


if __name__ == "__main__":
    main()

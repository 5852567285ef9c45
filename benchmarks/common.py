"""What the benchmark scripts share: a resumable results CSV, the built-in model harness, and the
global relative weight error."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import torch

from llmcodec.api import load_tokenizer
from llmcodec.compress import CompressSettings, is_codable
from llmcodec.evaluate import EvalResult, EvalSettings, perplexity
from llmcodec.modelio import build_model, load

# The library defaults before reconstruction tables, column balance and 8-bit side information
# existed (and without companding): the settings the older benchmark rows were measured with, so
# each can be measured again as it was.
# (with the budget over the coded decoder matrices alone, embeddings and head kept exactly)
OLD_DEFAULTS = {"compand": 1.0, "weighting": "none", "centroids": False, "tolerance": 0.03, "side": "fp16",
                "edge_octaves": 0.0, "kv_sharing": 0.0, "budget": "coded", "include_embeddings": False,
                "exact_kept": True}


W40 = Path(__file__).resolve().parent / "rd/w40/results.csv"


def w40_default_rows(windows: int) -> dict[float, dict]:
    """The default's points (``CompressSettings(bpw=B)``) that benchmarks/rd/run.py measured on the
    built-in model at ``windows`` PTB windows, by target: the same deterministic encodes and tokens
    that benchmarks/e2e.py and benchmarks/ablation.py would measure again, so they are measured once.
    Each row has those scripts' measurement columns (bpw, rel_error to 4 places, perplexity, tokens,
    seconds)."""
    if not W40.is_file():
        return {}
    with W40.open(newline="") as f:
        return {float(r["target_bpw"]): {"bpw": r["bpw"], "rel_error": f"{float(r['rel_error']):.4f}",
                                         "perplexity": r["perplexity"], "tokens": r["tokens"], "seconds": r["seconds"]}
                for r in csv.DictReader(f)
                if r["model"] == "smollm2-135m" and r["method"] == "llmcodec-vvc"
                and r["setting"] == f"default bpw={r['target_bpw']}" and r["windows"] == str(windows)}


class ResultsCSV:
    """Rows keyed by some columns; rewritten atomically after every new row so a long run resumes."""

    def __init__(self, path: Path, fields: list[str], key: tuple[str, ...], fresh: bool = False) -> None:
        self.path, self.fields, self.key = path, fields, key
        self.rows: dict[tuple, dict] = {}
        if path.is_file() and not fresh:
            with path.open() as f:
                self.rows = {tuple(r[k] for k in key): r for r in csv.DictReader(f)}

    def has(self, *key: str) -> bool:
        return tuple(key) in self.rows

    def add(self, row: dict) -> None:
        if self.path.is_file():  # keep rows another run of the script added meanwhile
            with self.path.open() as f:
                for r in csv.DictReader(f):
                    self.rows.setdefault(tuple(r[k] for k in self.key), r)
        self.rows[tuple(str(row[k]) for k in self.key)] = {k: str(row.get(k, "")) for k in self.fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(self.rows.values())
        tmp.replace(self.path)
        print(row, flush=True)


def measuring_command(info: dict[str, str]) -> str:
    """The command that measures a report, from the command that ran (which may only redraw it)."""
    return info["command"].replace(" --report-only", "")


def write_markdown(path: Path, lines: list[str], info: dict[str, str], measured: bool = True) -> None:
    """Write a report with the machine, versions and command it was measured with, atomically.

    A report redrawn from stored results (``measured=False``) keeps the block of the run that
    measured them, so redrawing on another machine does not claim that machine measured them."""
    from llmcodec import sysinfo

    marker = "\nMeasured on:\n\n"
    old = path.read_text() if path.is_file() else ""
    if not measured and marker in old:
        footer = old[old.index(marker) + len(marker):].rstrip("\n")
    else:
        footer = sysinfo.markdown(info)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join([*lines, "", "Measured on:", "", footer, ""]))
    tmp.replace(path)


def global_rel_error(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], names: list[str]) -> float:
    """||W - Ŵ||_F / ||W||_F over all listed matrices together."""
    num = sum(float((out[n].double() - src[n].double()).pow(2).sum()) for n in names)
    den = sum(float(src[n].double().pow(2).sum()) for n in names)
    return math.sqrt(num / den)


class Harness:
    """The model, its tokenizer and its coded-matrix names, loaded once; evaluates restored states."""

    def __init__(self, model: str, windows: int | None) -> None:
        self.src = load(model)
        self.state = dict(self.src.items())
        self.tok = load_tokenizer(self.src.config, self.src.files)
        self.eval_settings = EvalSettings(max_windows=windows or None)
        tied = self.src.tied()
        self.names = [n for n in self.src.names()
                      if n not in tied and is_codable(n, tuple(self.state[n].shape),
                                                      CompressSettings(include_embeddings=False))]
        self.coded_weights = sum(self.state[n].numel() for n in self.names)

    def evaluate(self, state: dict[str, torch.Tensor]) -> EvalResult:
        return perplexity(build_model(state, self.src.config), self.tok, self.eval_settings)

    def compress(self, settings: CompressSettings) -> tuple[dict[str, torch.Tensor], float]:
        """The model coded with ``settings`` and restored: its state and bits per weight."""
        from llmcodec.api import compress_source, restore_state_dict

        art = compress_source(self.src, settings)
        return restore_state_dict(art), art.stats()["bits_per_weight"]

    def rel_error(self, state: dict[str, torch.Tensor]) -> float:
        return global_rel_error(self.state, state, self.names)

    def timed(self, make: Callable[[], tuple[dict[str, torch.Tensor], float]]) -> tuple[dict, float, float]:
        import time

        t0 = time.perf_counter()
        out, bpw = make()
        return out, bpw, time.perf_counter() - t0

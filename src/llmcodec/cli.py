"""The ``llmcodec`` command line: compress, decompress, eval, info."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

from safetensors import SafetensorError

from . import argtypes as at
from ._version import __version__
from .artifact import ArtifactError
from .codecs import CODECS, CodecError
from .compress import (
    ALLOCATIONS,
    BUDGETS,
    EMBEDDING_OFFSET,
    EMBEDDING_OFFSET_FLAT,
    OBJECTIVE_PROFILES,
    OBJECTIVES,
    SIDES,
    WEIGHTINGS,
    CompressSettings,
)
from .evaluate import QUICK_WINDOWS, EvalSettings
from .executors import EXECUTORS, make_executor
from .modelbuild import ModelError
from .modelio import DEFAULT_MODEL
from .outputs import describe_os_error
from .priors import EDGE_MAX_BPW, EDGE_OCTAVES, KV_MAX_BPW, KV_SHARING
from .rate import BudgetError
from .untrusted import shown

# The compress options that shape where the error goes (CompressSettings fields of the same names).
SHAPING = ("weighting", "alpha", "shared_scale", "allocation", "error_cap", "edge_layers", "edge_octaves",
           "kv_sharing", "token_rows", "rotate", "centroids", "side", "compand")

PRETRAINED_NOTE = (
    "note: the built-in smollm2-135m was already quantized to 4 bits (GGUF Q4_1, blocks of 32), "
    "so results near 4 bits per weight look better than on a full-precision model"
)


WEIGHT_STAGES = ("probe", "encode", "verify", "decode")


class Bars:
    """One tqdm bar per stage, with throughput and time left; silent with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            # Codec stages count weights (tqdm shows e.g. "1.2Mw/s"); others count jobs.
            unit, scale = ("w", True) if stage in WEIGHT_STAGES else ("job", False)
            bar = self.bars[stage] = tqdm(
                total=total, desc=stage, unit=unit, unit_scale=scale, leave=False, file=sys.stderr
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self.bars[stage]


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def _eval_settings(args) -> EvalSettings:
    return EvalSettings(window=args.window, max_windows=QUICK_WINDOWS if args.quick else args.windows)


def _is_artifact(path: str) -> bool:
    return path.endswith(".llmc") or (Path(path).is_file() and not path.endswith(".gguf"))


def _print_eval(label: str, res) -> None:
    print(
        f"perplexity {label}: {res.perplexity:.2f} ({res.tokens} tokens, {res.windows} windows of "
        f"{res.settings.window}, PTB {res.settings.split}, {res.seconds:.0f} s)"
    )

    def pct(x) -> str:
        return "n/a (no token offsets)" if x is None else f"{100 * x:.2f}%"

    print(
        f"accuracy {label}: next token {pct(res.next_token_accuracy)}, next word {pct(res.next_word_accuracy)} "
        f"({res.words} words), last word {pct(res.last_word_accuracy)} ({res.sentences} sentences)"
    )


def settings_from_args(args) -> CompressSettings:
    """The compress command's settings. Shaping options left unset (None) take the objective's
    value, so ``--objective weights --alpha 0.5`` changes only the strength."""
    given = {k: getattr(args, k) for k in ("profile", *SHAPING) if getattr(args, k) is not None}
    return CompressSettings.for_objective(
        args.objective,
        codec=args.codec,
        bpw=None if (args.qp is not None or args.lossless) else args.bpw,
        qp=args.qp,
        lossless=args.lossless,
        group=args.group,
        include_embeddings=not args.keep_embeddings,
        exact_kept=args.exact_kept,
        budget=args.budget,
        embedding_offset=args.embedding_offset,
        workers=args.workers,
        only=args.only,
        keep_nonfinite=args.keep_nonfinite,
        calibration=args.calibration,
        calibration_tokens=args.calibration_tokens,
        error_feedback=args.error_feedback,
        **given,
    )


def cmd_compress(args) -> int:
    from .api import compress_source, save
    from .budget import whole_file
    from .evaluate import perplexity
    from .modelbuild import build_model
    from .modelcheck import build_checked
    from .modelio import load as load_source
    from .outputs import check_output_file
    from .workdir import WorkDir

    settings = settings_from_args(args)
    if settings.calibration is not None:
        from .calibration import calibration_text

        calibration_text(settings.calibration)  # a missing text fails now, not after loading the model
    check_output_file(args.out)  # an unusable output path fails now, not after encoding
    work = WorkDir.for_output(args.out, resume=args.resume)  # refuses a folder llmcodec did not make
    bars = Bars(args.quiet)
    t0 = time.perf_counter()
    src = load_source(args.model)
    # the config check (mostly transformers' imports) runs beside the first encodes: its warning
    # still comes long before a large model is done, and a small model does not wait for it
    check = threading.Thread(target=_warn_if_unrestorable, args=(src,), daemon=True)
    check.start()
    if args.eval:
        check.join()  # the check imports what building the model needs: one import at a time
        from .api import load_tokenizer

        tok = load_tokenizer(src.config, src.files)
        model = build_checked(build_model, dict(src.items()), src.config)
        _check_perplexity(model, tok, args.model)
        before = perplexity(model, tok, _eval_settings(args), progress=bars)
        del model  # not held while compressing
    with make_executor(args.executor, args.workers, args.address) as ex:
        art = compress_source(src, settings, progress=bars, executor=ex, work=work)
    check.join()
    save(art, args.out)
    work.remove()  # only once the artifact is in place
    secs = time.perf_counter() - t0
    st = art.stats()
    print(f"codec {art.codec['name']} ({art.codec['encoder']}, profile {art.codec['profile']['name']})")
    print(
        f"coded {st['coded_tensors']} matrices, {st['coded_weights']:,} weights: "
        f"{_mb(st['coded_source_bytes'])} as stored in the source, {_mb(st['coded_weights'] * 2)} as fp16 "
        f"-> {_mb(st['coded_bits'] / 8)} compressed"
    )
    side = st["side_bits"] / max(1, st["coded_weights"])
    print(f"bits per coded weight: {st['bits_per_weight']:.4f} (side information {side:.4f})")
    print(
        f"kept uncoded: {st['raw_tensors']} tensors, {st['raw_weights']:,} values ({_mb(st['raw_bytes'])}); "
        f"tied: {st['aliases']}"
    )
    whole = whole_file(args.out)
    print(f"artifact {args.out}: {_mb(whole['file_bytes'])} in {secs:.0f} s; "
          f"{whole['bits_per_parameter']:.4f} bits per parameter over the whole file ({whole['parameters']:,} "
          f"parameters; config and tokenizer files {_mb(whole['files_bytes'])} beside)")
    if args.eval:
        from .api import restore_state_dict

        model = build_model(restore_state_dict(art, args.workers, bars), art.config)
        after = perplexity(model, tok, _eval_settings(args), progress=bars)
        _print_eval("before", before)
        _print_eval("after", after)
    if Path(str(args.model)).name == DEFAULT_MODEL or str(args.model) == DEFAULT_MODEL:
        print(PRETRAINED_NOTE)
    return 0


def _warn_if_unrestorable(src) -> None:
    """Say early (beside the first encodes) when the source's config does not fit its weights: decompress and
    load_model will refuse the artifact (load_state_dict still works)."""
    import torch

    from .modelcheck import ConfigMismatch, check_config

    if src.config is None:
        return
    try:
        check_config({n: (tuple(src.shape(n)), torch.float32) for n in src.names()}, src.config)
    except ConfigMismatch as e:
        print(f"llmcodec: warning: {shown(str(e))}: decompress and load_model will refuse the artifact "
              "(load_state_dict still reads it)", file=sys.stderr)
    except Exception as e:  # runs in a thread: a message, never a traceback
        print(f"llmcodec: warning: the model config could not be checked ({type(e).__name__}: {shown(str(e))})",
              file=sys.stderr)


def cmd_decompress(args) -> int:
    from .api import decompress

    out = decompress(args.artifact, args.out, args.workers, Bars(args.quiet))
    print(f"restored {args.artifact} -> {out} (a Hugging Face model folder)")
    return 0


def _check_perplexity(model, tok, what) -> None:
    """Perplexity needs a language model that predicts the next token, and its tokenizer."""
    if tok is None:
        raise ValueError(f"{what}: the model came without tokenizer files, so its perplexity cannot be measured")
    if not model.can_generate():
        raise ValueError(f"{what}: a {type(model).__name__} is not a causal language model; perplexity needs one")


def cmd_eval(args) -> int:
    from .api import load_model, load_source_model
    from .evaluate import perplexity

    bars = Bars(args.quiet)
    if args.lm_eval:
        from .lmeval import require

        require()  # before loading the model
    if _is_artifact(args.model):
        model, tok = load_model(args.model, progress=bars)
    else:
        model, tok = load_source_model(args.model)
    _check_perplexity(model, tok, args.model)
    _print_eval(args.model, perplexity(model, tok, _eval_settings(args), progress=bars))
    if args.lm_eval:
        from .lmeval import run_tasks

        for task, metrics in run_tasks(model, tok, args.lm_eval.split(","), args.lm_eval_include,
                                       args.lm_eval_limit).items():
            print(f"lm-eval {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if args.model == DEFAULT_MODEL:
        print(PRETRAINED_NOTE)
    return 0


def cmd_info(args) -> int:
    from .artifact import read_header

    h = read_header(args.artifact)
    if args.json:
        print(json.dumps(h, indent=2))
        return 0
    from .artifact import piece_bytes
    from .budget import file_shares, whole_file

    st, c = h["stats"], h["codec"]
    side = st["side_bits"] / max(1, st["coded_weights"])
    whole = whole_file(args.artifact)
    made_by = shown(str(h["llmcodec_version"]))
    print(f"{args.artifact}: llmcodec format {h['format_version']}, written by llmcodec {made_by}")
    print(f"codec: {c['name']} ({shown(c['encoder'])}), profile {shown(c['profile']['name'])} {c['profile']}")
    print(f"settings: {h['settings']}")
    print(f"file: {_mb(whole['file_bytes'])}, {whole['bits_per_parameter']:.4f} bits per parameter "
          f"({whole['parameters']:,} parameters; config and tokenizer files {_mb(whole['files_bytes'])} beside, "
          "not counted)")
    print(
        f"coded: {st['coded_tensors']} matrices, {st['coded_weights']:,} weights, "
        f"{st['bits_per_weight']:.4f} bits per coded weight (side info {side:.4f})"
    )
    print(f"kept uncoded: {st['raw_tensors']} tensors ({_mb(st['raw_bytes'])}); tied: {st['aliases']}")
    shares = file_shares(h, piece_bytes(args.artifact), whole["file_bytes"])
    print("share of the file: " + ", ".join(f"{k} {100 * v / whole['file_bytes']:.1f}% ({_mb(v)})"
                                            for k, v in shares.items() if v))
    print(f"{'tensor':60s} {'shape':>14s} {'kind':>6s} {'qp':>4s} {'bpw':>7s} {'rel.err':>8s}")
    for raw_name, e in h["tensors"].items():
        name = shown(raw_name)  # names come from the file: no escape sequences reach the terminal
        if e["kind"] == "coded":
            n = e["shape"][0] * e["shape"][1]
            print(
                f"{name:60s} {'x'.join(map(str, e['shape'])):>14s} {'coded':>6s} {e['qp']!s:>4s} "
                f"{e['bits'] / n:7.3f} {'-' if e.get('rel_error') is None else format(e['rel_error'], '8.4f'):>8s}"
            )
        elif e["kind"] == "raw":
            print(f"{name:60s} {'x'.join(map(str, e['shape'])):>14s} {'raw':>6s} {e['dtype']}")
        elif e["kind"] == "stack":
            print(f"{name:60s} {'x'.join(map(str, e['shape'])):>14s} {'stack':>6s} of the matrices below")
        else:
            print(f"{name:60s} {'':>14s} {'tied':>6s} -> {shown(e['of'])}")
    return 0


def cmd_verify(args) -> int:
    """Exit 0 if the artifact is sound, 1 if verification fails (the message names each bad tensor)."""
    from .verify import verify

    try:
        rep = verify(args.artifact, args.against, args.workers, Bars(args.quiet))
    except (ArtifactError, CodecError) as e:
        print(f"llmcodec: error: verification failed: {shown(str(e))}", file=sys.stderr)
        return 1

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    head = ("tensor", "kind", "qp", "bpw", "max.abs", "rel.err", "recorded")
    print(f"{head[0]:60s} {head[1]:>6s} {head[2]:>4s} {head[3]:>7s} {head[4]:>9s} {head[5]:>8s} {head[6]:>8s}  status")
    for t in rep.tensors:
        print(
            f"{shown(t.name):60s} {t.kind:>6s} {num(t.qp, 'd'):>4s} {num(t.bpw, '7.3f'):>7s} "
            f"{num(t.max_abs_error, '9.3g'):>9s} {num(t.rel_error, '8.4f'):>8s} "
            f"{num(t.recorded_rel_error, '8.4f'):>8s}  {shown(t.problem or 'ok')}"
        )
    if not rep.ok:
        print(f"llmcodec: error: verification failed: {shown('; '.join(rep.failures))}", file=sys.stderr)
        return 1
    what = f"and matches {args.against}" if args.against else "(checksums, header, decoding)"
    print(f"{args.artifact}: OK, {len(rep.tensors)} tensors verified {what}")
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .sysinfo import describe

    for k, v in describe().items():
        print(f"{k}: {v}")
    settings = bench.BenchSettings(
        model=args.model,
        out=Path(args.out),
        curves=bench.parse_curves(args.codecs, args.quick),
        budgets=bench.parse_budgets(args.budgets, args.quick),
        quick=args.quick,
        windows=args.windows or bench.DEFAULT_WINDOWS,
        sentences=args.sentences or bench.DEFAULT_SENTENCES,
        window=args.window,
        workers=args.workers,
        max_tensors=args.tensors,
        only=args.only,
        same_as=args.same_code_as,
        **({} if args.rtn is None else {"rtn_bits": args.rtn}),
    )
    bench.run(settings, log=lambda m: print(m, flush=True))
    if Path(str(args.model)).name == DEFAULT_MODEL or str(args.model) == DEFAULT_MODEL:
        print(PRETRAINED_NOTE)
    return 0


def _tensor_settings(args) -> CompressSettings:
    from .tensors import tensor_settings

    given = {k: getattr(args, k) for k in ("profile", "group", "weighting", "side") if getattr(args, k) is not None}
    return tensor_settings(
        codec=args.codec,
        bpw=None if (args.qp is not None or args.lossless) else args.bpw,
        qp=args.qp,
        lossless=args.lossless,
        workers=args.workers,
        keep_nonfinite=args.keep_nonfinite,
        **given,
    )


def _not_over(out: str, given: str) -> None:
    """Refuse an unusable output path, or one that would overwrite the input it is made from."""
    from .outputs import check_output_file

    check_output_file(out, "the output")
    if Path(out).resolve() == Path(given).resolve():
        raise ValueError(f"{out}: the output would overwrite the input; choose another file name")


def cmd_compress_tensors(args) -> int:
    from .api import save
    from .tensors import TensorOptions, compress_tensors, file_stats, read_safetensors

    settings = _tensor_settings(args)
    _not_over(args.out, args.input)
    t0 = time.perf_counter()
    tensors = read_safetensors(args.input)
    art = compress_tensors(tensors, settings, TensorOptions(args.stack_axis, args.exact), progress=Bars(args.quiet))
    save(art, args.out)
    fs = file_stats(art, Path(args.out).stat().st_size)
    st = art.stats()
    print(f"codec {art.codec['name']} ({art.codec['encoder']}, profile {art.codec['profile']['name']})")
    print(f"{len(tensors)} tensors, {fs['elements']:,} elements: coded {st['coded_tensors']} "
          f"({st['coded_weights']:,} elements, {st['bits_per_weight']:.4f} bits each), kept {st['raw_tensors']} "
          f"({_mb(st['raw_bytes'])})")
    print(f"artifact {args.out}: {_mb(fs['bytes'])}, {fs['bits_per_element']:.4f} bits per element over the whole "
          f"file, in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_decompress_tensors(args) -> int:
    from .tensors import decompress_tensors, write_safetensors

    _not_over(args.out, args.artifact)
    tensors = decompress_tensors(args.artifact, args.workers, Bars(args.quiet))
    write_safetensors(tensors, args.out)
    print(f"restored {args.artifact} -> {args.out} ({len(tensors)} tensors)")
    return 0


def cmd_kv_save(args) -> int:
    from .kv import KVOptions, save_kv

    settings = _tensor_settings(args)
    _not_over(args.out, args.prompt)
    text = Path(args.prompt).read_text(encoding="utf-8")
    opts = KVOptions(args.key_layout, args.value_layout, args.sinks, args.key_bits, args.recent, args.layer_bits)
    rep = save_kv(args.model, text, args.out, settings, opts, progress=Bars(args.quiet))
    print(f"prompt: {rep.tokens} tokens through {args.model}; cache {rep.elements:,} elements "
          f"({rep.layers} layers, keys and values)")
    print(f"artifact {args.out}: {_mb(rep.bytes)}, {rep.bits_per_element:.4f} bits per element over the whole file "
          f"(fp16 cache: {_mb(2 * rep.elements)}); prefill {rep.prefill_seconds:.1f} s, coding "
          f"{rep.code_seconds:.1f} s")
    if str(args.model) == DEFAULT_MODEL:
        print(PRETRAINED_NOTE)
    return 0


def cmd_kv_eval(args) -> int:
    from .kv import eval_kv

    text = Path(args.continuation).read_text(encoding="utf-8")
    res = eval_kv(args.model, args.artifact, text, workers=args.workers, progress=Bars(args.quiet))
    print(f"cache {args.artifact}: {res.prompt_tokens} prompt tokens, loaded in {res.load_seconds:.1f} s")
    print(f"continuation perplexity: {res.perplexity:.3f} ({res.tokens} tokens scored)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmcodec", description="Compress LLM weights with video codecs.")
    p.add_argument("--version", action="version", version=f"llmcodec {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, workers=True):
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if workers:
            sp.add_argument("--workers", type=at.WORKERS, default=0,
                            help="parallel codec processes (default: one per core)")

    def evalopts(sp):
        sp.add_argument("--window", type=at.WINDOW, default=512, help="tokens per perplexity window")
        sp.add_argument("--windows", type=at.WINDOWS, default=None, help="score only the first N windows")
        sp.add_argument("--quick", action="store_true", help=f"score only {QUICK_WINDOWS} windows")

    c = sub.add_parser("compress", help="compress a model into one .llmc artifact")
    c.add_argument("model", help=f"Hugging Face folder, .gguf file, or built-in name ({DEFAULT_MODEL})")
    c.add_argument("out", help="artifact file to write (.llmc)")
    c.add_argument("--codec", default="vvc", help=f"one of: {', '.join(sorted(CODECS))}")
    c.add_argument("--profile", default=None,
                   help="encoder profile (see the README); default: the codec's for the budget "
                        "(vvc: dependent quantization from 4.25 bits per parameter; with --objective weights: "
                        f"{OBJECTIVE_PROFILES['weights', 'vvc']})")
    rate = c.add_mutually_exclusive_group()
    rate.add_argument("--bpw", type=at.BPW, default=2.5,
                      help="target bits per parameter of the whole file: every stored byte of every tensor "
                           "(coded, kept, header) over the model's parameters; config and tokenizer files are "
                           "stored compressed beside (default: %(default)s)")
    rate.add_argument("--qp", type=at.QP, default=None, help="fixed QP for every tensor instead of --bpw")
    rate.add_argument("--lossless", action="store_true", help="exact integers (codecs with a lossless mode)")
    c.add_argument("--group", type=at.GROUP, default=None, help="quantization group size (default: per row)")
    c.add_argument("--budget", choices=BUDGETS, default="model",
                   help="what --bpw counts: the whole file over all parameters (model), or only the coded "
                        "matrices' bits over their weights (coded) (default: %(default)s)")
    c.add_argument("--keep-embeddings", action="store_true",
                   help="keep embeddings and the output head uncoded (16 bits; exact with --exact-kept)")
    c.add_argument("--include-embeddings", action="store_true", help=argparse.SUPPRESS)  # the default now
    c.add_argument("--embedding-offset", type=int, default=None, metavar="QP",
                   help=f"QP offset of token embeddings and the output head against the other matrices "
                        f"(negative: finer; default: {EMBEDDING_OFFSET} with per-token steps, "
                        f"{EMBEDDING_OFFSET_FLAT} without them, in VVC's QP units)")
    c.add_argument("--exact-kept", action="store_true",
                   help="store tensors that are not coded (norms, biases, ...) in the source's dtype instead of "
                        "16 bits")
    c.add_argument("--only", type=at.regex, default=None, metavar="REGEX", help="code only tensors whose name matches")
    c.add_argument("--eval", action="store_true", help="measure perplexity before and after")
    c.add_argument("--executor", choices=EXECUTORS, default="local", help="where encodes run (default: local)")
    c.add_argument("--address", default=None, help="Ray cluster address for --executor ray (default: a local Ray)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.work/")
    c.add_argument(
        "--keep-nonfinite", action="store_true", help="keep matrices with NaN/Inf uncompressed instead of refusing"
    )
    rd = c.add_argument_group(
        "where the error goes (data-free; unset options take the objective's values, see the README)")
    rd.add_argument("--objective", choices=tuple(OBJECTIVES), default="model",
                    help="model: error where the model's output minds it least (the measured best perplexity and "
                         "embedding similarity); weights: least squared weight error (default: %(default)s)")
    default = {k: f.default for k, f in CompressSettings.__dataclass_fields__.items()}

    def dflt(key: str) -> str:
        w = OBJECTIVES["weights"].get(key)
        return f"(default: {default[key]}" + ("" if w is None else f"; with --objective weights: {w}") + ")"

    rd.add_argument("--weighting", choices=WEIGHTINGS,
                    help=f"column weighting from the model's own weights {dflt('weighting')}")
    rd.add_argument("--alpha", type=at.number(0, 16), help=f"weighting strength {dflt('alpha')}")
    rd.add_argument("--shared-scale", action=argparse.BooleanOptionalAction,
                    help=f"one quantization step per tensor instead of per row {dflt('shared_scale')}")
    rd.add_argument("--allocation", choices=ALLOCATIONS,
                    help="per-tensor QPs: equal QP, offsets for equal absolute error (capped-error: with a cap on each "
                         "tensor's relative error, --error-cap) or for equal error "
                         f"relative to each row's RMS, or equal bits per weight {dflt('allocation')}")
    rd.add_argument("--error-cap", type=at.number(0, 1e6, lo_open=True),
                    help="capped-error allocation: no tensor's error relative to its RMS above this many times "
                         f"the median tensor's {dflt('error_cap')}")
    rd.add_argument("--edge-layers", type=at.integer(0, 1 << 16), metavar="N",
                    help=f"code the first and last N blocks of the stack finer; 0: off {dflt('edge_layers')}")
    rd.add_argument("--edge-octaves", type=at.number(0, 16), metavar="X",
                    help=f"their step is 2^-X times the others' (default: {EDGE_OCTAVES:g} below {EDGE_MAX_BPW} bits "
                         "per weight, 0 from there and with --qp)")
    rd.add_argument("--kv-sharing", type=at.number(0, 16), metavar="S",
                    help="grouped-query attention: k_proj and v_proj, each of whose heads serves n_rep query heads, "
                         f"get a step n_rep^(-S/2) times the rest's; 0: off (default: {KV_SHARING:g} below "
                         f"{KV_MAX_BPW} bits per weight, 0 from there and with --qp; with --objective weights: 0)")
    rd.add_argument("--token-rows", type=at.number(0, 16), metavar="S",
                    help="token embeddings and output heads: row v gets a step rank_v^(S/2) times the median row's, "
                         "its rank in a BPE tokenizer's merges standing for its frequency; 0: off "
                         f"{dflt('token_rows')}")
    rd.add_argument("--rotate", action=argparse.BooleanOptionalAction,
                    help=f"code a random rotation of each matrix, undone on restore {dflt('rotate')}")
    rd.add_argument("--centroids", action=argparse.BooleanOptionalAction,
                    help="coefficient domain: restore each decoded level at the mean of the weights that reached "
                         f"it {dflt('centroids')}")
    rd.add_argument("--side", choices=SIDES,
                    help="side information: 8-bit log scales and multipliers without offsets, packed or a byte "
                         f"each, or fp16 {dflt('side')}")
    rd.add_argument("--compand", type=at.number(0, 1, lo_open=True), metavar="P",
                    help=f"code sign(w)|w|^P so small weights get small errors; 1: off {dflt('compand')}")
    da = c.add_argument_group("optional and data-aware (off unless a text is given)")
    da.add_argument("--calibration", metavar="TEXT", default=None,
                    help="set each matrix's QP from its loss gradients on this text (ptb-train, ptb-valid, "
                         "ptb-test or a UTF-8 file) instead of one QP for all, finer edge layers and the "
                         "key/value prior")
    da.add_argument("--calibration-tokens", type=at.integer(1, 1 << 24), metavar="N",
                    default=default["calibration_tokens"],
                    help="tokens of the calibration text to use (default: %(default)s)")
    da.add_argument("--error-feedback", action="store_true",
                    help="with --calibration: put each matrix's coefficients on the codec's lattice at its "
                         "QP column by column, folding each column's error into the columns not yet done "
                         "through the inverse Hessian of the layer's inputs on the text (GPTQ's update), "
                         "coded with a profile without sign-bit hiding")
    evalopts(c)
    common(c)
    c.set_defaults(fn=cmd_compress)

    d = sub.add_parser("decompress", help="restore an artifact to a Hugging Face model folder")
    d.add_argument("artifact")
    d.add_argument("out")
    common(d)
    d.set_defaults(fn=cmd_decompress)

    e = sub.add_parser("eval", help="perplexity and accuracy on Penn Treebank test text")
    e.add_argument("model", help="artifact (.llmc), model folder, .gguf file or built-in name")
    e.add_argument("--lm-eval", default=None, metavar="TASKS",
                   help="also run lm-evaluation-harness tasks (comma-separated; optional extra: "
                        "pip install 'llmcodec[lm-eval]'; the task data must be available offline)")
    e.add_argument("--lm-eval-include", default=None, metavar="DIR", help="folder of extra lm-eval task YAML files")
    e.add_argument("--lm-eval-limit", type=int, default=None, metavar="N", help="at most N examples per task")
    evalopts(e)
    common(e, workers=False)
    e.set_defaults(fn=cmd_eval)

    i = sub.add_parser("info", help="what an artifact holds")
    i.add_argument("artifact")
    i.add_argument("--json", action="store_true", help="print the raw header")
    i.set_defaults(fn=cmd_info)

    b = sub.add_parser("bench", help="codecs and profiles compared at equal size, rate-controlled: CSV and plots")
    b.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"model to sweep: {DEFAULT_MODEL} (perplexity), minilm (sentence-embedding similarity), "
                        f"a model folder or a .gguf file (default: {DEFAULT_MODEL})")
    b.add_argument("--out", default="benchmarks/codecs", help="folder for points.csv, plots and summary")
    b.add_argument(
        "--codecs",
        default=None,
        metavar="LIST",
        help="codec or codec:profile entries, comma-separated (default: every codec at its default profile)",
    )
    b.add_argument(
        "--budgets", type=at.budget_list, default=None, metavar="LIST",
        help="bit budgets (--bpw) to measure, comma-separated, in this order (default: 2,2.5,3,3.5,4)",
    )
    b.add_argument("--quick", action="store_true", help="two codecs, two budgets, a few tensors, no perplexity")
    b.add_argument("--tensors", type=at.TENSORS, default=None, help="code only the first N matrices")
    b.add_argument("--only", type=at.regex, default=None, metavar="REGEX",
                   help="code only matrices whose name matches")
    b.add_argument("--window", type=at.WINDOW, default=512, help="tokens per perplexity window")
    b.add_argument("--windows", type=at.WINDOWS, default=None, help="perplexity windows per point (default: 40)")
    b.add_argument("--sentences", type=at.SENTENCES, default=None,
                   help="PTB test sentences an encoder (e.g. minilm) embeds per point (default: 300)")
    b.add_argument("--workers", type=at.WORKERS, default=1, help="encoder processes at once (default: 1)")
    b.add_argument("--rtn", type=at.rtn_bits, default=None, metavar="LIST",
                   help="round-to-nearest reference points, bits comma-separated, or none (default: 2,3,4)")
    b.add_argument("--same-code-as", default=None, metavar="CODE",
                   help="continue the cells of CODE (points.csv's code column): you declare that this code "
                        "codes the same; each new row names the code that measured it")
    b.set_defaults(fn=cmd_bench)

    v = sub.add_parser("verify", help="check every checksum and decode every tensor, writing nothing")
    v.add_argument("artifact")
    v.add_argument("--against", default=None, metavar="MODEL", help="also measure errors against the source model")
    common(v)
    v.set_defaults(fn=cmd_verify)

    def tensor_codec_opts(sp) -> None:
        sp.add_argument("--codec", default="vvc", help=f"one of: {', '.join(sorted(CODECS))}")
        sp.add_argument("--profile", default=None, help="encoder profile (default: the codec's for the budget)")
        r = sp.add_mutually_exclusive_group()
        r.add_argument("--bpw", type=at.BPW, default=2.5,
                       help="bits per element of the whole file: every stored byte x 8 / elements (default: 2.5)")
        r.add_argument("--qp", type=at.QP, default=None, help="fixed QP for every coded tensor instead of --bpw")
        r.add_argument("--lossless", action="store_true", help="exact integers (codecs with a lossless mode)")
        sp.add_argument("--group", type=at.GROUP, default=None, help="quantization group size (default: per row)")
        sp.add_argument("--weighting", choices=("none", "balance"), default=None,
                        help="column balance of each coded matrix (default: balance)")
        sp.add_argument("--side", choices=SIDES, default=None, help="side-information format (default: packed)")
        sp.add_argument("--keep-nonfinite", action="store_true",
                        help="keep tensors with NaN/Inf uncompressed instead of refusing")
        common(sp)

    ct = sub.add_parser("compress-tensors", help="compress any float tensors (a safetensors file or folder)")
    ct.add_argument("input", help="a .safetensors file, or a folder of them")
    ct.add_argument("out", help="artifact file to write (.llmc)")
    ct.add_argument("--stack-axis", type=at.integer(-64, 63), default=0,
                    help="tensors of 3+ dimensions are coded as stacks of matrices along this axis (default: 0)")
    ct.add_argument("--exact", action="store_true", help="keep uncoded float tensors exactly, not in 16 bits")
    tensor_codec_opts(ct)
    ct.set_defaults(fn=cmd_compress_tensors)

    dt = sub.add_parser("decompress-tensors", help="restore a compress-tensors artifact to one safetensors file")
    dt.add_argument("artifact")
    dt.add_argument("out", help="safetensors file to write")
    common(dt)
    dt.set_defaults(fn=cmd_decompress_tensors)

    from .kv import LAYOUTS, KVOptions

    kv = sub.add_parser("kv", help="a model's KV cache: code it (save), load it back and score a continuation (eval)")
    kvs = kv.add_subparsers(dest="kv_cmd", required=True)
    ks = kvs.add_parser("save", help="run a prompt through a model and code its KV cache")
    ks.add_argument("model", help=f"Hugging Face folder, .gguf file, or built-in name ({DEFAULT_MODEL})")
    ks.add_argument("prompt", help="UTF-8 text file with the prompt")
    ks.add_argument("out", help="artifact file to write (.llmc)")
    ks.add_argument("--key-layout", choices=LAYOUTS, default="channels",
                    help="rows of each head's key matrix: tokens or head channels (default: %(default)s)")
    ks.add_argument("--value-layout", choices=LAYOUTS, default="tokens",
                    help="rows of each head's value matrix (default: %(default)s)")
    ks.add_argument("--sinks", type=at.integer(0), default=KVOptions().sinks, metavar="N",
                    help="keep the first N tokens' keys and values (attention sinks) in 16 bits, uncoded; "
                         "0: code them too (default: %(default)s)")
    ks.add_argument("--key-bits", type=at.number(-8, 8), default=KVOptions().key_bits, metavar="B",
                    help="bits per element moved from the values to the keys, within the same budget; "
                         "0: one budget for both (default: %(default)s)")
    ks.add_argument("--recent", type=at.integer(0), default=KVOptions().recent, metavar="N",
                    help="keep the last N tokens' keys and values in 16 bits, uncoded, within the same budget "
                         "(default: %(default)s)")
    ks.add_argument("--layer-bits", type=at.layer_bits, default=KVOptions().layer_bits, metavar="L:B,...",
                    help="layer L's keys and values get B bits per element more than the other layers, within "
                         "the same budget (layers count from 0; default: none)")
    tensor_codec_opts(ks)
    ks.set_defaults(fn=cmd_kv_save)
    ke = kvs.add_parser("eval", help="load a coded KV cache and score a continuation (perplexity)")
    ke.add_argument("model", help="the model the cache was made with")
    ke.add_argument("artifact", help="artifact written by 'llmcodec kv save'")
    ke.add_argument("continuation", help="UTF-8 text file that continues the prompt")
    common(ke)
    ke.set_defaults(fn=cmd_kv_eval)
    return p


def _check_args(parser: argparse.ArgumentParser, args) -> None:
    """Checks that need two options at once (the rest are in the option types, argtypes.py)."""
    if getattr(args, "qp", None) is not None and getattr(args, "codec", None) in CODECS:
        lo, hi = sorted(CODECS[args.codec].qp_range)
        if not lo <= args.qp <= hi:
            parser.error(f"argument --qp: {args.qp} is outside the {args.codec} codec's range [{lo}, {hi}]")


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that temporaries are removed on the way out."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    old_term = None
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.fn(args)
    except (ArtifactError, ModelError, CodecError, BudgetError, ValueError, FileNotFoundError) as e:
        print(f"llmcodec: error: {shown(str(e))}", file=sys.stderr)
        return 2
    except Terminated:
        print("llmcodec: terminated; no output was left half-written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("llmcodec: interrupted; no output was left half-written", file=sys.stderr)
        return 130
    except MemoryError:
        print("llmcodec: error: out of memory (no output was written)", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"llmcodec: error: {shown(describe_os_error(e))}", file=sys.stderr)
        return 2
    except SafetensorError as e:  # a safetensors write that failed (a full disk) while a folder was written
        print(f"llmcodec: error: writing safetensors failed: {shown(str(e))}", file=sys.stderr)
        return 2
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())

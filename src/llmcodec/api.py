"""The Python API: compress a tensor, a state dict or a model; load an artifact back.

>>> import llmcodec
>>> art = llmcodec.compress_state_dict(model.state_dict(), llmcodec.CompressSettings(bpw=2.5))
>>> llmcodec.save(art, "model.llmc")
>>> state = llmcodec.load_state_dict("model.llmc")
>>> model, tokenizer = llmcodec.load_model("model.llmc")
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from . import artifact, budget, calibration, feedback, kept, stacks, tokenrows
from ._version import __version__
from .artifact import Artifact
from .codecs import get_codec
from .codecs.base import Profile
from .coder import CodedTensor, decode_tensor, decode_tensors
from .compress import CompressSettings, Progress, compress_matrices, is_codable
from .executors import Executor, batch_limit
from .importance import balance_importance, column_importance, column_scales, head_importance
from .modelbuild import build_model, load_folder_model
from .modelcheck import ConfigMismatch, build_checked, check_config
from .modelio import ModelSource, plain_layout, resolve, save_folder
from .modelio import load as load_source
from .outputs import check_output_file, check_output_folder
from .priors import TOKEN_MATRIX
from .workdir import WorkDir


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: go through float32, which holds bf16/fp16 values exactly.
    return t.detach().to(torch.float32).cpu().numpy()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def compress_tensor(
    w: torch.Tensor | np.ndarray, settings: CompressSettings = CompressSettings(), name: str = "tensor"
) -> CodedTensor:
    """Code one 2-D matrix; ``decompress_tensor`` gives it back."""
    if isinstance(w, np.ndarray):
        w = torch.from_numpy(w)
    if w.ndim != 2:
        raise ValueError(f"tensor {name!r} has shape {tuple(w.shape)}: only 2-D matrices are coded")
    return compress_matrices([(name, _to_numpy(w), _dtype_name(w))], settings)[0]


def decompress_tensor(ct: CodedTensor, codec: str = "vvc", profile: str | None = None) -> torch.Tensor:
    c = get_codec(codec)
    return torch.from_numpy(decode_tensor(ct, c, c.profile(profile))).to(getattr(torch, ct.dtype))


def _codec_record(settings: CompressSettings) -> dict:
    c, p = settings.codec_profile()
    return {
        "name": c.name,
        "encoder": c.encoder,
        "decoder": c.decoder,
        "format": c.fmt,
        "profile": {
            "name": p.name,
            "preset": p.preset,
            "intra": p.intra,
            "pix_fmt": c.pix_fmt(p),
            "packing": p.packing,
            "options": [list(o) for o in p.options],
        },
    }


def _reader(src: ModelSource, name: str):
    # Re-read on demand: safetensors sources then hold only the tensors being worked on.
    return lambda: _to_numpy(src.get(name))


def compress_source(
    src: ModelSource,
    settings: CompressSettings,
    progress: Progress | None = None,
    executor: Executor | None = None,
    work: WorkDir | None = None,
) -> Artifact:
    """Code every codable tensor of a model source (matrices, and tensors of 3+ dimensions as
    stacks of matrices); the rest is stored at 16 bits (``kept.py``; exactly with ``exact_kept``).

    Under a whole-model budget (``settings.budget`` "model") the matrices get what the budget
    leaves after everything else stored: kept tensors and the artifact's header (budget.py).
    Coded tensors are read lazily by the jobs that need them (``executor``: where jobs run,
    default a local pool; ``work``: a directory of finished encodes for resuming).
    """
    art = Artifact(
        codec=_codec_record(settings),
        settings=settings.to_dict(),
        config=src.config,
        files=dict(src.files),
        checkpoint=src.checkpoint,
    )
    tied = src.tied()
    todo = []
    shapes: dict[str, tuple[int, int]] = {}  # each coded matrix's
    for name in src.names():
        art.order.append(name)
        # A tie must be the very same view: W and W.T of a square W share storage, offset and shape.
        if name in tied and src.get(name).stride() == src.get(tied[name]).stride():
            art.aliases[name] = tied[name]
            continue
        t = src.get(name)
        codable = is_codable(name, tuple(t.shape), settings) and t.is_floating_point()
        if codable and not torch.isfinite(t).all():
            if not settings.keep_nonfinite:
                raise ValueError(
                    f"tensor {name!r} contains NaN or Inf weights; fix the checkpoint, or pass --keep-nonfinite "
                    "(keep_nonfinite=True) to store such tensors uncompressed"
                )
            art.raw[name] = t.detach().cpu().contiguous()  # kept exactly, NaN/Inf included
            continue
        if codable and t.ndim == 2:
            todo.append((name, _reader(src, name), _dtype_name(t)))
            shapes[name] = (t.shape[0], t.shape[1])
        elif codable:
            art.stacks[name] = tuple(t.shape)
            for i, m in enumerate(stacks.member_names(name, t.shape)):
                todo.append((m, _member_reader(src, name, i), _dtype_name(t)))
                shapes[m] = (t.shape[-2], t.shape[-1])
        else:
            _keep(art, src, name, t, settings.exact_kept)
        del t
    names = [n for n, _, _ in todo]
    col_scales = _column_scales(src, names, settings)
    row_steps = _row_steps(src, names, settings)
    weights = _loss_weights(src, names, settings, col_scales, progress)
    factors = _feedback_factors(src, names, settings, col_scales, progress)
    budget_bits = None
    if todo and settings.bpw is not None and settings.budget == "model":
        budget_bits = budget.coded_bits(art, settings, shapes, __version__)
    for ct in compress_matrices(todo, settings, progress, executor, work, col_scales, weights, budget_bits, factors,
                                row_steps):
        art.coded[ct.name] = ct
    return art


def _keep(art: Artifact, src: ModelSource, name: str, t: torch.Tensor, exact: bool) -> None:
    """Store ``t`` uncoded: at 16 bits unless ``exact`` (kept.py), lazily for a lazy source."""
    dtype = kept.storage_dtype(t, exact)
    if dtype != t.dtype:
        art.source_dtypes[name] = _dtype_name(t)
    if src.lazy:  # read again when the artifact is written, not kept in memory meanwhile
        art.raw[name] = artifact.LazyTensor(tuple(t.shape), dtype, functools.partial(_stored, src, name, dtype))
    else:
        art.raw[name] = kept.to_storage(t, dtype)


def _stored(src: ModelSource, name: str, dtype: torch.dtype) -> torch.Tensor:
    return kept.to_storage(src.get(name), dtype)


def _matrix(src: ModelSource, name: str) -> torch.Tensor:
    """A tensor of the source by name, or a matrix of a stacked one by its member name (``name[i]``)."""
    try:
        return src.get(name)
    except KeyError:
        m = re.fullmatch(r"(.*)\[(\d+)\]", name)
        if m is None:
            raise
        return stacks.member(src.get(m.group(1)), int(m.group(2)))


def _member_reader(src: ModelSource, name: str, i: int):
    return lambda: _to_numpy(stacks.member(src.get(name), i))


def _column_scales(src: ModelSource, names: list[str], settings: CompressSettings) -> list[np.ndarray | None]:
    """Data-free column multipliers for each coded matrix (None where no rule applies)."""
    if settings.weighting == "none" or settings.lossless:  # lossless keeps |w - w_hat| <= scale/2 per weight
        return [None] * len(names)
    present = set(src.names())

    def get(n: str) -> np.ndarray:
        return _to_numpy(_matrix(src, n))

    out = []
    for n in names:
        if TOKEN_MATRIX.search(n):  # the output head's inputs are the final norm's, whatever the weighting
            imp = head_importance(n, src.shape(n)[1], get, present, src.config, src.tied())
        elif settings.weighting == "balance":
            imp = balance_importance(get(n))
        else:
            imp = column_importance(n, get, present, src.config)
        out.append(None if imp is None else column_scales(imp, settings.alpha, log8=settings.side != "fp16"))
    return out


def _row_steps(src: ModelSource, names: list[str], settings: CompressSettings) -> list[np.ndarray | None]:
    """Per-token step factors for token embeddings and output heads (tokenrows.py) from the source's
    BPE tokenizer (parsed once); None for other matrices, for tokenizers that are not BPE, for lossless
    coding and for a sample-domain profile (whose rows span the sample range each)."""
    tok = src.files.get("tokenizer.json")
    token = [TOKEN_MATRIX.search(n) is not None for n in names]
    if not settings.token_rows_apply() or tok is None or not any(token):
        return [None] * len(names)
    span = tokenrows.bpe_span(tok)
    if span is None:
        return [None] * len(names)
    return [tokenrows.row_steps(tokenrows.span_ranks(span, src.shape(n)[0]), settings.token_rows) if t else None
            for n, t in zip(names, token, strict=True)]


def _calibration_model(src: ModelSource, settings: CompressSettings):
    """The source's model (float weights as stored) and the calibration text's token windows."""
    if src.config is None:
        raise ValueError("calibration runs the model on text: the source needs a model config (config.json)")
    text = calibration.calibration_text(settings.calibration)
    windows = calibration.calibration_windows(load_tokenizer(src.config, src.files), text, settings.calibration_tokens)
    return build_model(dict(src.items()), src.config), windows


def _loss_weights(
    src: ModelSource,
    names: list[str],
    settings: CompressSettings,
    col_scales: list[np.ndarray | None],
    progress: Progress | None,
    per: str = "window",
) -> list[float] | None:
    """With a calibration text (optional, data-aware): how much each coded matrix's codec error
    costs the model's loss on it (calibration.py; ``per``: its Fisher estimator); None without one."""
    if settings.calibration is None or not names:
        return None
    # each matrix's error pattern in factored form, so that only one number per matrix is accumulated
    reduce = {n: calibration.loss_weight_reducer(
        calibration.pattern_factors(_to_numpy(_matrix(src, n)), c, settings.group, settings.shared_scale))
        for n, c in zip(names, col_scales, strict=True)}
    model, windows = _calibration_model(src, settings)
    weights = calibration.squared_gradients(model, windows, names, progress, per, reduce)
    return [float(weights[n]) for n in names]


def _feedback_factors(
    src: ModelSource,
    names: list[str],
    settings: CompressSettings,
    col_scales: list[np.ndarray | None],
    progress: Progress | None,
) -> list[np.ndarray | None] | None:
    """With error feedback (optional, data-aware; feedback.py): each coded linear layer's
    inverse-Hessian factor from its inputs on the calibration text, for the columns it is coded in
    (``W * c``); None for matrices that are not a linear layer's weight (embeddings)."""
    if not settings.error_feedback or not names:
        return None
    model, windows = _calibration_model(src, settings)
    hessians = feedback.input_hessians(model, windows, names, progress)
    del model
    return [None if n not in hessians else
            feedback.inverse_factor(feedback.column_hessian(hessians.pop(n), c)).astype(np.float32)
            for n, c in zip(names, col_scales, strict=True)]


def compress_state_dict(
    state: Mapping[str, torch.Tensor],
    settings: CompressSettings = CompressSettings(),
    config: dict | None = None,
    files: dict[str, bytes] | None = None,
    progress: Progress | None = None,
) -> Artifact:
    src = ModelSource("state_dict", config, dict(files or {}), _tensors=dict(state))
    return compress_source(src, settings, progress)


def compress_model(
    model: str | os.PathLike,
    out: str | os.PathLike,
    settings: CompressSettings = CompressSettings(),
    progress: Progress | None = None,
    executor: Executor | None = None,
    resume: bool = False,
) -> Artifact:
    """Compress a model folder, .gguf file or built-in model name into the artifact file ``out``.

    Finished encodes are kept in ``OUT.work/`` until the artifact is written; ``resume=True``
    reuses them after an interrupted run (the artifact is the same as an uninterrupted run's).
    """
    check_output_file(out)
    work = WorkDir.for_output(out, resume)
    src = load_source(model)
    art = compress_source(src, settings, progress, executor, work)
    save(art, out)
    work.remove()
    return art


def save(art: Artifact, path: str | os.PathLike) -> dict:
    return artifact.write(path, art, __version__)


def decoders_for(art: Artifact):
    c = get_codec(art.codec["name"])
    p = art.codec["profile"]
    prof = Profile(
        p["name"],
        preset=p["preset"],
        intra=p["intra"],
        pix_fmt=p["pix_fmt"],
        packing=p["packing"],
        options=tuple(tuple(o) for o in p["options"]),
    )
    return c, prof


# Frame samples one restore decoder process takes at least (more when the model is large: a few
# processes per worker)
RESTORE_BATCH_SAMPLES = 1 << 25


def decode_batches(
    coded: Mapping[str, CodedTensor], max_samples: int = 1 << 25, max_tensors: int = 64
) -> list[list[str]]:
    """Runs of coded tensors to decode in one decoder process each: at most ``max_tensors``, and at
    most ``max_samples`` frame samples unless one tensor alone has more. Tensors of one frame size
    go together (in order within each size): a decoder process reuses its buffers between frames
    of one size, and each process start costs the decoder's set-up again. A process holds one
    tensor's output at a time (``decode_tensors``), so the bounds only spread the work."""
    first: dict[tuple[int, int], int] = {}
    for j, ct in enumerate(coded.values()):
        first.setdefault((ct.layout.frame_h, ct.layout.frame_w), j)
    items = sorted(coded.items(), key=lambda kv: first[kv[1].layout.frame_h, kv[1].layout.frame_w])
    out: list[list[str]] = []
    size = 0
    for n, ct in items:
        s = ct.layout.frame_h * ct.layout.frame_w * ct.layout.n_frames
        if not out or len(out[-1]) >= max_tensors or size + s > max_samples:
            out.append([])
            size = 0
        out[-1].append(n)
        size += s
    return out


def restore_state_dict(art: Artifact, workers: int = 0, progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Decode every coded tensor (batches of them per decoder process, in parallel) and return the
    full state dict in source order."""
    codec, profile = decoders_for(art)
    codec.check_available()
    codec.cancel_event = threading.Event()  # set at the first failure: running decodes stop at once
    workers = workers or os.cpu_count() or 1
    # few decoder processes (each start costs the decoder's set-up), but a few per worker so that
    # they end together
    total = sum(ct.layout.frame_h * ct.layout.frame_w * ct.layout.n_frames for ct in art.coded.values())
    batches = decode_batches(art.coded, batch_limit(total, workers, RESTORE_BATCH_SAMPLES), 256)
    pool = ThreadPoolExecutor(workers)
    # one BLAS thread per decode (the blockwise DCTs): the pool already keeps the cores busy, and
    # BLAS threads spinning against it only burn CPU
    blas = threadpool_limits(1)
    try:
        decoded: dict[str, torch.Tensor] = {}
        lock = threading.Lock()
        done = [0]

        def keep(names: list[str], k: int, w: np.ndarray) -> None:
            t = torch.from_numpy(w).to(getattr(torch, art.coded[names[k]].dtype))
            with lock:
                decoded[names[k]] = t
                done[0] += 1
                if progress:
                    progress("decode", done[0], len(art.coded))

        futures = {pool.submit(decode_tensors, [art.coded[n] for n in b], codec, profile,
                               functools.partial(keep, b)): b for b in batches}
        for f in as_completed(futures):  # the first failure is seen at once, in any order
            f.result()
    except BaseException:
        codec.cancel_event.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        blas.restore_original_limits()
    pool.shutdown()
    state = {}
    for name in art.order:
        if name in art.stacks:
            parts = [_restored(art, m, decoded) for m in stacks.member_names(name, art.stacks[name])]
            state[name] = stacks.join(parts, art.stacks[name])
        elif name in decoded or name in art.raw:
            state[name] = _restored(art, name, decoded)
    for name, of in art.aliases.items():
        state[name] = state[of]
    return state


def _restored(art: Artifact, name: str, decoded: dict[str, torch.Tensor]) -> torch.Tensor:
    """A decoded matrix, or a kept tensor back in its source's dtype."""
    if name in decoded:
        return decoded.pop(name)
    t = artifact.materialize(art.raw[name])
    source = art.source_dtypes.get(name)
    return kept.from_storage(t, getattr(torch, source)) if source else t


def load_state_dict(
    path: str | os.PathLike, workers: int = 0, progress: Progress | None = None
) -> dict[str, torch.Tensor]:
    return restore_state_dict(artifact.read(path), workers, progress)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def load_tokenizer(config: dict | None, files: dict[str, bytes]):
    """The tokenizer of a model's files; None when the model came without tokenizer files."""
    from transformers import AutoTokenizer

    if not any(f in files for f in TOKENIZER_FILES):
        return None
    with tempfile.TemporaryDirectory() as d:
        if config is not None:
            Path(d, "config.json").write_text(json.dumps(config))
        for f, data in files.items():
            Path(d, f).write_bytes(data)
        try:
            return AutoTokenizer.from_pretrained(d)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as e:  # files from an artifact are untrusted; a tokenizers (pyo3) panic is a BaseException
            raise ValueError(f"the tokenizer files cannot be loaded ({type(e).__name__}: {e})") from None


def load_model(path: str | os.PathLike, workers: int = 0, progress: Progress | None = None):
    """Artifact -> (transformers model, tokenizer or None), straight from memory, no folder written.

    transformers' own loader takes the restored tensors under the source's names (its renaming and
    fusing of mixture-of-experts weights included); the class is the config's architecture
    (a causal LM, or e.g. ``BertModel`` for an encoder).
    """
    art = artifact.read(path)
    if art.config is None:
        raise artifact.ArtifactError(f"{path}: the artifact has no model config; use load_state_dict")
    check_restorable(art, path)  # the config that builds the model fits the weights: checked before decoding
    state = restore_state_dict(art, workers, progress)
    if art.checkpoint is None:  # in-memory names: tied aliases are re-tied by transformers
        state = {n: t for n, t in state.items() if n not in art.aliases}
    model = build_model(state, art.config)
    return model, load_tokenizer(art.config, art.files)


def load_source_model(spec: str | os.PathLike):
    """A model folder, .gguf file or built-in name -> (transformers model, tokenizer or None)."""
    src = load_source(spec)
    if src.config is None:
        raise ValueError(f"{spec}: no config.json, cannot build a model")
    if src.lazy:  # a folder: transformers reads it itself
        model = build_checked(load_folder_model, resolve(spec), src.config)
    else:
        model = build_checked(build_model, dict(src.items()), src.config)
    return model, load_tokenizer(src.config, src.files)


def _shard_reader(art: Artifact, workers: int, progress: Progress | None):
    """Decode the tensors of one shard at a time (so a folder is written holding one shard's
    weights, not the model's); progress counts over the whole artifact."""
    if any(n not in art.coded and n not in art.raw and n not in art.aliases for n in art.order):
        state = restore_state_dict(art, workers, progress)  # a kind of entry this reader does not split
        return lambda names: state
    done = [0]

    def read(names: list[str]) -> dict[str, torch.Tensor]:
        need = set(names) | {art.aliases[n] for n in names if n in art.aliases}
        part = dataclasses.replace(
            art,
            coded={n: c for n, c in art.coded.items() if n in need},
            raw={n: t for n, t in art.raw.items() if n in need},
            aliases={n: of for n, of in art.aliases.items() if n in need},
            order=[n for n in art.order if n in need],
        )
        step = None
        if progress is not None:
            step = lambda stage, k, _n: progress(stage, done[0] + k, len(art.coded))  # noqa: E731
        out = restore_state_dict(part, workers, step)
        done[0] += len(part.coded)
        return out

    return read


def _stored_tensors(art: Artifact) -> dict[str, torch.Tensor]:
    """Every stored tensor's name, shape and dtype, as meta tensors (nothing decoded)."""
    out = {}
    for n in art.order:
        if n in art.coded:
            c = art.coded[n]
            out[n] = torch.empty(c.shape, dtype=getattr(torch, c.dtype), device="meta")
        elif n in art.raw:
            out[n] = torch.empty(tuple(art.raw[n].shape), dtype=art.raw[n].dtype, device="meta")
    return out


def decompress(
    path: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 0, progress: Progress | None = None
) -> Path:
    """Artifact -> Hugging Face model folder: the source's tensor names, dtypes and shard files
    written straight to safetensors (no model is built), its config, tokenizer and other files.
    Tensors are decoded one shard file at a time."""
    check_output_folder(out_dir)  # an unusable output folder fails now, not after decoding
    art = artifact.read(path)
    if art.config is None:
        raise artifact.ArtifactError(
            f"{path}: the artifact has no model config, so it cannot become a Hugging Face folder; "
            "load it as a state dict instead"
        )
    check_restorable(art, path)
    layout = art.checkpoint
    if layout is None:
        stored = _stored_tensors(art)
        if len(stored) + len(art.aliases) != len(art.order):  # entries of a kind not listed above
            return save_folder(restore_state_dict(art, workers, progress), art.config, art.files, Path(out_dir),
                               None, art.aliases)
        layout = plain_layout(stored, art.aliases)
    return save_folder(_shard_reader(art, workers, progress), art.config, art.files, Path(out_dir), layout)


def weight_shapes(art: Artifact) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor a restore of ``art`` gives, without decoding."""
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    def one(name: str) -> tuple[tuple[int, ...], torch.dtype]:
        if name in art.coded:
            return art.coded[name].shape, getattr(torch, art.coded[name].dtype)
        source = art.source_dtypes.get(name)  # kept at 16 bits, restored in the source's dtype
        return tuple(art.raw[name].shape), getattr(torch, source) if source else art.raw[name].dtype

    for name in art.order:
        if name in art.stacks:
            out[name] = (art.stacks[name], one(stacks.member_names(name, art.stacks[name])[0])[1])
        elif name in art.coded or name in art.raw:
            out[name] = one(name)
    for name, of in art.aliases.items():
        out[name] = out[of]
    return out


def check_restorable(art: Artifact, path) -> None:
    """The header's config builds a model that takes exactly these weights (on the meta device)."""
    if art.config is None:
        return
    try:
        check_config({n: v for n, v in weight_shapes(art).items() if n not in art.aliases}, art.config)
    except ConfigMismatch as e:
        raise artifact.ArtifactError(f"{path}: {e}") from None

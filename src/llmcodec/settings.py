"""What to compress and how: ``CompressSettings`` (validated on creation), its named objectives and
choices, and which tensors are coded (``is_codable``)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from .codecs import FFmpegCodec, Profile, get_codec
from .priors import EDGE_MAX_BPW, EDGE_OCTAVES, KV_MAX_BPW, KV_SHARING

WEIGHTINGS = ("none", "data-free", "balance")
SIDES = ("packed", "log8", "fp16")
ALLOCATIONS = ("equal-qp", "equal-error", "capped-error", "equal-relative", "equal-rate")
# Named starting points for the shaping options (CompressSettings.for_objective, ``--objective``).
# "model" is the defaults: error goes where the model's output minds it least (per-row steps, full
# column balance, one QP). "weights" minimizes squared weight error instead: one absolute step
# everywhere, light balance (the comparison: docs/research-log.md).
OBJECTIVES: dict[str, dict[str, object]] = {
    "model": {},
    "weights": {"allocation": "equal-error", "shared_scale": True, "alpha": 0.3, "edge_layers": 0, "kv_sharing": 0.0},
}
# The profile each objective codes with where it differs from the codec's default, by codec.
OBJECTIVE_PROFILES: dict[tuple[str, str], str] = {("weights", "vvc"): "ai-medium-coef-dq-half"}
EMBEDDING_NAMES = ("embed", "lm_head", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type")
# The default QP offset of token embeddings and output heads (priors.TOKEN_MATRIX) against the other
# matrices under a bit budget: finer, since they feed and read out every layer; chosen together with the
# per-token steps (token_rows), which spread the rows' steps around it (docs/research-log.md).
EMBEDDING_OFFSET = -15
# The same without per-token steps (token_rows 0, sample-domain profiles, tokenizers that are not BPE):
# every row at the offset's step, so less of it buys the same bits.
EMBEDDING_OFFSET_FLAT = -12
BUDGETS = ("model", "coded")


@dataclass(frozen=True)
class CompressSettings:
    codec: str = "vvc"
    profile: str | None = None  # None: the codec's default profile for the budget (codecs/base.py profile_for)
    # the bit budget: with budget "model", bits per parameter of the whole file (every stored byte of
    # every tensor, the artifact's header included; model config and tokenizer files beside); with
    # "coded", bits per weight over the coded matrices alone, side information counted
    bpw: float | None = 2.5
    budget: str = "model"
    qp: int | None = None  # a fixed QP instead of a bit budget
    lossless: bool = False  # exact integers (codecs with a lossless mode)
    group: int | None = None  # quantization group (columns); None: one scale per row
    include_embeddings: bool = True  # code embedding and output-head matrices too (False: keep them)
    # QP offset of token embeddings and output heads against the other matrices under a budget
    # (None: EMBEDDING_OFFSET with per-token steps, EMBEDDING_OFFSET_FLAT without; negative: finer)
    embedding_offset: int | None = None
    # per-token steps in token embeddings and output heads (tokenrows.py): row v gets a step
    # rank_v^(token_rows/2) times the median row's (its BPE merge rank as the frequency prior); 0: off
    token_rows: float = 1.0
    exact_kept: bool = False  # tensors not coded keep the source's dtype instead of 16 bits (kept.py)
    min_dim: int = 16  # smaller matrices stay uncompressed
    only: str | None = None  # regular expression: code only tensors whose name matches
    workers: int = 0  # encoder processes at once; 0: one per core
    tolerance: float = 0.015  # --bpw may land this fraction below the target, never above
    sample_fraction: float = 0.125  # share of rows used to probe rates
    keep_nonfinite: bool = False  # keep matrices with NaN/Inf uncompressed instead of refusing them
    # Rate-distortion shaping (data-free; importance.py, docs/method.md): column multipliers from the
    # model's own weights: "none" | "data-free" (norm weights and the Llama dataflow,
    # importance.column_importance) | "balance" (inverse column energy, importance.balance_importance;
    # with alpha 1 every column is coded at the same RMS)
    weighting: str = "balance"
    alpha: float = 1.0  # strength of the weighting (1: weighted reverse water-filling)
    shared_scale: bool = False  # one quantization step per tensor instead of one per row
    # "equal-qp" | "equal-error" | "equal-relative" | "equal-rate": QP offsets for the same absolute step
    # everywhere, or for the same step relative to each row's RMS; or a starting QP per tensor for the
    # same bits per weight in every tensor (what per-tensor rate-controlled peers such as ECSQ get)
    allocation: str = "equal-qp"
    # capped-error: equal absolute error, except that no tensor's error relative to its RMS goes above
    # error_cap times the median tensor's (capped_steps)
    error_cap: float = 1.5
    # the first and last ``edge_layers`` blocks of the stack get a step ``2^-edge_octaves`` times the
    # rest's (QP offsets; edge_offsets): the ends of a network are the most sensitive to their error.
    # None: EDGE_OCTAVES below EDGE_MAX_BPW bits per weight, off from there and with --qp/--lossless.
    edge_layers: int = 1
    edge_octaves: float | None = None
    # grouped-query attention: k_proj and v_proj, whose heads each serve n_rep query heads, get a step
    # n_rep^(-kv_sharing/2) times the rest's (kv_offsets; read from the matrices' shapes, nothing for
    # models without GQA). None: KV_SHARING below KV_MAX_BPW bits per weight, off from there and with
    # --qp/--lossless/calibration.
    kv_sharing: float | None = None
    rotate: bool = False  # code R W R' (random orthogonal R, R'; rotation.py), undone on restore
    # code sign(w)|w|^p so the codec's error grows with |w| (1: off; quant.compand). Meant for the
    # sample-domain profiles; the coefficient-domain profiles' error is already per weight
    compand: float = 1.0
    # coefficient domain: restore each decoded level at the mean of the weights that reached it
    # (quant.Recon), which undoes the codec's rounding toward zero
    centroids: bool = True
    # "packed": column multipliers and (coefficient domain) row scales as 8-bit logarithmic codes,
    # no offsets, the codes Golomb-Rice packed (sideinfo.py); "log8": the same codes a byte each;
    # "fp16": fp16 scale and offset per row, fp16 multipliers
    side: str = "packed"
    # Optional and data-aware (calibration.py): a text ("ptb-train", "ptb-valid", "ptb-test" or a file)
    # whose first ``calibration_tokens`` tokens estimate each matrix's loss per unit of error; its QP
    # offsets replace the one-QP-for-all allocation and the default edge layers. None: data-free.
    calibration: str | None = None
    calibration_tokens: int = 2048
    # Optional and data-aware, with a calibration text (feedback.py): quantize each matrix's coded
    # coefficients column by column on the codec's lattice at its QP, folding each column's error into
    # the columns not yet quantized through the inverse Hessian of the layer's inputs on that text
    # (GPTQ's update), then code them at that QP; profile None: feedback.FEEDBACK_PROFILE.
    error_feedback: bool = False

    def __post_init__(self) -> None:
        if self.qp is not None and self.lossless:
            raise ValueError("give either a fixed QP or lossless, not both")
        for k in ("bpw", "alpha", "token_rows", "error_cap", "edge_octaves", "kv_sharing", "compand", "tolerance",
                  "sample_fraction"):
            v = getattr(self, k)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{k} must be a finite number, got {v!r}")
        if not 0 <= self.token_rows <= 16:
            raise ValueError(f"the per-token step strength token_rows must be in [0, 16], got {self.token_rows}")
        if not 0 <= self.alpha <= 16:
            raise ValueError(f"the weighting strength alpha must be in [0, 16], got {self.alpha}")
        if self.group is not None and self.group < 1:
            raise ValueError(f"the quantization group must be a positive number of columns, got {self.group}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per core), got {self.workers}")
        if self.only is not None:
            try:
                re.compile(self.only)
            except re.error as e:
                raise ValueError(f"only: {self.only!r} is not a valid regular expression ({e})") from None
        if self.qp is not None:
            from .codecs import CODECS

            cls = CODECS.get(self.codec)
            if cls is not None and not min(cls.qp_range) <= self.qp <= max(cls.qp_range):
                raise ValueError(f"QP {self.qp} is outside the {self.codec} codec's range {sorted(cls.qp_range)}")
        if self.qp is not None or self.lossless:  # a fixed QP or lossless replaces the default budget
            object.__setattr__(self, "bpw", None)
        elif self.bpw is None:
            raise ValueError("give a bit budget (bpw), a fixed QP (qp) or lossless")
        if self.bpw is not None and not 0 < self.bpw < 32:
            raise ValueError(f"bits per weight must be in (0, 32), got {self.bpw}")
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; choose one of {', '.join(BUDGETS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose one of {', '.join(ALLOCATIONS)}")
        if self.rotate and self.weighting != "none":
            raise ValueError(
                "rotate and column weighting do not combine (the multipliers are per input column): "
                "pass weighting='none' (--weighting none) with rotate"
            )
        if self.side not in SIDES:
            raise ValueError(f"unknown side-information format {self.side!r}; choose one of {', '.join(SIDES)}")
        if self.edge_layers < 0 or (self.edge_octaves is not None and self.edge_octaves < 0):
            raise ValueError(f"edge layers and octaves must be >= 0, got {self.edge_layers} and {self.edge_octaves}")
        if self.kv_sharing is not None and self.kv_sharing < 0:
            raise ValueError(f"the key/value sharing strength must be >= 0, got {self.kv_sharing}")
        if not self.error_cap > 0:
            raise ValueError(f"the relative error cap must be positive, got {self.error_cap}")
        if not 0 < self.compand <= 1:
            raise ValueError(f"the companding exponent must be in (0, 1], got {self.compand}")
        if self.error_feedback and self.calibration is None:
            raise ValueError("error feedback is data-aware: it needs a calibration text (calibration, --calibration)")
        if self.calibration is not None:
            if self.calibration_tokens < 1:
                raise ValueError(f"calibration tokens must be positive, got {self.calibration_tokens}")
            # its error model is the unrotated, uncompanded matrix's, with one QP per matrix of its own
            clash = [f for f, on in (("lossless", self.lossless), ("rotate", self.rotate),
                                     ("compand", self.compand != 1.0),
                                     (f"allocation {self.allocation}", self.allocation != "equal-qp")) if on]
            if clash:
                raise ValueError(f"calibration sets each matrix's QP itself; it does not combine with {clash[0]}")

    def _prior(self, given: float | None, default: float, max_bpw: float) -> float:
        """A data-free prior's strength: ``given``, or for None ``default`` below ``max_bpw`` bits per
        weight; none from there, with a fixed QP or lossless (no budget), and with a calibration text,
        whose measured sensitivities replace the priors between matrices."""
        if given is not None:
            return given
        on = self.bpw is not None and self.bpw < max_bpw and self.calibration is None
        return default if on else 0.0

    def resolved_edge_octaves(self) -> float:
        """``edge_octaves``, or for None EDGE_OCTAVES below EDGE_MAX_BPW (``_prior``)."""
        return self._prior(self.edge_octaves, EDGE_OCTAVES, EDGE_MAX_BPW)

    def resolved_embedding_offset(self, row_steps: bool | None = None) -> int:
        """``embedding_offset``, or for None under a budget (none with --qp/--lossless) EMBEDDING_OFFSET
        where the token matrices get per-token steps and EMBEDDING_OFFSET_FLAT where they do not, in
        VVC's QP units (6 per octave of step) and so scaled to the codec's. ``row_steps``: whether they
        get them (None: whether these settings give them, ``token_rows_apply``)."""
        if self.embedding_offset is not None:
            return self.embedding_offset
        if self.bpw is None:
            return 0
        steps = self.token_rows_apply() if row_steps is None else row_steps
        base = EMBEDDING_OFFSET if steps else EMBEDDING_OFFSET_FLAT
        return int(round(base * get_codec(self.codec).qp_per_octave / 6.0))

    def token_rows_apply(self) -> bool:
        """Whether token embeddings and heads get per-token steps (given a BPE tokenizer): a strength
        above 0, lossy coding, and a profile that codes in the coefficient domain."""
        return self.token_rows > 0 and not self.lossless and self.codec_profile()[1].coef_block is not None

    def resolved_kv_sharing(self) -> float:
        """``kv_sharing``, or for None KV_SHARING below KV_MAX_BPW (``_prior``)."""
        return self._prior(self.kv_sharing, KV_SHARING, KV_MAX_BPW)

    @classmethod
    def for_objective(cls, objective: str = "model", **explicit) -> CompressSettings:
        """Settings for a named objective (``OBJECTIVES``); settings given in ``explicit`` win."""
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        base: dict[str, object] = dict(OBJECTIVES[objective])
        profile = OBJECTIVE_PROFILES.get((objective, explicit.get("codec", cls.codec)))
        if profile and not explicit.get("lossless"):  # its profiles code coefficients: never lossless
            base["profile"] = profile
        return cls(**{**base, **explicit})

    def resolved_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def codec_profile(self) -> tuple[FFmpegCodec, Profile]:
        """The codec and the profile these settings code with: the one named, or the codec's default
        for the budget (``FFmpegCodec.profile_for``)."""
        codec = get_codec(self.codec)
        if self.error_feedback and self.profile is None and not self.lossless:
            from .feedback import FEEDBACK_PROFILE

            return codec, codec.profile(FEEDBACK_PROFILE)  # keeps the values feedback puts on its lattice
        return codec, codec.profile_for(self.profile, self.bpw, self.lossless)

    def same_encoding(self, other: CompressSettings) -> bool:
        """Whether ``other`` codes every matrix exactly as these settings do: the same settings once
        each profile is resolved, whatever the profiles are called (a default profile is a named copy
        of another) and however many workers run (``to_dict`` leaves them out)."""
        def key(s: CompressSettings) -> tuple:
            _, p = s.codec_profile()
            return ({**s.to_dict(), "profile": None, "edge_octaves": s.resolved_edge_octaves(),
                     "kv_sharing": s.resolved_kv_sharing(), "embedding_offset": s.resolved_embedding_offset()},
                    replace(p, name=""))

        return key(self) == key(other)

    def to_dict(self) -> dict:
        # workers only decides how fast, not what is written: leave it out so artifacts made with
        # any number of workers or any executor are identical byte for byte.
        d = asdict(self)
        d.pop("workers")
        return d


def is_codable(name: str, shape: Sequence[int], settings: CompressSettings) -> bool:
    """Which tensors are coded lossily: matrices of useful size, and tensors of 3+ dimensions as
    stacks of such matrices (stacks.py); embeddings and output heads unless asked to keep them."""
    if len(shape) < 2 or min(shape[-2:]) < settings.min_dim or 0 in shape:
        return False
    if not settings.include_embeddings and any(k in name for k in EMBEDDING_NAMES):
        return False
    return settings.only is None or re.search(settings.only, name) is not None

"""Building a transformers model from a config and weights, through transformers' own loader.

The lowest layer of model I/O: ``modelio`` (reading and writing model folders) and ``modelcheck``
(does a config fit the weights) both build on it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


class ModelError(ValueError):
    """The model path or name cannot be read as a model."""


def model_class(cfg):
    """The transformers class for a config: its first ``architectures`` entry that transformers has
    (what the checkpoint was saved from), else the causal LM of its model type, else the bare model."""
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

    for name in getattr(cfg, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, PreTrainedModel):
            return cls
    for auto in (AutoModelForCausalLM, AutoModel):
        if type(cfg) in auto._model_mapping:
            return auto._model_mapping[type(cfg)]
    raise ModelError(f"transformers has no model class for model type {getattr(cfg, 'model_type', None)!r}")


def make_config(config: dict):
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(**config)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"the model config cannot be read by transformers ({type(e).__name__}: {e})") from None


def _check_loading(info: dict) -> None:
    """Refuse a model that transformers loaded with weights missing, left over or not converted."""
    for key, what in (("missing_keys", "weights missing for"), ("unexpected_keys", "weights not in the model"),
                      ("mismatched_keys", "weights of the wrong shape"), ("error_msgs", "loading errors"),
                      ("conversion_errors", "weights transformers could not convert")):
        got = info.get(key)
        if got:
            names = sorted(str(x if not isinstance(x, tuple) else x[0]) for x in got)
            raise ModelError(f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")


@contextlib.contextmanager
def _quiet_loading():
    """transformers' own "Loading weights" bar off while it loads (llmcodec shows its own progress)."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def build_model(state: dict[str, torch.Tensor], config: dict):
    """A transformers model with these weights, through transformers' own loader.

    ``state`` holds the checkpoint's names (on-disk names of a folder source, or a model's
    ``state_dict`` names): transformers renames and fuses them as when it loads a folder. The
    model is built on the meta device and takes the given tensors (no random init, no copies
    where dtypes agree); tied weights are re-tied. A missing or unexpected weight is an error.
    """
    cfg = make_config(config)
    cls = model_class(cfg)
    with _quiet_loading():
        model, info = cls.from_pretrained(None, config=cfg, state_dict=state, dtype="auto", output_loading_info=True)
    _check_loading(info)
    model.eval()
    return model


def load_folder_model(folder: Path, config: dict):
    """A model folder -> transformers model, loaded by transformers from the folder itself."""
    cls = model_class(make_config(config))
    with _quiet_loading():
        model, info = cls.from_pretrained(str(folder), dtype="auto", output_loading_info=True, local_files_only=True)
    _check_loading(info)
    model.eval()
    return model

"""llmcodec: compress the weights of large language models with video codecs."""

from ._version import __version__
from .api import (
    compress_model,
    compress_state_dict,
    compress_tensor,
    decompress,
    decompress_tensor,
    load_model,
    load_state_dict,
    save,
)
from .artifact import Artifact, ArtifactError
from .compress import CompressSettings
from .kv import load_kv, save_kv
from .tensors import compress_tensors, decompress_tensors, tensor_settings

__all__ = [
    "Artifact",
    "ArtifactError",
    "CompressSettings",
    "__version__",
    "compress_model",
    "compress_state_dict",
    "compress_tensor",
    "compress_tensors",
    "decompress",
    "decompress_tensor",
    "decompress_tensors",
    "load_model",
    "load_kv",
    "load_state_dict",
    "save",
    "save_kv",
    "tensor_settings",
]

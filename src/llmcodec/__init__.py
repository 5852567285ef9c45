"""llmcodec: compress the weights of large language models with video codecs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmcodec")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"

from .api import (  # noqa: E402
    compress_model,
    compress_state_dict,
    compress_tensor,
    decompress,
    decompress_tensor,
    load_model,
    load_state_dict,
    save,
)
from .artifact import Artifact, ArtifactError  # noqa: E402
from .compress import CompressSettings  # noqa: E402

__all__ = [
    "Artifact",
    "ArtifactError",
    "CompressSettings",
    "__version__",
    "compress_model",
    "compress_state_dict",
    "compress_tensor",
    "decompress",
    "decompress_tensor",
    "load_model",
    "load_state_dict",
    "save",
]

"""Machine and version facts that every benchmark prints beside its results."""

from __future__ import annotations

import os
import platform
import shlex
import sys


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ffmpeg_version() -> str:
    from .codecs.base import ffmpeg_query

    out = ffmpeg_query(["-version"], "the FFmpeg version query")
    return out.splitlines()[0] if out else "unknown"


def describe() -> dict[str, str]:
    import numpy
    import torch
    import transformers

    from ._version import __version__

    return {
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "llmcodec": __version__,
        "ffmpeg": ffmpeg_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        # quoted as a shell would need it, so that an empty or spaced argument can be pasted back
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
    }


def markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: `{v}`" for k, v in info.items())

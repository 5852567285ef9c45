"""Which code a measurement was made with: a fingerprint of the package's source files.

Benchmarks record it with every result so that results of different code are never compared (or
resumed) as if they were one run. It covers every ``.py`` file of the package, so any change to the
library, harness included, gives a new fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from ._version import __version__

PACKAGE = Path(__file__).resolve().parent
# The version module reads installed metadata; the version string is part of the fingerprint instead.
EXCLUDED = frozenset({"_version.py"})


def fingerprint(files: Mapping[str, bytes], version: str) -> str:
    """``<version>+<12 hex digits>`` of the files' package-relative paths and contents (order-free)."""
    h = hashlib.sha256()
    for name in sorted(files):
        if Path(name).name in EXCLUDED:
            continue
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return f"{version}+{h.hexdigest()[:12]}"


def package_files(root: Path = PACKAGE) -> dict[str, bytes]:
    """Every ``.py`` file under ``root``, keyed by its ``/``-separated path relative to ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts}


def code_id(root: Path = PACKAGE) -> str:
    """The fingerprint of the llmcodec code that is running."""
    return fingerprint(package_files(root), __version__)

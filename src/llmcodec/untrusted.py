"""Showing names that come from a file (tensor and file names) without letting them act on a terminal."""

from __future__ import annotations


def shown(name: str) -> str:
    """``name`` as printed: escape sequences, control characters and newlines escaped as in ``repr``."""
    return name if name.isprintable() else repr(name)[1:-1]


def quoted(name: str) -> str:
    """``name`` quoted for a message (``repr`` escapes anything not printable)."""
    return repr(name)

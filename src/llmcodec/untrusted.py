"""Text that comes from a file: names shown without letting them act on a terminal, JSON parsed strictly."""

from __future__ import annotations

import json


def shown(name: str) -> str:
    """``name`` as printed: escape sequences, control characters and newlines escaped as in ``repr``."""
    return name if name.isprintable() else repr(name)[1:-1]


def quoted(name: str) -> str:
    """``name`` quoted for a message (``repr`` escapes anything not printable)."""
    return repr(name)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _DuplicateKey(f"the key {quoted(dup)} appears twice")
    return d


def strict_json(text: str | bytes):
    """``json.loads`` that refuses duplicate keys in any object (ValueError)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError as e:
        raise ValueError(f"nested too deeply ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e})") from None

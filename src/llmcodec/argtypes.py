"""Argument types for the command line: every number and pattern is checked when it is parsed,
with the same rules wherever the same option appears (``compress``, ``bench``, ``eval``)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] (``lo_open``/``hi_open``: the bound itself excluded)."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        low = lo is not None and (x < lo or (lo_open and x == lo))
        high = hi is not None and (x > hi or (hi_open and x == hi))
        if low or high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {_range(lo, hi, lo_open, hi_open)}")
        return x

    return parse


def _range(lo, hi, lo_open, hi_open) -> str:
    a = "-inf" if lo is None else format(lo, "g")
    b = "inf" if hi is None else format(hi, "g")
    return f"{'(' if lo_open else '['}{a}, {b}{')' if hi_open else ']'}"


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            x = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise argparse.ArgumentTypeError(f"{x} is out of range; allowed: {_range(lo, hi, False, False)}")
        return x

    return parse


def regex(text: str) -> str:
    """A regular expression that compiles."""
    try:
        re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression ({e})") from None
    return text


def budget_list(text: str) -> str:
    """A comma-separated list of bit budgets, each as ``BPW`` checks it (returned as given)."""
    parts = [t for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} names no budget")
    for t in parts:
        BPW(t.strip())
    return text


def layer_bits(text: str) -> tuple[tuple[int, float], ...]:
    """``LAYER:BITS`` pairs, comma-separated (layer an integer >= 0, bits a finite number, each layer once)."""
    out = []
    for part in (t.strip() for t in text.split(",") if t.strip()):
        layer, sep, bits = part.partition(":")
        try:
            pair = (int(layer), float(bits))
        except ValueError:
            pair = None
        if not sep or pair is None or pair[0] < 0 or not math.isfinite(pair[1]) or abs(pair[1]) > 8:
            raise argparse.ArgumentTypeError(f"{part!r}: expected LAYER:BITS like 0:1 (layer >= 0, bits in [-8, 8])")
        out.append(pair)
    if len({i for i, _ in out}) != len(out):
        raise argparse.ArgumentTypeError(f"{text!r} names a layer twice")
    return tuple(out)


# The same option, the same rule, in every command that has it.
WORKERS = integer(0, 4096)  # 0: one per core
WINDOW = integer(2, 1 << 20)  # tokens per perplexity window: a prediction needs two
WINDOWS = integer(1)
SENTENCES = integer(1)
BPW = number(0, 32, lo_open=True, hi_open=True)
QP = integer(-1024, 1024)  # then checked against the chosen codec's range
GROUP = integer(1, 1 << 24)
TENSORS = integer(1)


def rtn_bits(text: str) -> tuple[int, ...]:
    """Round-to-nearest reference bits, comma-separated (each 1..8), or ``none`` for no reference."""
    if text.strip().lower() == "none":
        return ()
    try:
        out = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected bits like 2,3,4 or none") from None
    if not out or not all(1 <= b <= 8 for b in out):
        raise argparse.ArgumentTypeError(f"{text!r}: expected bits from 1 to 8, like 2,3,4, or none")
    return out

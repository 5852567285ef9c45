"""Entropy coders of integer symbols for ECSQ: ``constriction``'s range coder and zstd, sizes counted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .common import HEADER_BITS


@dataclass(frozen=True)
class Coded:
    """An entropy-coded symbol stream; ``bits`` = stream + model table (compact form) + header."""

    stream: bytes
    lo: int  # alphabet offset: symbol = decoded index + lo
    counts: np.ndarray | None  # the model's histogram (range coder), None for zstd
    bits: int


class EntropyCoder(Protocol):
    name: str

    def encode(self, q: np.ndarray) -> Coded: ...

    def decode(self, coded: Coded, n: int) -> np.ndarray: ...

    def estimate_bits(self, q: np.ndarray) -> float: ...


def _alphabet(q: np.ndarray) -> tuple[int, np.ndarray]:
    lo = int(q.min())
    return lo, np.bincount((q - lo).ravel())


def _table_bits(counts: np.ndarray) -> int:
    """Counts stored with a fixed width: alphabet offset + size + width + one field per symbol."""
    width = max(1, int(counts.max()).bit_length())
    return 3 * HEADER_BITS + width * counts.size


def empirical_entropy_bits(q: np.ndarray) -> float:
    _, counts = _alphabet(q)
    p = counts[counts > 0] / q.size
    return float(-(counts[counts > 0] * np.log2(p)).sum())


@dataclass(frozen=True)
class RangeCoder:
    """constriction's range coder (queue semantics) with one categorical model per tensor, fitted to
    the tensor's own symbol histogram. The decoder rebuilds the model from the stored counts, which
    are counted in ``bits`` at a fixed width per symbol of the alphabet."""

    name: str = "range"

    def _model(self, counts: np.ndarray):
        import constriction  # its submodules are attributes, not importable modules

        return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)

    def encode(self, q: np.ndarray) -> Coded:
        import constriction

        lo, counts = _alphabet(q)
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode((q - lo).ravel().astype(np.int32), self._model(counts))
        words = enc.get_compressed()
        return Coded(words.tobytes(), lo, counts, 32 * words.size + _table_bits(counts) + HEADER_BITS)

    def decode(self, coded: Coded, n: int) -> np.ndarray:
        import constriction

        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(coded.stream, dtype=np.uint32).copy())
        return dec.decode(self._model(coded.counts), n).astype(np.int64) + coded.lo

    def estimate_bits(self, q: np.ndarray) -> float:
        _, counts = _alphabet(q)
        return empirical_entropy_bits(q) + _table_bits(counts) + HEADER_BITS


@dataclass(frozen=True)
class ZstdCoder:
    """zstd (level 19) on the symbols as bytes (uint8 when the alphabet fits, else uint16): the floor
    a general-purpose compressor gives. Its frame header is part of the payload."""

    name: str = "zstd"
    level: int = 19

    def encode(self, q: np.ndarray) -> Coded:
        import zstandard

        lo = int(q.min())
        span = int(q.max()) - lo
        dtype = np.uint8 if span < 256 else np.uint16
        raw = (q - lo).ravel().astype(dtype).tobytes()
        z = zstandard.ZstdCompressor(level=self.level).compress(raw)
        return Coded(z, lo, None, 8 * len(z) + 2 * HEADER_BITS)  # header: offset + symbol width

    def decode(self, coded: Coded, n: int) -> np.ndarray:
        import zstandard

        raw = zstandard.ZstdDecompressor().decompress(coded.stream, max_output_size=2 * n)
        dtype = np.uint8 if len(raw) == n else np.uint16
        return np.frombuffer(raw, dtype=dtype).astype(np.int64) + coded.lo

    def estimate_bits(self, q: np.ndarray) -> float:
        return empirical_entropy_bits(q) + 2 * HEADER_BITS


CODERS: dict[str, Callable[[], EntropyCoder]] = {"range": RangeCoder, "zstd": ZstdCoder}

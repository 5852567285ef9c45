"""benchmarks/peers: the Q1_0/Q2_0 dequantizers against packing done here from the format, and the
report's clause tables on made-up rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS / "llamacpp"))

from gguf_files import dequantize_q1_0, dequantize_q2_0  # noqa: E402


def _peers_report():
    """benchmarks/peers/report.py under its own name (benchmarks/rd has a report.py too)."""
    spec = importlib.util.spec_from_file_location("peers_report", PEERS / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_REPORT = _peers_report()
strongest_peer, versus_llamacpp = _REPORT.strongest_peer, _REPORT.versus_llamacpp


def _pack(d: np.ndarray, codes: np.ndarray, per_byte: int) -> np.ndarray:
    """Blocks of an fp16 scale then codes packed ``per_byte`` to a byte, lowest bits first."""
    width = 8 // per_byte
    c = codes.reshape(len(d), -1, per_byte).astype(np.uint8) << (width * np.arange(per_byte, dtype=np.uint8))
    return np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2), c.sum(axis=2, dtype=np.uint8)], axis=1)


def test_q2_0_dequantizes_codes_to_minus_one_to_two_steps() -> None:
    rng = np.random.default_rng(0)
    rows, blocks = 3, 4
    d = rng.uniform(0.01, 1, rows * blocks).astype(np.float16).astype(np.float32)
    codes = rng.integers(0, 4, (rows * blocks, 64))
    raw = _pack(d, codes, 4).reshape(rows, -1)  # a row of 4 blocks: 4 x 18 bytes
    assert raw.shape == (rows, 72)
    out = dequantize_q2_0(raw)
    assert out.shape == (rows, 256)
    np.testing.assert_array_equal(out.reshape(-1, 64), (codes - 1) * d[:, None])


def test_q1_0_dequantizes_bits_to_signs() -> None:
    rng = np.random.default_rng(1)
    d = rng.uniform(0.01, 1, 5).astype(np.float16).astype(np.float32)
    bits = rng.integers(0, 2, (5, 128))
    out = dequantize_q1_0(_pack(d, bits, 8).reshape(1, -1))
    assert out.shape == (1, 640)
    np.testing.assert_array_equal(out.reshape(5, 128), np.where(bits == 1, d[:, None], -d[:, None]))


def _row(peer: str, setting: str, bpp: float, ppl: float) -> dict:
    return {"peer": peer, "setting": setting, "bpp": str(bpp), "perplexity": str(ppl), "decoder_bpw": "1"}


ROWS = [
    _row("llama.cpp", "Q2_0", 3.6, 500.0),
    _row("llama.cpp", "Q2_K imatrix", 5.1, 70.0),
    _row("gptq", "gptq b=2", 3.4, 300.0),
    _row("llmcodec", "default bpw=3.5", 3.5, 100.0),
    _row("llmcodec", "default bpw=2.5", 2.5, 400.0),
]


def test_versus_llamacpp_takes_the_best_llmcodec_row_at_or_below_each_file() -> None:
    out = "\n".join(versus_llamacpp(ROWS))
    assert "| Q2_0 | 3.600 | 500.00 | 100.00 | 3.500 | 0.200 | yes |" in out
    assert "| Q2_K imatrix | 5.100 | 70.00 | 100.00 | 3.500 | 1.429 | **no** |" in out
    assert "holds for 1 of the 2 llama.cpp files" in out


def test_versus_llamacpp_says_when_a_lost_file_restores_the_source_model() -> None:
    rows = [*ROWS, _row("llama.cpp", "Q4_1", 5.7, 50.03), _row("llama.cpp", "Q5_K_S imatrix", 6.4, 50.5)]
    out = "\n".join(versus_llamacpp(rows, ref=50.0))
    assert "| Q4_1 | 5.700 | 50.03 | 100.00 | 3.500 | 1.999 | **no**: the file restores the source model" in out
    assert "| Q5_K_S imatrix | 6.400 | 50.50 | 100.00 | 3.500 | 1.980 | **no** |" in out  # excess 0.5: a real loss
    assert "holds for 1 of the 4 llama.cpp files" in out and "1 of the others restore the source model" in out


def test_strongest_peer_compares_excess_over_the_uncompressed_model() -> None:
    out = "\n".join(strongest_peer(ROWS, ref=50.0))
    # at 3.4 bits only GPTQ-2 (excess 250) among calibrated peers; llmcodec's best there has excess 350
    assert "| 3.400 | gptq b=2 | 3.400 | 250.0 | default bpw=2.5 | 2.500 | 350.0 | 1.40 | **no** |" in out
    # at 5.1 the strongest is Q2_K imatrix (excess 20); llmcodec's best below it has excess 50
    assert "| 5.100 | llama.cpp Q2_K imatrix | 5.100 | 20.0 | default bpw=3.5 | 3.500 | 50.0 | 2.50 | **no** |" in out
    assert "8.00x the uncompressed 50.00: **does not hold**" in out


def test_strongest_peer_needs_the_uncompressed_row_and_says_when_nothing_is_small_enough() -> None:
    assert strongest_peer(ROWS, None) == []
    out = "\n".join(strongest_peer([r for r in ROWS if r["setting"] != "default bpw=2.5"], 50.0))
    assert "| 3.400 | gptq b=2 | 3.400 | 250.0 | none measured | — | — | — | not shown |" in out


def test_llmcodec_ceiling_names_budgets_that_landed_short() -> None:
    rows = [*ROWS, _row("llmcodec", "default bpw=5.0 include_embeddings", 4.9, 60.0)]
    text = _REPORT.llmcodec_ceiling(rows)
    assert "2.50-4.90 bits per parameter" in text
    assert "`--bpw 5.0` landed at 4.900" in text
    assert "`--bpw 3.5`" not in text
    assert "No llmcodec row" in _REPORT.llmcodec_ceiling(ROWS[:3])


def test_strongest_peer_reports_the_data_aware_mode_apart_from_the_default() -> None:
    rows = [*ROWS, _row("llmcodec data-aware", "data-aware bpw=3.0", 2.9, 60.0)]
    out = "\n".join(strongest_peer(rows, 50.0, "llmcodec data-aware"))
    # at 3.4 bits: GPTQ-2's excess 250 against the data-aware row's 10
    assert "| 3.400 | gptq b=2 | 3.400 | 250.0 | data-aware bpw=3.0 | 2.900 | 10.0 | 0.04 | yes |" in out
    assert "llmcodec data-aware's best" in out
    # the default's table does not take the data-aware row
    assert "data-aware" not in "\n".join(strongest_peer(rows, 50.0))

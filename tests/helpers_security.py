"""Helpers for the security tests: crafted artifacts and fake FFmpeg executables."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import llmcodec
from llmcodec.codecs import base

REAL_FFMPEG_ARGS = ("-encoders", "-decoders", "-version")


def small_state(rows: int = 64, cols: int = 64, n: int = 1) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    return {
        f"m{i}.weight": torch.from_numpy((rng.standard_normal((rows, cols)) * 0.02).astype(np.float32))
        for i in range(n)
    }


def make_artifact(path: Path, state=None, config=None, files=None, qp: int = 35) -> Path:
    art = llmcodec.compress_state_dict(state or small_state(), llmcodec.CompressSettings(qp=qp), config, files)
    llmcodec.save(art, path)
    return path


def load_pieces(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["llmcodec"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_pieces(path: Path, tensors: dict[str, torch.Tensor], header: dict, text: str | None = None) -> Path:
    """Write a crafted artifact with a header checksum that matches (an attacker can compute it)."""
    text = json.dumps(header) if text is None else text
    save_file(tensors, str(path), metadata={"llmcodec": text, "llmcodec.sha256": sha(text.encode())})
    return path


def set_bitstream(tensors: dict, header: dict, name: str, data: bytes) -> None:
    tensors[f"{name}::bitstream"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    header["tensors"][name]["sha256"]["bitstream"] = sha(data)


def set_file(tensors: dict, header: dict, fname: str, data: bytes) -> None:
    tensors[f"file::{fname}"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    header["model"]["files"][fname] = sha(data)


def fake_ffmpeg(folder: Path, body: str, answer_probes: bool = True) -> Path:
    """A shell script standing in for FFmpeg: ``body`` runs for encodes and decodes; with
    ``answer_probes`` it answers -encoders/-decoders/-version like the real one (from the real one's output)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh"]
    if answer_probes:
        real = base.ffmpeg_exe()
        lines.append('for a; do case "$a" in -encoders|-decoders|-version) exec ' + f'"{real}" "$@";; esac; done')
    lines.append(body)
    exe = folder / "ffmpeg"
    exe.write_text("\n".join(lines) + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def use_ffmpeg(monkeypatch, exe: Path) -> None:
    """Point llmcodec at ``exe`` the way a user would: imageio-ffmpeg's IMAGEIO_FFMPEG_EXE."""
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))
    base.ffmpeg_exe.cache_clear()
    base.ffmpeg_capabilities.cache_clear()

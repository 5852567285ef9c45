"""The resume cache: finished encodes on disk next to the output, in a folder llmcodec owns."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from . import outputs


class WorkDirError(ValueError):
    """``OUT.work`` exists but is not a work folder llmcodec made (it is never deleted then)."""


class WorkDir:
    """Finished encodes on disk next to the output, so an interrupted run can resume.

    Each bitstream is stored under a hash of everything that determines it: llmcodec and FFmpeg
    versions, codec and profile, quantization group, the matrix content, the QP and whether it is
    a rate probe. Rate control then repeats its decisions from the stored sizes, so a resumed run
    writes the same artifact as an uninterrupted one. Files are written under a temporary name
    and renamed, so a kill leaves no half-written entry; each entry carries the SHA-256 of its
    bytes, and a damaged one is named, dropped and encoded again.

    The folder holds a marker file (``MARKER``) from the moment it is made: a folder of that name
    without one is the user's, and is refused, never deleted; a symbolic link there is refused too.
    """

    MARKER = ".llmcodec-work"
    _MAGIC = b"llmcodec-work 1\n"

    def __init__(self, path: str | os.PathLike, resume: bool = False) -> None:
        self.path = Path(path)
        self.hits = 0
        self.stored = 0
        self.damaged: list[str] = []
        self._check()
        if self.path.exists():
            if resume:
                self._clean_temporaries()
            else:
                self.remove()  # a stale run of ours: start from scratch unless asked to resume

    @classmethod
    def for_output(cls, out: str | os.PathLike, resume: bool = False) -> WorkDir:
        out = Path(out)
        return cls(out.with_name(out.name + ".work"), resume)

    def _check(self) -> None:
        p = self.path
        if p.is_symlink():
            raise WorkDirError(f"{p} is a symbolic link; llmcodec keeps its work files there only in a folder "
                               "it makes itself: remove the link or choose another output name")
        if p.exists() and not p.is_dir():
            raise WorkDirError(f"{p} exists and is not a folder; move it away or choose another output name")
        if p.is_dir() and not (p / self.MARKER).is_file():
            raise WorkDirError(f"{p} exists but llmcodec did not make it (no {self.MARKER} inside); it is left "
                               "untouched: move it away or choose another output name")

    def _make(self) -> None:
        if not self.path.is_dir():
            self._check()
            self.path.mkdir(parents=True, exist_ok=True)
        marker = self.path / self.MARKER
        if not marker.is_file():
            marker.write_text("made by llmcodec compress: finished encodes for --resume; safe to delete\n")

    def _clean_temporaries(self) -> None:
        # temporaries of a killed run (never renamed into place), not links or folders
        for f in self.path.glob(".*.tmp"):
            if f.is_file() and not f.is_symlink():
                f.unlink(missing_ok=True)

    def get(self, key: str) -> bytes | None:
        f = self.path / f"{key}.bin"
        if f.is_symlink() or not f.is_file():
            return None
        data = f.read_bytes()
        n = len(self._MAGIC) + 64
        body = data[n:]
        if data[: len(self._MAGIC)] != self._MAGIC or data[len(self._MAGIC) : n].decode(errors="replace") != (
            hashlib.sha256(body).hexdigest()
        ):
            self.damaged.append(f.name)
            logging.getLogger("llmcodec").warning(
                "%s: damaged resume-cache entry in %s (checksum mismatch); encoding it again", f.name, self.path
            )
            f.unlink(missing_ok=True)
            return None
        self.hits += 1
        return body

    def put(self, key: str, data: bytes) -> None:
        self._make()  # made on first use: bad input leaves nothing behind
        with outputs.replacing(self.path / f"{key}.bin", ".") as tmp:
            tmp.write_bytes(self._MAGIC + hashlib.sha256(data).hexdigest().encode() + data)
        self.stored += 1

    def remove(self) -> None:
        """Delete the folder, only if it is ours (a real folder with the marker)."""
        p = self.path
        if p.is_symlink() or not p.is_dir() or not (p / self.MARKER).is_file():
            return
        shutil.rmtree(p, ignore_errors=True)  # rmtree does not follow links inside the folder

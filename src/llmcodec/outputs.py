"""Where outputs go: checked before any work, written under temporary names, left with the user's modes.

``check_output_file`` / ``check_output_folder`` find an unusable output path (a folder where a file
goes, a file where a folder goes, a symbolic link, a folder that cannot be written) before anything
is encoded or decoded. Temporary names carry the writer's process id, so a later run can tell the
leftovers of a killed writer (``clean_stale``) from a writer still at work.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot be written; the message says why."""


def _writable_folder(folder: Path, what: str) -> None:
    """``folder`` (or the nearest existing ancestor, which would hold it) accepts new files."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{probe} is a dangling symbolic link: {what} cannot be written under it")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{probe} is a file, not a folder: {what} cannot be written under it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".llmcodec-probe.", dir=probe)
    except OSError as e:
        raise OutputError(f"cannot write in {probe} ({e.strerror or e}): {what} would fail there") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | os.PathLike, what: str = "the artifact") -> Path:
    """A file path that a write can replace: not a folder, not a link, in a folder that can be written."""
    p = Path(path)
    if p.is_symlink():
        raise OutputError(f"{p} is a symbolic link; give the path of a regular file for {what}")
    if p.is_dir():
        raise OutputError(f"{p} is a folder; give a file name for {what}")
    if p.exists() and not p.is_file():
        raise OutputError(f"{p} exists and is not a regular file")
    _writable_folder(p.parent, what)
    return p


def check_output_folder(path: str | os.PathLike, what: str = "the restored model folder") -> Path:
    """A folder path that does not exist yet or is an empty folder, under a folder that can be written."""
    p = Path(path)
    if p.is_symlink():
        raise OutputError(f"{p} is a symbolic link; give a new folder for {what}")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p} is a file; give a new folder for {what}")
    if p.is_dir() and any(p.iterdir()):
        raise OutputError(f"{p}: output folder exists and is not empty")
    _writable_folder(p.parent, what)
    return p


def temp_prefix(name: str) -> str:
    """Prefix of a hidden temporary next to ``name``: ``.NAME.PID.`` (see ``clean_stale``)."""
    return f".{name}.{os.getpid()}."


@contextlib.contextmanager
def replacing(path: Path, prefix: str) -> Iterator[Path]:
    """A new temporary file next to ``path`` (named ``prefix*.tmp``) for the block to fill; renamed over
    ``path`` when the block ends, deleted if it raises: ``path`` is never left half-written."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: Path, name: str, sep: str = ".") -> list[Path]:
    """Remove the temporaries of ``name`` in ``folder`` left by writers that no longer run (kill -9,
    a power cut); a running writer's are kept. Returns what was removed. Temporaries are named
    ``.NAME.PID.*`` (``temp_prefix``) or, with ``sep="-"``, ``NAME-PID-*``."""
    import shutil

    removed = []
    pattern = f".{glob.escape(name)}.*" if sep == "." else f"{glob.escape(name)}-*"
    for f in Path(folder).glob(pattern):
        pid = f.name[len(name) + (2 if sep == "." else 1) :].split(sep, 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if f.is_symlink() or f.is_file():
            f.unlink(missing_ok=True)
        elif f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        removed.append(f)
    return removed


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def honour_umask(path: Path) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the modes a plain
    open()/mkdir() would have had."""
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~umask())


def describe_os_error(e: OSError) -> str:
    """An OSError as a one-line message naming the path and, for a full disk, what to do."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"{where}no space left on the device; free some space or write elsewhere (nothing was left behind)"
    if e.errno == errno.EDQUOT:
        return f"{where}disk quota exceeded; free some space or write elsewhere"
    return f"{where}{e.strerror or e}"

"""Classes 4, 7, 8, 9 and 11 of issue #33: compress never deletes a folder it did not make, output
paths and option values are checked before any work (a message, never a traceback), a failing
decode stops the others, leftovers of killed runs are cleaned, the resume cache is checksummed,
and outputs honour the umask."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_security import fake_ffmpeg, make_artifact, small_state, use_ffmpeg
from safetensors.torch import save_file

import llmcodec
from llmcodec import artifact, limits
from llmcodec.cli import main
from llmcodec.codecs import base, registry
from llmcodec.codecs.base import CodecError
from llmcodec.codecs.vvc import VVC
from llmcodec.workdir import WorkDir

pytestmark = pytest.mark.usefixtures("fresh_ffmpeg_cache")  # tests point llmcodec at fake FFmpegs


@pytest.fixture
def model_dir(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    save_file(small_state(n=2), str(src / "model.safetensors"))
    return src


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k", ro: bool = False):
    """A small tmpfs at ``path`` where the test may mount one (root); None elsewhere."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    ok = shutil.which("mount") and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                                  capture_output=True).returncode == 0
    try:
        yield path if ok else None
    finally:
        if ok:
            subprocess.run(["umount", str(path)], capture_output=True)


# -- class 4: never delete a folder llmcodec did not make ---------------------------------------------------


def test_users_own_work_folder_is_refused_and_kept(model_dir, tmp_path, capsys):
    out = tmp_path / "o.llmc"
    mine = tmp_path / "o.llmc.work"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["compress", str(model_dir), str(out), "--qp", "30", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "llmcodec did not make it" in err and "Traceback" not in err
    assert (mine / "thesis.tex").read_text() == "years of work" and not out.exists()


def test_symlink_work_folder_is_refused_and_its_target_kept(model_dir, tmp_path, capsys):
    target = tmp_path / "precious"
    target.mkdir()
    (target / WorkDir.MARKER).write_text("")  # even a marker behind a link is not followed
    (target / "data").write_text("keep")
    (tmp_path / "o.llmc.work").symlink_to(target)
    assert main(["compress", str(model_dir), str(tmp_path / "o.llmc"), "--qp", "30", "--quiet"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert (target / "data").read_text() == "keep"


def test_a_file_named_like_the_work_folder_is_refused(model_dir, tmp_path, capsys):
    (tmp_path / "o.llmc.work").write_text("mine")
    assert main(["compress", str(model_dir), str(tmp_path / "o.llmc"), "--qp", "30", "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert (tmp_path / "o.llmc.work").read_text() == "mine"


def test_own_work_folder_is_marked_and_removed(tmp_path):
    w = WorkDir(tmp_path / "x.work")
    w.put("k", b"data")
    assert (w.path / WorkDir.MARKER).is_file()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("keep")
    (w.path / "link").symlink_to(outside)
    WorkDir(tmp_path / "x.work")  # a new run (no resume) starts from scratch: removes ours
    assert not w.path.exists() and (outside / "f").read_text() == "keep"


# -- class 9: leftovers and the resume cache ------------------------------------------------------------------


def test_damaged_resume_entries_are_named_dropped_and_encoded_again(model_dir, tmp_path, caplog):
    out = tmp_path / "o.llmc"
    work = WorkDir.for_output(out)
    art = llmcodec.api.compress_source(llmcodec.modelio.load(model_dir), llmcodec.CompressSettings(qp=30), work=work)
    ref = artifact.write(tmp_path / "ref.llmc", art, "x")
    entries = sorted(work.path.glob("*.bin"))
    assert entries
    entries[0].write_bytes(b"\0" * entries[0].stat().st_size)  # zeroed
    entries[-1].write_bytes(b"garbage")
    (work.path / ".abc.tmp").write_bytes(b"half-written")  # a killed run's temporary
    work2 = WorkDir.for_output(out, resume=True)
    assert not (work2.path / ".abc.tmp").exists()
    art2 = llmcodec.api.compress_source(llmcodec.modelio.load(model_dir), llmcodec.CompressSettings(qp=30), work=work2)
    assert sorted(work2.damaged) == sorted({entries[0].name, entries[-1].name})
    assert "damaged resume-cache entry" in caplog.text and "o.llmc.work" in caplog.text
    assert artifact.write(tmp_path / "again.llmc", art2, "x") == ref  # the same artifact as before


def test_stale_temporaries_of_a_killed_writer_are_cleaned(tmp_path):
    out = tmp_path / "a.llmc"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a.llmc.{dead.pid}.x1.tmp"
    stale.write_bytes(b"half")
    live = tmp_path / f".a.llmc.{os.getppid()}.x2.tmp"  # a running writer's: kept
    live.write_bytes(b"busy")
    make_artifact(out)
    assert not stale.exists() and live.exists() and out.is_file()
    stale_dir = tmp_path / f".restored.{dead.pid}.abc"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x")
    from llmcodec.outputs import clean_stale

    assert clean_stale(tmp_path, "restored") == [stale_dir] and not stale_dir.exists()


def test_sigterm_removes_the_temporary_artifact(model_dir, tmp_path):
    real = base.ffmpeg_exe()
    marker = tmp_path / "encoding"
    exe = fake_ffmpeg(tmp_path / "bin", f'touch "{marker}"\nexec "{real}" "$@"')
    out = tmp_path / "o.llmc"
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": str(exe)}
    # many small matrices: SIGTERM comes while encodes are still running
    big = tmp_path / "big"
    big.mkdir()
    save_file(small_state(n=12), str(big / "model.safetensors"))
    proc = subprocess.Popen([sys.executable, "-m", "llmcodec.cli", "compress", str(big), str(out), "--qp", "30",
                             "--quiet", "--workers", "1"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not marker.exists() and proc.poll() is None and time.time() - t0 < 60:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 143 and "terminated" in err and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".o.llmc.*"))


# -- class 7 and 8: clear messages, checked before any work ------------------------------------------------


class CountingVVC(VVC):
    name = "counting-vvc"
    encodes = 0

    def encode(self, *a, **k):
        type(self).encodes += 1
        return super().encode(*a, **k)


@pytest.mark.parametrize("kind,msg", [
    ("folder", "is a folder"), ("symlink", "symbolic link"), ("under-file", "is a file, not a folder"),
])
def test_unusable_artifact_path_is_found_before_encoding(model_dir, tmp_path, monkeypatch, capsys, kind, msg):
    CountingVVC.encodes = 0
    monkeypatch.setitem(registry.CODECS, "vvc", CountingVVC)
    out = tmp_path / "o.llmc"
    if kind == "folder":
        out.mkdir()
    elif kind == "symlink":
        (tmp_path / "real.llmc").write_text("user data")
        out.symlink_to(tmp_path / "real.llmc")
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "o.llmc"
    assert main(["compress", str(model_dir), str(out), "--qp", "30", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert CountingVVC.encodes == 0
    if kind == "symlink":
        assert (tmp_path / "real.llmc").read_text() == "user data"


def test_read_only_output_folder_is_found_before_encoding(model_dir, tmp_path, monkeypatch, capsys):
    CountingVVC.encodes = 0
    monkeypatch.setitem(registry.CODECS, "vvc", CountingVVC)
    with tmpfs(tmp_path / "ro", ro=True) as ro:
        if ro is None:  # not root: a folder without write permission, which root would ignore
            ro = tmp_path / "ro"
            ro.chmod(0o555)
            if os.access(ro, os.W_OK):
                pytest.skip("neither a read-only tmpfs nor a read-only folder can be made here")
        assert main(["compress", str(model_dir), str(ro / "o.llmc"), "--qp", "30", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "cannot write in" in err and "Traceback" not in err
        assert CountingVVC.encodes == 0
        assert main(["decompress", str(make_artifact(tmp_path / "a.llmc")), str(ro / "r"), "--quiet"]) == 2
        assert "cannot write in" in capsys.readouterr().err


def test_disk_full_is_a_message_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    art_path = make_artifact(tmp_path / "a.llmc", small_state(rows=256, cols=256, n=2))
    with tmpfs(tmp_path / "small", size="64k") as small:
        if small is None:  # simulate: the write fails with ENOSPC half-way
            small = tmp_path / "small"
            real = artifact.write_safetensors

            def full(path, tensors, metadata):
                real(path, tensors, metadata)
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            monkeypatch.setattr(artifact, "write_safetensors", full)
        src = tmp_path / "src"
        src.mkdir()
        save_file(llmcodec.load_state_dict(art_path), str(src / "model.safetensors"))
        assert main(["compress", str(src), str(small / "o.llmc"), "--qp", "30", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "no space left" in err and "Traceback" not in err
        assert list(small.iterdir()) == [] or [p.name for p in small.iterdir()] == ["o.llmc.work"]


@pytest.mark.parametrize("argv,msg", [
    (["compress", "M", "o.llmc", "--only", "(["], "not a valid regular expression"),
    (["bench", "M", "--only", "(["], "not a valid regular expression"),
    (["compress", "M", "o.llmc", "--edge-octaves", "inf"], "not a finite number"),
    (["compress", "M", "o.llmc", "--kv-sharing", "nan"], "not a finite number"),
    (["compress", "M", "o.llmc", "--alpha", "-1"], "out of range"),
    (["compress", "M", "o.llmc", "--compand", "0"], "out of range"),
    (["compress", "M", "o.llmc", "--bpw", "inf"], "not a finite number"),
    (["compress", "M", "o.llmc", "--bpw", "0"], "out of range"),
    (["compress", "M", "o.llmc", "--qp", "999"], "outside the vvc codec's range"),
    (["compress", "M", "o.llmc", "--qp", "-5"], "outside the vvc codec's range"),
    (["compress", "M", "o.llmc", "--group", "0"], "out of range"),
    (["compress", "M", "o.llmc", "--workers", "-1"], "out of range"),
    (["compress", "M", "o.llmc", "--error-cap", "0"], "out of range"),
    (["compress", "M", "o.llmc", "--edge-layers", "-2"], "out of range"),
    (["eval", "M", "--window", "0"], "out of range"),
    (["eval", "M", "--window", "1"], "out of range"),
    (["eval", "M", "--windows", "0"], "out of range"),
    (["bench", "M", "--window", "0"], "out of range"),
    (["bench", "M", "--windows", "-3"], "out of range"),
    (["bench", "M", "--tensors", "0"], "out of range"),
    (["bench", "M", "--workers", "-1"], "out of range"),
    (["verify", "a.llmc", "--workers", "-1"], "out of range"),
])
def test_option_values_are_checked_at_parse_time(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


@pytest.mark.parametrize("kw,msg", [
    ({"alpha": float("nan")}, "finite"), ({"edge_octaves": float("inf")}, "finite"),
    ({"kv_sharing": float("nan")}, "finite"), ({"alpha": -1.0}, "alpha"), ({"qp": 999}, "outside"),
    ({"only": "(["}, "regular expression"), ({"group": 0}, "group"),
])
def test_the_api_applies_the_same_rules(kw, msg):
    with pytest.raises(ValueError, match=msg):
        llmcodec.CompressSettings(**kw)


def test_a_failing_decode_stops_the_others(tmp_path, monkeypatch):
    path = make_artifact(tmp_path / "a.llmc", small_state(n=6))
    real = base.ffmpeg_exe()
    # the first two decodes fail at once (a batch, then its first tensor alone), every other one hangs
    exe = fake_ffmpeg(tmp_path / "bin", f'if mkdir "{tmp_path}/first" 2>/dev/null || mkdir "{tmp_path}/second" '
                      '2>/dev/null; then echo broken >&2; exit 1; fi\n'
                      "exec sleep 60")
    assert real
    use_ffmpeg(monkeypatch, exe)
    monkeypatch.setattr(limits, "MAX_DECODE_SECONDS", 60.0)
    t0 = time.monotonic()
    with pytest.raises(CodecError, match="broken"):
        llmcodec.load_state_dict(path, workers=3)
    assert time.monotonic() - t0 < 15  # not 60 s per hung decode


def test_decompress_refuses_an_unusable_folder_or_config_before_decoding(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(llmcodec.api, "restore_state_dict", lambda *a, **k: calls.append(1))
    path = make_artifact(tmp_path / "a.llmc")
    (tmp_path / "file").write_text("x")
    assert main(["decompress", str(path), str(tmp_path / "file"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["decompress", str(path), str(tmp_path / "r"), "--quiet"]) == 2  # no config in the artifact
    assert "no model config" in capsys.readouterr().err
    assert calls == []


# -- class 11: modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_honour_the_umask(tmp_path, mask, tiny_llama):
    old = os.umask(mask)
    try:
        path = make_artifact(tmp_path / "a.llmc")
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
        src = llmcodec.modelio.load(tiny_llama)
        art = llmcodec.api.compress_source(src, llmcodec.CompressSettings(qp=40, only=r"layers\.0\.self_attn\.q"))
        llmcodec.save(art, tmp_path / "t.llmc")
        out = llmcodec.api.decompress(tmp_path / "t.llmc", tmp_path / "restored")
        assert out.stat().st_mode & 0o777 == 0o777 & ~mask
        assert (out / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask
    finally:
        os.umask(old)


def test_restored_folder_config_is_the_headers(tmp_path, tiny_llama):
    src = llmcodec.modelio.load(tiny_llama)
    art = llmcodec.api.compress_source(src, llmcodec.CompressSettings(qp=40, only=r"layers\.0\.mlp\.up"))
    llmcodec.save(art, tmp_path / "t.llmc")
    out = llmcodec.api.decompress(tmp_path / "t.llmc", tmp_path / "r")
    import json

    written = json.loads((out / "config.json").read_text())
    model, _ = llmcodec.load_model(tmp_path / "t.llmc")
    for k in ("hidden_act", "hidden_size", "num_hidden_layers", "vocab_size", "rms_norm_eps"):
        assert written[k] == art.config[k] == getattr(model.config, k)
    assert np.isfinite(model.model.layers[0].mlp.up_proj.weight.detach().numpy()).all()
    _ = torch


def test_encoder_temporaries_of_a_killed_process_are_cleaned(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base._clean_stale_temporaries.cache_clear()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"llmcodec-{dead.pid}-abc"
    stale.mkdir()
    (stale / "out").write_bytes(b"x")
    other = tmp_path / "llmcodec-notapid"
    other.mkdir()
    codec = VVC()
    assert codec.encode([[np.zeros((64, 64), np.uint16)]], 30, codec.profile(None))
    assert not stale.exists() and other.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["llmcodec-notapid"]
    base._clean_stale_temporaries.cache_clear()


def test_disk_full_during_decompress_is_a_message_and_leaves_nothing(tmp_path, tiny_llama, capsys):
    src = llmcodec.modelio.load(tiny_llama)
    art = llmcodec.api.compress_source(src, llmcodec.CompressSettings(qp=40, only=r"layers\.0\.mlp\.up"))
    llmcodec.save(art, tmp_path / "t.llmc")
    with tmpfs(tmp_path / "small", size="64k") as small:
        if small is None:
            pytest.skip("no tmpfs can be mounted here (the artifact's full-disk test simulates ENOSPC)")
        assert main(["decompress", str(tmp_path / "t.llmc"), str(small / "r"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "no space left" in err.lower() and "Traceback" not in err
        assert list(small.iterdir()) == []

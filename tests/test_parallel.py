"""Parallel encoding gives the same bytes for any worker count; lazy reads; resuming an interrupted run."""

import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import llmcodec
from llmcodec.cli import main
from llmcodec.codecs.base import FFmpegCodec
from llmcodec.compress import CompressSettings, compress_matrices
from llmcodec.executors import LocalExecutor, make_executor
from llmcodec.workdir import WorkDir


def same_file(a, b) -> bool:
    """Byte for byte the same file (the artifact writer's header is canonical)."""
    return Path(a).read_bytes() == Path(b).read_bytes()


def _mats(n=6, seed=3):
    rng = np.random.default_rng(seed)
    return [(f"m{i}", (rng.standard_normal((96 + 32 * i, 128)) * 0.02).astype(np.float32), "float32") for i in range(n)]


def test_worker_count_does_not_change_the_artifact(tiny_llama, tmp_path):
    # one layer keeps it quick; the rest is kept at 16 bits, so the budget is over the coded matrices
    s1 = llmcodec.CompressSettings(bpw=3.0, workers=1, only=r"layers\.0\.", budget="coded")
    s2 = llmcodec.CompressSettings(bpw=3.0, workers=2, only=r"layers\.0\.", budget="coded")
    llmcodec.compress_model(tiny_llama, tmp_path / "a.llmc", s1)
    llmcodec.compress_model(tiny_llama, tmp_path / "b.llmc", s2)
    assert same_file(tmp_path / "a.llmc", tmp_path / "b.llmc")
    assert not (tmp_path / "a.llmc.work").exists()  # the sidecar goes once the artifact is written


def test_lazy_matrices_are_read_in_workers_and_not_kept():
    mats = _mats()
    live: set[int] = set()
    peak = [0]
    threads = set()
    lock = threading.Lock()

    def reader(w):
        def load():
            a = w.copy()
            with lock:
                live.add(id(a))
                peak[0] = max(peak[0], len(live))
                threads.add(threading.current_thread().name)
            weakref.finalize(a, live.discard, id(a))
            return a

        return load

    lazy = [(n, reader(w), d) for n, w, d in mats]
    out = compress_matrices(lazy, CompressSettings(qp=30, workers=2))
    eager = compress_matrices(mats, CompressSettings(qp=30, workers=2))
    assert [c.bitstream for c in out] == [c.bitstream for c in eager]
    assert [c.rel_error for c in out] == [c.rel_error for c in eager]
    assert any(t.startswith("llmcodec") for t in threads)  # jobs read inside pool threads
    assert peak[0] <= 2 + 2  # at most the pool's two jobs plus the two-thread scan, never all six
    assert not live


def test_executor_keeps_order_and_reports_each_job():
    seen = []
    with LocalExecutor(2) as ex:
        assert ex.map(pow, [(2, k) for k in range(10)], lambda i, r: seen.append(i)) == [2**k for k in range(10)]
    assert sorted(seen) == list(range(10))
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("dask")
    with pytest.raises(ValueError, match="--address is for --executor ray"):
        make_executor("local", address="10.0.0.1:6379")


class _Interrupt(Exception):
    pass


def _count_encodes(monkeypatch, fail_after: int | None = None) -> list[int]:
    calls = [0]
    lock = threading.Lock()
    real = FFmpegCodec.encode

    def encode(self, frames, qp, profile):
        with lock:
            if fail_after is not None and calls[0] >= fail_after:
                raise _Interrupt("injected")
            calls[0] += 1
        return real(self, frames, qp, profile)

    monkeypatch.setattr(FFmpegCodec, "encode", encode)
    return calls


@pytest.mark.parametrize(
    "settings",
    [CompressSettings(qp=30, workers=1), CompressSettings(bpw=3.0, workers=2, only=r"layers\.1\.", budget="coded")],
)
def test_resume_skips_finished_encodes_and_writes_the_same_bytes(tiny_llama, tmp_path, monkeypatch, settings):
    full = tmp_path / "full.llmc"
    with monkeypatch.context() as m:
        total = _count_encodes(m)
        llmcodec.compress_model(tiny_llama, full, settings)
    k = total[0] // 2
    out = tmp_path / "resumed.llmc"
    with monkeypatch.context() as m:
        _count_encodes(m, fail_after=k)
        with pytest.raises(_Interrupt):
            llmcodec.compress_model(tiny_llama, out, settings)
    assert not out.exists()  # nothing half-written
    work = WorkDir.for_output(out, resume=True).path
    assert len(list(work.glob("*.bin"))) == k
    with monkeypatch.context() as m:
        again = _count_encodes(m)
        llmcodec.compress_model(tiny_llama, out, settings, resume=True)
    assert again[0] == total[0] - k  # the k finished encodes were not run again
    assert same_file(out, full)
    assert not work.exists()


def test_without_resume_a_stale_work_dir_is_discarded(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "o.llmc"
    stale = tmp_path / "o.llmc.work"
    stale.mkdir()
    (stale / WorkDir.MARKER).write_text("")  # a stale run of llmcodec's own (a user's folder is refused)
    (stale / "junk.bin").write_bytes(b"x")
    calls = _count_encodes(monkeypatch)
    llmcodec.compress_model(tiny_llama, out, CompressSettings(qp=30))
    assert calls[0] == 15 and not stale.exists()  # 14 matrices and the embedding


def test_cli_resume_and_executor_flags(tiny_llama, tmp_path, capsys):
    out = tmp_path / "c.llmc"
    argv = ["compress", str(tiny_llama), str(out), "--qp", "30", "--quiet", "--executor", "local", "--workers", "2"]
    assert main([*argv, "--resume"]) == 0
    assert out.is_file() and not WorkDir.for_output(out).path.exists()
    assert main([*argv[:-2], "--address", "x:1"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err


def test_raw_tensors_of_a_safetensors_model_are_read_only_when_written(tiny_llama, tmp_path):
    from llmcodec.artifact import LazyTensor
    from llmcodec.modelio import load

    src = load(tiny_llama)
    settings = CompressSettings(qp=30)
    art = llmcodec.api.compress_source(src, settings)
    assert art.raw and all(isinstance(t, LazyTensor) for t in art.raw.values())  # nothing raw kept in memory
    eager = llmcodec.api.compress_state_dict(dict(src.items()), settings, src.config, src.files)
    assert not any(isinstance(t, LazyTensor) for t in eager.raw.values())
    eager.checkpoint = art.checkpoint  # a state dict has no on-disk layout; the folder's is recorded
    llmcodec.api.save(art, tmp_path / "lazy.llmc")
    llmcodec.api.save(eager, tmp_path / "eager.llmc")
    assert same_file(tmp_path / "lazy.llmc", tmp_path / "eager.llmc")
    back = llmcodec.artifact.read(tmp_path / "lazy.llmc")
    for name, t in back.raw.items():  # float32 norms stored as fp16
        assert t.dtype == torch.float16 and torch.equal(t, src.get(name).half())
    restored = llmcodec.api.restore_state_dict(art)  # also straight from the unsaved artifact
    assert all(restored[n].dtype == torch.float32 and torch.equal(restored[n], t.float()) for n, t in back.raw.items())

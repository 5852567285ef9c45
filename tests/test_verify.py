"""`llmcodec verify`: checksums, decoding and (optionally) errors against the source, writing nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import llmcodec
from llmcodec import artifact
from llmcodec.cli import main
from llmcodec.codecs.base import CodecError
from llmcodec.verify import verify

CODED = "model.layers.0.mlp.down_proj.weight"
NORM = "model.layers.1.input_layernorm.weight"


@pytest.fixture(scope="module")
def compressed(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "tiny.llmc"
    assert main(["compress", str(tiny_llama), str(out), "--qp", "30", "--quiet"]) == 0
    return out


def _offsets(path, key):
    data = path.read_bytes()
    hsize = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8 : 8 + hsize])[key]["data_offsets"]
    return 8 + hsize + start, 8 + hsize + end


def _listing(folder):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_verify_ok_and_matches_source(compressed, tiny_llama, capsys):
    before = _listing(compressed.parent)
    assert main(["verify", str(compressed), "--against", str(tiny_llama), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and CODED in out and f"matches {tiny_llama}" in out
    assert _listing(compressed.parent) == before  # nothing written next to the artifact
    rep = verify(compressed, tiny_llama)
    coded = [t for t in rep.tensors if t.kind == "coded"]
    assert len(coded) == 15 and rep.ok  # 14 decoder matrices and the embedding
    src = load_file(str(tiny_llama / "model.safetensors"))
    for t in coded:
        # measured against the source = recorded at compression; bits per weight from the header
        assert t.rel_error == pytest.approx(t.recorded_rel_error, rel=1e-3)
        assert 0 < t.rel_error < 0.5 and t.max_abs_error > 0 and 0 < t.bpw < 16
        assert t.max_abs_error <= float(src[t.name].abs().max()) * 2
    raw = {t.name: t for t in rep.tensors if t.kind == "raw"}
    assert raw[NORM].max_abs_error == 0.0


def test_verify_without_source(compressed, capsys):
    assert main(["verify", str(compressed), "--quiet"]) == 0
    assert "(checksums, header, decoding)" in capsys.readouterr().out


def test_verify_names_corrupt_tensor(compressed, tmp_path, capsys):
    bad = tmp_path / "bad.llmc"
    data = bytearray(compressed.read_bytes())
    start, end = _offsets(compressed, f"{CODED}::bitstream")
    data[(start + end) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    assert main(["verify", str(bad), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "verification failed" in err and "checksum mismatch" in err and f"'{CODED}' (bitstream)" in err
    # the loaders refuse it the same way
    with pytest.raises(artifact.ArtifactError, match=f"'{CODED}' \\(bitstream\\)"):
        llmcodec.load_state_dict(bad)
    with pytest.raises(artifact.ArtifactError, match="checksum mismatch"):
        llmcodec.decompress(bad, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_verify_against_a_different_model(compressed, tiny_llama, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_llama, other)
    state = load_file(str(other / "model.safetensors"))
    state[CODED] = state[CODED] * 1.5  # a coded tensor changed
    state[NORM] = state[NORM] + 1e-3  # a kept-exactly tensor changed
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    assert main(["verify", str(compressed), "--against", str(other), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"tensor '{CODED}': relative error" in err and "was recorded at compression" in err
    assert f"tensor '{NORM}': stored as torch.float16, but differs" in err  # float32 norms kept at 16 bits
    rep = verify(compressed, other)
    assert {t.name for t in rep.tensors if t.problem} == {CODED, NORM}


def test_undecodable_stream_with_valid_checksum_is_named(compressed, tmp_path, capsys):
    """A stream that passes its checksum but does not decode to its layout (an encoder bug at write time)."""
    art = artifact.read(compressed)
    other = "model.layers.0.self_attn.k_proj.weight"  # a different shape: its stream decodes to other frames
    assert art.coded[other].layout != art.coded[CODED].layout
    art.coded[CODED].bitstream = art.coded[other].bitstream
    bad = tmp_path / "swapped.llmc"
    llmcodec.save(art, bad)
    assert main(["verify", str(bad), "--quiet"]) == 1
    assert f"tensor '{CODED}'" in capsys.readouterr().err
    with pytest.raises(CodecError, match=f"tensor '{CODED}'"):
        llmcodec.load_state_dict(bad)


def test_verify_missing_and_garbage_files(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope.llmc")]) == 1
    assert "no such artifact" in capsys.readouterr().err
    (tmp_path / "junk.llmc").write_bytes(np.random.default_rng(0).bytes(1000))
    assert main(["verify", str(tmp_path / "junk.llmc")]) == 1
    assert "llmcodec: error: verification failed" in capsys.readouterr().err


def test_verify_detects_tensor_missing_from_artifact(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "m"
    src.mkdir()
    state = {"a.w": torch.from_numpy((rng.standard_normal((64, 64)) * 0.02).astype(np.float32)), "b": torch.ones(3)}
    save_file(state, str(src / "model.safetensors"))
    out = tmp_path / "a.llmc"
    llmcodec.compress_model(src, out, llmcodec.CompressSettings(qp=30))
    assert verify(out, src).ok
    save_file({**state, "c.extra": torch.zeros(2)}, str(src / "model.safetensors"))
    rep = verify(out, src)
    assert not rep.ok and rep.failures == [f"tensor 'c.extra' is in {src} but not in the artifact"]


def test_verify_kept_nonfinite_tensor_matches_source(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    w = torch.from_numpy((np.random.default_rng(1).standard_normal((64, 64)) * 0.02).astype(np.float32))
    w[3, 4], w[5, 6] = float("nan"), float("inf")
    save_file({"nan.w": w, "ok.w": w.nan_to_num(0.0, 0.0)}, str(src / "model.safetensors"))
    out = tmp_path / "a.llmc"
    llmcodec.compress_model(src, out, llmcodec.CompressSettings(qp=30, keep_nonfinite=True))
    rep = verify(out, src)
    assert rep.ok, rep.failures
    assert [t.kind for t in rep.tensors] == ["raw", "coded"] and rep.tensors[0].max_abs_error == 0.0

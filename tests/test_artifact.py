import json

import numpy as np
import pytest
import safetensors
import torch
from safetensors.torch import save_file

import llmcodec
from llmcodec import artifact
from llmcodec.artifact import ArtifactError


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    rng = np.random.default_rng(0)
    state = {
        "layers.0.w": torch.from_numpy((rng.standard_normal((96, 128)) * 0.02).astype(np.float32)),
        "layers.0.norm": torch.ones(128),
        "layers.1.w": torch.from_numpy((rng.standard_normal((64, 128)) * 0.02).astype(np.float32)).half(),
    }
    art = llmcodec.compress_state_dict(
        state, llmcodec.CompressSettings(qp=26), config=None, files={"tokenizer.json": b"{}"}
    )
    path = tmp_path_factory.mktemp("art") / "small.llmc"
    llmcodec.save(art, path)
    return path, state, art


def test_round_trip_is_exact(small_artifact):
    path, state, art = small_artifact
    back = artifact.read(path)
    assert back.order == list(state)
    assert set(back.coded) == {"layers.0.w", "layers.1.w"}
    for name, c in art.coded.items():
        b = back.coded[name]
        assert b.bitstream == c.bitstream and b.qp == 26 and b.layout == c.layout
        assert np.array_equal(b.scale, c.scale) and np.array_equal(b.offset, c.offset)
    assert torch.equal(back.raw["layers.0.norm"], state["layers.0.norm"])
    assert back.files == {"tokenizer.json": b"{}"}
    restored = llmcodec.load_state_dict(path)
    assert restored["layers.1.w"].dtype == torch.float16
    for name in ("layers.0.w", "layers.1.w"):
        err = (restored[name].float() - state[name].float()).norm() / state[name].float().norm()
        assert err < 0.2


def test_no_temporary_files_left(small_artifact):
    path, _, _ = small_artifact
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_every_flipped_byte_region_is_caught(small_artifact, tmp_path):
    path, _, _ = small_artifact
    data = bytearray(path.read_bytes())
    hsize = int.from_bytes(data[:8], "little")
    # Flip bytes across the tensor data: each must be caught by a checksum.
    for pos in range(8 + hsize, len(data), max(1, (len(data) - 8 - hsize) // 25)):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        p = tmp_path / "bad.llmc"
        p.write_bytes(bytes(bad))
        with pytest.raises(ArtifactError, match="checksum|corrupt"):
            artifact.read(p)


def test_truncated_foreign_and_newer_files(small_artifact, tmp_path):
    path, _, _ = small_artifact
    data = path.read_bytes()
    for cut in (0, 5, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.llmc"
        p.write_bytes(data[:cut])
        with pytest.raises(ArtifactError):
            artifact.read(p)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign))
    with pytest.raises(ArtifactError, match="not an llmcodec artifact"):
        artifact.read(foreign)
    with pytest.raises(ArtifactError, match="no such"):
        artifact.read(tmp_path / "missing.llmc")
    # A file from a newer format version is refused with a message saying so.
    hsize = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + hsize])
    inner = json.loads(header["__metadata__"]["llmcodec"])
    inner["format_version"] = 99
    header["__metadata__"]["llmcodec"] = json.dumps(inner)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    newer = tmp_path / "newer.llmc"
    newer.write_bytes(len(hb).to_bytes(8, "little") + hb + data[8 + hsize :])
    with pytest.raises(ArtifactError, match="newer llmcodec"):
        artifact.read(newer)


def test_writer_matches_safetensors_reader_for_every_dtype(tmp_path):
    from safetensors.torch import load_file

    from llmcodec.stfile import ST_DTYPES, write_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {f"t{k}": (torch.randn(3, 5, generator=g) * 50).to(dt) for k, dt in enumerate(ST_DTYPES)}
    tensors["empty"] = torch.zeros(0, 4)
    tensors["scalar"] = torch.tensor(2.5)
    meta = {"b": "2", "a": "1"}
    write_safetensors(tmp_path / "x.st", tensors, meta)
    write_safetensors(tmp_path / "y.st", dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert (tmp_path / "x.st").read_bytes() == (tmp_path / "y.st").read_bytes()  # canonical
    back = load_file(tmp_path / "x.st")
    assert back.keys() == tensors.keys()
    for n, t in tensors.items():
        assert back[n].dtype == t.dtype and back[n].shape == t.shape
        assert torch.equal(back[n].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))
    with safetensors.safe_open(str(tmp_path / "x.st"), framework="pt") as f:
        assert f.metadata() == meta

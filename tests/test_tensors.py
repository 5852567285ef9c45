"""compress-tensors / decompress-tensors: any float tensors, N-D as stacks of matrices, whole-file budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import llmcodec
from llmcodec import cli
from llmcodec.artifact import ArtifactError
from llmcodec.stacks import from_matrix, matrix_shape, to_matrix
from llmcodec.tensors import TensorOptions, compress_tensors, decompress_tensors, tensor_settings


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # columns of different scales (like activations), bf16 3-D stacks, float32 4-D tensors; enough
    # coded tensors for rate control to land close to a budget
    out: dict[str, torch.Tensor] = {}
    for i in range(3):
        out[f"a.matrix{i}"] = torch.randn(96, 128, generator=g) * torch.linspace(0.1, 3, 128)
        out[f"b.stack3_{i}"] = (torch.randn(4, 48, 96, generator=g) * 0.5).to(torch.bfloat16)
    for i in range(2):
        out[f"c.stack4_{i}"] = torch.randn(2, 3, 32, 64, generator=g)
    out["d.bias"] = torch.randn(128, generator=g)
    out["e.count"] = torch.arange(10, dtype=torch.int64)
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape,axis", [((5, 7), 0), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1),
                                        ((2, 3, 4, 5), 2), ((6, 1, 4, 5, 2), 4)])
def test_stacking_round_trip(shape, axis):
    t = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    ax = axis % len(shape)
    m = to_matrix(t, ax)
    assert m.ndim == 2 and tuple(m.shape) == matrix_shape(shape, ax)
    assert torch.equal(from_matrix(m, shape, ax), t)
    if len(shape) >= 3:  # each row of the stack is a row of one matrix of the stack along ``axis``
        assert torch.equal(m[0], t.movedim(ax, 0)[(0,) * (len(shape) - 1)])


def test_round_trip_2d_3d_4d_whole_file_budget(tmp_path):
    src = _tensors()
    art = compress_tensors(src, tensor_settings(bpw=3.0))
    out = tmp_path / "t.llmc"
    llmcodec.save(art, out)
    elements = sum(t.numel() for t in src.values())
    bpe = 8 * out.stat().st_size / elements
    assert 3.0 * (1 - 0.015) <= bpe <= 3.0, bpe
    got = decompress_tensors(out)
    assert list(got) == list(src)
    for name, t in src.items():
        assert got[name].shape == t.shape and got[name].dtype == t.dtype, name
    assert set(art.coded) == {n for n in src if n[0] in "abc"}
    for name in art.coded:
        assert _rel(got[name], src[name]) < 0.5, name  # about 2 bits per coded element: Gaussian data
    assert torch.equal(got["d.bias"], src["d.bias"].half().float())  # kept in 16 bits
    assert torch.equal(got["e.count"], src["e.count"])  # integers kept exactly


def test_stack_axis_and_exact(tmp_path):
    g = torch.Generator().manual_seed(1)
    src = {"x": torch.randn(32, 3, 64, generator=g), "bias": torch.randn(64, generator=g)}
    art = compress_tensors(src, tensor_settings(qp=20), TensorOptions(stack_axis=1, exact=True))
    assert art.coded["x"].shape == (3 * 32, 64)
    llmcodec.save(art, tmp_path / "x.llmc")
    got = decompress_tensors(tmp_path / "x.llmc")
    assert got["x"].shape == (32, 3, 64) and _rel(got["x"], src["x"]) < 0.1
    assert torch.equal(got["bias"], src["bias"])


def _run(argv) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue()


def test_cli_round_trip_folder(tmp_path):
    src = _tensors()
    folder = tmp_path / "in"
    folder.mkdir()
    save_file({k: v for k, v in src.items() if k < "c"}, str(folder / "one.safetensors"))
    save_file({k: v for k, v in src.items() if k >= "c"}, str(folder / "two.safetensors"))
    out, restored = tmp_path / "o.llmc", tmp_path / "r.safetensors"
    assert cli.main(["compress-tensors", str(folder), str(out), "--bpw", "2.0", "--quiet"]) == 0
    assert 2.0 * 0.985 <= 8 * out.stat().st_size / sum(t.numel() for t in src.values()) <= 2.0
    assert cli.main(["verify", str(out), "--quiet"]) == 0
    assert cli.main(["decompress-tensors", str(out), str(restored), "--quiet"]) == 0
    got = load_file(str(restored))
    assert set(got) == set(src)
    for k, t in src.items():
        assert got[k].shape == t.shape and got[k].dtype == t.dtype


def test_bad_inputs(tmp_path):
    out = tmp_path / "o.llmc"
    code, err = _run(["compress-tensors", str(tmp_path / "missing.safetensors"), str(out)])
    assert code == 2 and "no such" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    code, err = _run(["compress-tensors", str(junk), str(out)])
    assert code == 2 and "not a readable safetensors" in err
    (tmp_path / "empty").mkdir()
    code, err = _run(["compress-tensors", str(tmp_path / "empty"), str(out)])
    assert code == 2 and "no .safetensors" in err
    nan = tmp_path / "nan.safetensors"
    t = torch.randn(32, 32)
    t[3, 4] = float("nan")
    save_file({"w": t}, str(nan))
    code, err = _run(["compress-tensors", str(nan), str(out)])
    assert code == 2 and "NaN" in err
    axis = tmp_path / "axis.safetensors"
    save_file({"w": torch.randn(4, 32, 32)}, str(axis))
    code, err = _run(["compress-tensors", str(axis), str(out), "--stack-axis", "3"])
    assert code == 2 and "stack axis" in err
    code, err = _run(["compress-tensors", str(axis), str(out), "--bpw", "0.01"])
    assert code == 2 and "bits per element" in err
    assert not out.exists() and list(tmp_path.glob(".o.llmc*")) == []  # nothing half-written
    before = axis.read_bytes()
    code, err = _run(["compress-tensors", str(axis), str(axis), "--qp", "30"])
    assert code == 2 and "overwrite the input" in err and axis.read_bytes() == before


def test_damaged_and_foreign_artifacts(tmp_path, tiny_llama):
    src = {"w": torch.randn(64, 64)}
    path = tmp_path / "w.llmc"
    llmcodec.save(compress_tensors(src, tensor_settings(qp=30)), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last stored piece
    bad = tmp_path / "bad.llmc"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum|corrupt"):
        decompress_tensors(bad)
    restored = tmp_path / "r.safetensors"
    restored.write_bytes(b"user data")
    code, err = _run(["decompress-tensors", str(bad), str(restored)])
    assert code == 2 and "corrupt" in err and restored.read_bytes() == b"user data"
    model_art = tmp_path / "model.llmc"
    llmcodec.compress_model(tiny_llama, model_art, llmcodec.CompressSettings(qp=30))
    code, err = _run(["decompress-tensors", str(model_art), str(restored)])
    assert code == 2 and "not a tensors artifact" in err


@pytest.mark.parametrize("bpw", [1.5, 4.0])
def test_budget_lands_at_other_rates(bpw):
    g = torch.Generator().manual_seed(2)
    src = {f"t{i}": torch.randn(2, 128, 128, generator=g) for i in range(8)}
    art = compress_tensors(src, tensor_settings(bpw=bpw))
    from llmcodec.tensors import _file_bits

    bpe = _file_bits(art) / sum(t.numel() for t in src.values())
    assert bpw * (1 - 0.015) <= bpe <= bpw, bpe

"""The Ray executor writes the same artifact as the local pool (on a local two-CPU Ray instance)."""

import sys

import pytest
from test_parallel import same_file

import llmcodec
from llmcodec.cli import main
from llmcodec.compress import CompressSettings
from llmcodec.executors import RayExecutor

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'llmcodec[ray]'")


def test_unreachable_address_fails_fast_with_a_clear_message(tiny_llama, tmp_path, capsys):
    argv = ["compress", str(tiny_llama), str(tmp_path / "x.llmc"), "--executor", "ray", "--address", "127.0.0.1:1"]
    assert main(argv) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err
    assert not (tmp_path / "x.llmc").exists()  # runs before Ray is started below


@pytest.fixture(scope="module")
def ray_ex():
    ex = RayExecutor(num_cpus=2)
    yield ex
    ex.close()
    assert not ray.is_initialized()


def test_ray_and_local_artifacts_are_identical(ray_ex, tiny_llama, tmp_path):
    settings = CompressSettings(bpw=3.0)  # rate control: many probe and full encodes, all on Ray
    llmcodec.compress_model(tiny_llama, tmp_path / "local.llmc", settings)
    llmcodec.compress_model(tiny_llama, tmp_path / "ray.llmc", settings, executor=ray_ex)
    assert same_file(tmp_path / "local.llmc", tmp_path / "ray.llmc")


def test_ray_keeps_order_and_raises_the_worker_error(ray_ex):
    seen = []
    assert ray_ex.map(pow, [(3, k) for k in range(7)], lambda i, r: seen.append(i)) == [3**k for k in range(7)]
    assert sorted(seen) == list(range(7))
    with pytest.raises(ValueError, match="invalid literal"):  # a job's own error type reaches the caller
        ray_ex.map(int, [("12",), ("bad",)])


def test_local_default_does_not_import_ray(tiny_llama, tmp_path):
    sys.modules.pop("ray", None)
    try:
        assert main(["compress", str(tiny_llama), str(tmp_path / "l.llmc"), "--qp", "30", "--quiet"]) == 0
        assert "ray" not in sys.modules
    finally:
        sys.modules["ray"] = ray

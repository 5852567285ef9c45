"""Class 5 (and parts of 7 and 10) of issue #33: sources that are not really models are refused
before anything their metadata sizes is allocated; shard indexes cannot point outside the folder;
truncated shards and configs that do not fit the weights are messages, not tracebacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_security import load_pieces, save_pieces, small_state
from safetensors.torch import save_file

import llmcodec
from llmcodec import modelio
from llmcodec.artifact import ArtifactError
from llmcodec.cli import main
from llmcodec.modelio import ModelError
from llmcodec.verify import verify


def _gguf(path, tensors: dict[str, np.ndarray], blocks: int = 2, emb: int = 64, ff: int = 192, vocab: int = 100):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(blocks)
    w.add_embedding_length(emb)
    w.add_feed_forward_length(ff)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(128)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _loader_must_not_run(monkeypatch):
    import transformers

    def boom(*a, **k):
        raise AssertionError("transformers was asked to build the model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)


def test_gguf_with_a_header_and_no_tensors_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    _loader_must_not_run(monkeypatch)
    p = _gguf(tmp_path / "empty.gguf", {}, blocks=4096, emb=1 << 16, ff=1 << 18, vocab=1000)
    with pytest.raises(ModelError, match="holds no tensors"):
        modelio.load(p)
    assert main(["compress", str(p), str(tmp_path / "o.llmc"), "--quiet"]) == 2
    assert "holds no tensors" in capsys.readouterr().err


def test_gguf_missing_most_weights_is_refused(tmp_path, monkeypatch):
    _loader_must_not_run(monkeypatch)
    emb = np.zeros((100, 64), np.float32)
    only_norms = {"token_embd.weight": emb, **{f"blk.{i}.attn_norm.weight": np.ones(64, np.float32) for i in range(2)}}
    with pytest.raises(ModelError, match="most weights are missing"):
        modelio.load(_gguf(tmp_path / "norms.gguf", only_norms))
    one_block = {"token_embd.weight": emb, "blk.0.attn_q.weight": np.zeros((64, 64), np.float32)}
    with pytest.raises(ModelError, match="no tensors for 1 of them"):
        modelio.load(_gguf(tmp_path / "one.gguf", one_block))
    with pytest.raises(ModelError, match="no token embedding"):
        modelio.load(_gguf(tmp_path / "noemb.gguf", {"blk.0.x.weight": emb, "blk.1.x.weight": emb}))


def test_gguf_metadata_beyond_the_limits_is_refused(tmp_path, monkeypatch):
    _loader_must_not_run(monkeypatch)
    emb = np.zeros((100, 64), np.float32)
    with pytest.raises(ModelError, match="over the 4096 limit"):
        modelio.load(_gguf(tmp_path / "deep.gguf", {"token_embd.weight": emb}, blocks=10**6))
    tensors = {"token_embd.weight": emb, **{f"blk.{i}.w.weight": emb for i in range(2)}}
    with pytest.raises(ModelError, match="over the .* limit|most weights"):
        modelio.load(_gguf(tmp_path / "wide.gguf", tensors, emb=1 << 30, ff=1 << 31))


def test_not_a_gguf_file(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF" + b"\xff" * 100)
    with pytest.raises(ModelError, match="not a readable GGUF file"):
        modelio.load(p)


def test_the_builtin_gguf_passes_the_coverage_check():
    from llmcodec.modelcheck import check_gguf

    check_gguf(modelio.builtin_path(modelio.DEFAULT_MODEL))


def test_tokenizer_panic_is_a_model_error(tmp_path, monkeypatch):
    # pyo3 panics derive from BaseException, not Exception
    import transformers

    from llmcodec import modelcheck

    class PanicException(BaseException):
        pass

    def panic(*a, **k):
        raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(modelcheck, "check_gguf", lambda p: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", panic)
    p = tmp_path / "x.gguf"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="PanicException"):
        modelio.load(p)


# -- shard indexes, truncated shards ----------------------------------------------------------------------


def _sharded(tmp_path, weight_map: dict) -> tuple:
    folder = tmp_path / "m"
    folder.mkdir()
    save_file(small_state(), str(folder / "a.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/a.safetensors", "..", ""])
def test_shard_index_naming_a_file_outside_the_folder_is_refused(tmp_path, shard):
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    folder = _sharded(tmp_path, {"m0.weight": shard})
    with pytest.raises(ModelError, match="is not a file in"):
        modelio.load(folder)


def test_shard_index_symlink_outside_is_refused(tmp_path):
    save_file(small_state(), str(tmp_path / "elsewhere.safetensors"))
    folder = _sharded(tmp_path, {"m0.weight": "link.safetensors"})
    (folder / "link.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ModelError, match="is not a file in"):
        modelio.load(folder)


def test_shard_index_with_duplicate_keys_or_bad_json_is_refused(tmp_path):
    folder = _sharded(tmp_path, {"m0.weight": "a.safetensors"})
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}, "weight_map": {"x": "a.safetensors"}}')
    with pytest.raises(ModelError, match="appears twice"):
        modelio.load(folder)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": [1, 2]}')
    with pytest.raises(ModelError, match="weight_map"):
        modelio.load(folder)


@pytest.mark.parametrize("indexed", [False, True])
def test_truncated_shard_is_a_message(tmp_path, indexed, capsys):
    folder = _sharded(tmp_path, {"m0.weight": "a.safetensors"}) if indexed else tmp_path / "m"
    if not indexed:
        folder.mkdir()
        save_file(small_state(), str(folder / "a.safetensors"))
    data = (folder / "a.safetensors").read_bytes()
    (folder / "a.safetensors").write_bytes(data[: len(data) - 1000])
    assert main(["compress", str(folder), str(tmp_path / "o.llmc"), "--qp", "30", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "Traceback" not in err


# -- configs that do not fit the weights ----------------------------------------------------------------


def test_config_inconsistent_with_weights_is_refused_before_decoding(tmp_path, tiny_llama, monkeypatch, capsys):
    src = modelio.load(tiny_llama)
    art = llmcodec.api.compress_source(src, llmcodec.CompressSettings(qp=40, only=r"layers\.0\.mlp\.up"))
    good = tmp_path / "t.llmc"
    llmcodec.save(art, good)
    tensors, header = load_pieces(good)
    header["model"]["config"]["intermediate_size"] = 999  # the MLP weights are 192 wide
    bad = save_pieces(tmp_path / "bad.llmc", tensors, header)
    calls = []
    real = llmcodec.api.restore_state_dict
    monkeypatch.setattr(llmcodec.api, "restore_state_dict", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["decompress", str(bad), str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the weights" in err and "Traceback" not in err and calls == []
    with pytest.raises(ArtifactError, match="does not fit"):
        llmcodec.load_model(bad)
    rep = verify(bad)
    assert not rep.ok and any("decompress would refuse" in p for p in rep.problems)
    header["model"]["config"]["intermediate_size"] = 192
    header["model"]["config"]["hidden_act"] = "no-such-activation"
    bad2 = save_pieces(tmp_path / "bad2.llmc", tensors, header)
    with pytest.raises(ArtifactError, match="does not fit"):
        llmcodec.load_model(bad2)
    assert verify(good).ok
    _ = torch


@pytest.mark.parametrize("text,msg", [("[1, 2]", "not a JSON object"), ("{", "not valid JSON"),
                                      ('{"a": 1, "a": 2}', "appears twice")])
def test_a_config_that_is_not_a_json_object_is_refused(tmp_path, text, msg, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    save_file(small_state(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(text)
    assert main(["compress", str(folder), str(tmp_path / "o.llmc"), "--qp", "30", "--quiet"]) == 2
    assert msg in capsys.readouterr().err
    assert main(["eval", str(folder), "--window", "8", "--windows", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_eval_of_a_source_whose_config_does_not_fit_is_a_message(tmp_path, tiny_llama, capsys):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_llama, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_act"] = "no-such-activation"
    (folder / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", str(folder), "--window", "8", "--windows", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the weights" in err and "Traceback" not in err


def test_compress_warns_before_encoding_when_the_config_does_not_fit(tmp_path, tiny_llama, capsys):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_llama, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 999
    (folder / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o.llmc"
    assert main(["compress", str(folder), str(out), "--qp", "40", "--only", "layers.0.mlp.up", "--quiet"]) == 0
    assert "warning: the model config does not fit the weights" in capsys.readouterr().err
    assert llmcodec.load_state_dict(out)  # still readable as a state dict
    with pytest.raises(ArtifactError, match="does not fit"):
        llmcodec.load_model(out)
    assert main(["compress", str(tiny_llama), str(tmp_path / "ok.llmc"), "--qp", "40", "--only", "layers.0.mlp.up",
                 "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err

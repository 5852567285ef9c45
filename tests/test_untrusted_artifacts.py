"""Classes 2, 6 and 10 of issue #33: stored files cannot shadow weights or the config, the decoded
integers are checked against a digest taken at compression, the header's pixel format agrees with
the quantization, and names from a file are refused or escaped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_security import load_pieces, make_artifact, save_pieces, set_file, sha, small_state

import llmcodec
from llmcodec import artifact
from llmcodec.artifact import ArtifactError
from llmcodec.cli import main
from llmcodec.codecs import registry
from llmcodec.codecs.base import CodecError
from llmcodec.codecs.vvc import VVC
from llmcodec.verify import verify


@pytest.fixture(scope="module")
def base_art(tmp_path_factory):
    path = make_artifact(tmp_path_factory.mktemp("u") / "a.llmc", files={"tokenizer.json": b"{}"})
    return path


# -- class 2: stored files cannot shadow weights ----------------------------------------------------------

SHADOWS = ["model.safetensors", "MODEL.SafeTensors", "model-00001-of-00002.safetensors", "pytorch_model.bin",
           "model.safetensors.index.json", "pytorch_model.bin.index.json", "x.gguf", "w.pt", "w.pth",
           "config.json", "Config.JSON", "flax_model.msgpack", "tf_model.h5", "model.ckpt"]


@pytest.mark.parametrize("fname", SHADOWS)
def test_weight_files_and_the_config_cannot_be_stored(base_art, tmp_path, fname, capsys):
    tensors, header = load_pieces(base_art)
    set_file(tensors, header, fname, b"\0" * 64)
    crafted = save_pieces(tmp_path / "c.llmc", tensors, header)
    with pytest.raises(ArtifactError, match="weight or index file|written by the restore itself"):
        artifact.read(crafted)
    out = tmp_path / "restored"
    assert main(["decompress", str(crafted), str(out), "--quiet"]) == 2
    assert "stored file" in capsys.readouterr().err
    assert not out.exists()
    assert main(["verify", str(crafted), "--quiet"]) == 1


@pytest.mark.parametrize("fname", ["config.json", "model.safetensors", ".hidden", "a/b"])
def test_the_writer_refuses_such_files_too(tmp_path, fname):
    art = llmcodec.compress_state_dict(small_state(), llmcodec.CompressSettings(qp=35), files={fname: b"x"})
    with pytest.raises(ValueError, match="cannot be stored"):
        llmcodec.save(art, tmp_path / "a.llmc")
    assert not list(tmp_path.iterdir())


def test_ordinary_model_files_are_kept(base_art):
    assert artifact.read(base_art).files == {"tokenizer.json": b"{}"}


# -- class 10: untrusted names ----------------------------------------------------------------------------

@pytest.mark.parametrize("fname,why", [
    (".bashrc", "hidden"), (".env", "hidden"), ("a\nb.json", "control"), ("tok\x1b[2J.json", "control"),
    ("a\u200bb.json", "control or invisible"), ("x" * 256, "longer than 255"), ("é" * 128, "longer than 255"),
    ("..", "plain file name"), ("a\\b", "plain file name"), ("", "non-empty"),
])
def test_hidden_control_and_long_file_names_are_refused(base_art, tmp_path, fname, why):
    tensors, header = load_pieces(base_art)
    header["model"]["files"][fname] = sha(b"x")
    with pytest.raises(ArtifactError, match=why):
        artifact.read(save_pieces(tmp_path / "c.llmc", tensors, header))


def test_tensor_names_with_escape_sequences_are_printed_escaped(tmp_path, capsys):
    evil = "m\x1b[2J\x1b]0;owned\x07\n.weight"
    state = {evil: small_state()["m0.weight"]}
    path = make_artifact(tmp_path / "a.llmc", state)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "m\\x1b[2J" in out
    assert main(["verify", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\n.weight" in out


def test_duplicate_keys_in_the_header_json_are_refused(base_art, tmp_path):
    tensors, header = load_pieces(base_art)
    text = json.dumps(header)
    # a second "model" object at the end: a plain json.loads would take it (last one wins)
    dup = text[:-1] + ', "model": {"config": {"hidden_act": "relu"}, "files": {}}}'
    with pytest.raises(ArtifactError, match="'model' appears twice"):
        artifact.read(save_pieces(tmp_path / "c.llmc", tensors, header, text=dup))
    inner = json.dumps(header["stats"])
    dup2 = text.replace(inner, inner[:-1] + ', "coded_tensors": 99}')
    with pytest.raises(ArtifactError, match="'coded_tensors' appears twice"):
        artifact.read(save_pieces(tmp_path / "d.llmc", tensors, header, text=dup2))


def test_duplicate_tensor_keys_in_the_safetensors_header_are_refused(base_art, tmp_path):
    data = base_art.read_bytes()
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8 : 8 + n])
    key = next(k for k in head if k.endswith("::bitstream"))
    text = json.dumps(head)
    entry = json.dumps({key: head[key]})[1:-1]
    crafted = text[:-1] + ", " + entry + "}"
    raw = crafted.encode()
    raw += b" " * (-len(raw) % 8)
    p = tmp_path / "dup.llmc"
    p.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    with pytest.raises(ArtifactError, match="appears twice"):
        artifact.read(p)


# -- class 6: a digest of the decoded integers; pixel format agrees with the quantization -------------------


class OffByOneVVC(VVC):
    """Returns one sample changed by one: close enough for any error bound, not bit-identical."""

    def decode(self, data, layout, profile):
        frames = super().decode(data, layout, profile)
        frames[0][0] = frames[0][0].copy()
        frames[0][0][0, 0] ^= 1
        return frames


def test_a_decoder_returning_other_integers_fails_restore_and_verify(base_art, monkeypatch, capsys):
    monkeypatch.setitem(registry.CODECS, "vvc", OffByOneVVC)
    with pytest.raises(CodecError, match="digest mismatch"):
        llmcodec.load_state_dict(base_art)
    rep = verify(base_art)
    assert not rep.ok and "digest mismatch" in rep.failures[0]
    assert main(["verify", str(base_art), "--quiet"]) == 1


def test_every_coded_tensor_of_a_new_file_has_a_digest(base_art, tmp_path):
    tensors, header = load_pieces(base_art)
    assert all("decoded" in e["sha256"] for e in header["tensors"].values() if e["kind"] == "coded")
    del header["tensors"]["m0.weight"]["sha256"]["decoded"]
    with pytest.raises(ArtifactError, match="checksums"):
        artifact.read(save_pieces(tmp_path / "c.llmc", tensors, header))


def test_a_digest_of_other_integers_fails_restore(base_art, tmp_path):
    tensors, header = load_pieces(base_art)
    header["tensors"]["m0.weight"]["sha256"]["decoded"] = sha(b"other")
    crafted = save_pieces(tmp_path / "c.llmc", tensors, header)
    with pytest.raises(CodecError, match="digest mismatch"):
        llmcodec.load_state_dict(crafted)
    assert not verify(crafted).ok


@pytest.mark.parametrize("field,value,msg", [
    (("codec", "profile", "pix_fmt"), "yuv420p", "not one the vvc codec takes"),
    (("codec", "profile", "pix_fmt"), "gray12le", "not one the vvc codec takes"),
    (("codec", "profile", "pix_fmt"), "rgb48", "not one the vvc codec takes"),
    (("codec", "profile", "packing"), "yuv420", "packing"),
    (("codec", "name"), "x265", "encoder 'libvvenc' is not the x265 codec's"),
    (("codec", "name"), "evil", "not a codec"),
    (("tensors", "m0.weight", "quant", "bits"), 12, "12 bits"),
])
def test_pixel_format_depth_and_packing_must_agree(base_art, tmp_path, field, value, msg):
    tensors, header = load_pieces(base_art)
    node = header
    for k in field[:-1]:
        node = node[k]
    node[field[-1]] = value
    with pytest.raises(ArtifactError, match=msg):
        artifact.read(save_pieces(tmp_path / "c.llmc", tensors, header))


def test_restore_is_bit_identical_to_what_the_compressor_checked(base_art):
    art = artifact.read(base_art)
    ct = art.coded["m0.weight"]
    from llmcodec.coder import _decode_named, samples_digest

    codec = VVC()
    q = _decode_named(ct.name, ct.bitstream, ct.layout, codec, codec.profile(None), ct.spec)
    assert samples_digest(q) == ct.decoded_sha256
    assert np.array_equal(llmcodec.load_state_dict(base_art)["m0.weight"].numpy(),
                          llmcodec.load_state_dict(base_art)["m0.weight"].numpy())


def test_malformed_tokenizer_files_are_a_message(tiny_llama, tmp_path, capsys):
    src = llmcodec.modelio.load(tiny_llama)
    art = llmcodec.api.compress_source(src, llmcodec.CompressSettings(qp=40, only=r"layers\.0\.mlp\.up"))
    art.files["tokenizer.json"] = b'{"model": {"type": "BPE", "vocab": 5}}'
    llmcodec.save(art, tmp_path / "t.llmc")
    with pytest.raises(ValueError, match="tokenizer files cannot be loaded"):
        llmcodec.load_model(tmp_path / "t.llmc")
    assert main(["eval", str(tmp_path / "t.llmc"), "--window", "16", "--windows", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer files cannot be loaded" in err and "Traceback" not in err

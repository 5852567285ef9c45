"""A compressed tiny Llama restores, loads with transformers and runs; the CLI drives it all."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import llmcodec
from llmcodec.budget import whole_file
from llmcodec.cli import main
from llmcodec.evaluate import EvalSettings, perplexity


def _logits(model, tok):
    ids = tok("the company said it expects to report", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_compress_restore_load(tiny_llama, tmp_path):
    out = tmp_path / "tiny.llmc"
    # the artifact's header is a large share of so small a model's file: a budget that leaves its
    # matrices about 4 bits per weight
    art = llmcodec.compress_model(tiny_llama, out, llmcodec.CompressSettings(bpw=6.0))
    st = art.stats()
    assert st["coded_tensors"] == 15  # 7 linear matrices per layer x 2, and the tied embedding/head once
    assert "model.embed_tokens.weight" in art.coded
    whole = whole_file(out)
    assert whole["parameters"] == st["parameters"] == sum(
        t.numel() for t in AutoModelForCausalLM.from_pretrained(tiny_llama).parameters())
    assert whole["bits_per_parameter"] <= 6.0 and 3.0 <= st["bits_per_weight"] < 6.0
    folder = llmcodec.decompress(out, tmp_path / "restored")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama)
    a, b = _logits(model, tok), _logits(ref, tok)
    assert a.shape == b.shape
    # weights carry ~15% error at 4 bits (random init has no structure); a wrong restore gives ~1.4
    assert ((a - b).norm() / b.norm()) < 0.4
    # the in-memory loader gives the same weights as the folder
    m2, _ = llmcodec.load_model(out)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), m2.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    res = perplexity(m2, tok, EvalSettings(window=64, max_windows=4))
    assert res.tokens == 4 * 63 and res.perplexity > 1


def test_sharded_bf16_source(tiny_llama_sharded_bf16, tmp_path):
    out = tmp_path / "bf16.llmc"
    llmcodec.compress_model(tiny_llama_sharded_bf16, out, llmcodec.CompressSettings(qp=20))
    state = llmcodec.load_state_dict(out)
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama_sharded_bf16).state_dict()
    for name, t in state.items():
        assert t.dtype == torch.bfloat16
        if t.ndim == 2:
            assert (t.float() - ref[name].float()).norm() / ref[name].float().norm() < 0.1
        else:
            assert torch.equal(t, ref[name])


def test_cli_round_trip(tiny_llama, tmp_path, capsys):
    out = tmp_path / "cli.llmc"
    assert main(["compress", str(tiny_llama), str(out), "--qp", "28", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "bits per coded weight" in text and "bits per parameter over the whole file" in text and out.is_file()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "model.layers.1.mlp.down_proj.weight" in info and "coded" in info
    assert "share of the file: embeddings/head" in info and "MLP" in info and "norms/biases" in info
    assert main(["decompress", str(out), str(tmp_path / "r"), "--quiet"]) == 0
    assert (tmp_path / "r" / "config.json").is_file()
    assert main(["eval", str(out), "--window", "64", "--windows", "2", "--quiet"]) == 0
    assert "perplexity" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["compress", "/nonexistent/model", "x.llmc"], "no such model"),
        (["compress", "TINY", "x.llmc", "--codec", "nope"], "unknown codec"),
        (["compress", "TINY", "x.llmc", "--profile", "nope"], "no profile"),
        (["compress", "TINY", "x.llmc", "--bpw", "0.01"], "is below what the file needs besides the coded matrices"),
        (["compress", "TINY", "x.llmc", "--bpw", "0.01", "--budget", "coded"], "side information"),
        (["info", "/nonexistent.llmc"], "no such artifact"),
    ],
)
def test_cli_errors_are_clear(argv, msg, tiny_llama, tmp_path, capsys):
    argv = [str(tiny_llama) if a == "TINY" else (str(tmp_path / a) if a == "x.llmc" else a) for a in argv]
    assert main(argv) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.llmc").exists()


def test_empty_and_weightless_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    for folder in ("empty", "bin"):
        assert main(["compress", str(tmp_path / folder), str(tmp_path / "o.llmc")]) == 2
        assert "no *.safetensors" in capsys.readouterr().err


def test_built_model_matches_a_normally_initialized_one_and_refuses_missing_weights(tiny_llama):
    """build_model skips the random init: its logits equal those of a model initialized as usual
    and then given the same weights, and a weight left out is an error, not uninitialized memory."""
    from transformers import AutoConfig

    from llmcodec.modelio import ModelError, build_model, load

    src = load(tiny_llama)
    state = dict(src.items())
    model = build_model(state, src.config)
    ref = AutoModelForCausalLM.from_config(AutoConfig.for_model(**src.config))
    ref.load_state_dict(state, strict=False)
    ref.eval()
    x = torch.arange(1, 33)[None]
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref(x).logits)
    name = next(n for n in state if n.endswith("mlp.up_proj.weight"))
    with pytest.raises(ModelError, match="missing"):
        build_model({k: v for k, v in state.items() if k != name}, src.config)

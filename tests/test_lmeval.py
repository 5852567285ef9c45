"""llmcodec eval --lm-eval: lm-evaluation-harness on an in-memory model, offline, with a local task."""

import json
import sys

import pytest
import torch

from llmcodec.lmeval import LmEvalError, require

CONTEXTS = ["the company said it", "the market was", "shares of the company", "the new york stock exchange",
            "mr. smith said the", "sales in the third quarter"]
CHOICES = ["will", "is", "rose", "said"]


def _task(folder):
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"context": c, "choices": CHOICES, "label": i % len(CHOICES)}) + "\n"
                            for i, c in enumerate(CONTEXTS)))
    (folder / "tiny.yaml").write_text(
        "task: llmcodec_tiny_local\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n")
    return folder


def test_missing_lm_eval_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LmEvalError, match="pip install"):
        require()


@torch.inference_mode()
def _own_accuracy(model, tok) -> float:
    hits = 0
    for i, c in enumerate(CONTEXTS):
        n = len(tok(c, add_special_tokens=False)["input_ids"])
        scores = []
        for ch in CHOICES:
            ids = torch.tensor([tok(c + " " + ch, add_special_tokens=False)["input_ids"]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            scores.append(float(logp[torch.arange(n - 1, ids.shape[1] - 1), ids[0, n:]].sum()))
        hits += max(range(len(CHOICES)), key=scores.__getitem__) == i % len(CHOICES)
    return hits / len(CONTEXTS)


def test_a_local_task_scores_the_model_in_memory(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from conftest import make_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcodec.lmeval import run_tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = make_tiny_llama(tmp_path / "m")
    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    res = run_tasks(model, tok, ["llmcodec_tiny_local"], include=str(_task(tmp_path)))
    assert res["llmcodec_tiny_local"]["acc,none"] == pytest.approx(_own_accuracy(model, tok))
    with pytest.raises(LmEvalError, match="unknown task"):
        run_tasks(model, tok, ["no_such_task_here"], include=str(tmp_path))


def test_cli_eval_runs_lm_eval(tmp_path, monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    from conftest import make_tiny_llama

    from llmcodec.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = make_tiny_llama(tmp_path / "m")
    rc = main(["eval", str(folder), "--window", "64", "--windows", "2", "--quiet",
               "--lm-eval", "llmcodec_tiny_local", "--lm-eval-include", str(_task(tmp_path))])
    out = capsys.readouterr().out
    assert rc in (0, None) and "accuracy" in out and "next word" in out
    assert "lm-eval llmcodec_tiny_local: acc,none" in out

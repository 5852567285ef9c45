"""evaluate.py: next-token, next-word and last-word accuracy beside perplexity."""

import numpy as np
import pytest
import torch

from llmcodec.evaluate import EvalSettings, _word_hits, perplexity, word_index


def test_word_index_maps_tokens_to_words_and_marks_sentence_ends():
    text = "the cat\nsat down\n"
    # tokens: "the", " c", "at", "\n", "sat", " down", "\n"
    offsets = [(0, 3), (3, 5), (5, 7), (7, 8), (8, 11), (11, 16), (16, 17)]
    words, last = word_index(text, offsets)
    assert words.tolist() == [0, 1, 1, -1, 2, 3, -1]
    assert last.tolist() == [False, True, False, True]


def test_a_word_counts_only_if_all_its_tokens_are_predicted():
    words = np.array([1, 1, 2, -1, 3, 3, 4])
    correct = np.array([True, False, True, True, True, True, True])
    ids, ok = _word_hits(words, correct, before=0, after=5)
    assert ids.tolist() == [1, 2, 3, 4] and ok.tolist() == [False, True, True, True]
    # the word at the unscored first position and one running on into the next window are left out
    ids, ok = _word_hits(words, correct, before=1, after=4)
    assert ids.tolist() == [2, 3]


class _Oracle(torch.nn.Module):
    """Puts all its mass on the true next token (``wrong``: on another one) at every position."""

    def __init__(self, vocab: int, wrong: bool = False) -> None:
        super().__init__()
        self.vocab, self.wrong = vocab, wrong

    def forward(self, input_ids):
        nxt = torch.roll(input_ids, -1, dims=1)
        if self.wrong:
            nxt = (nxt + 1) % self.vocab
        logits = torch.full((*input_ids.shape, self.vocab), -20.0)
        logits.scatter_(2, nxt[..., None], 20.0)
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("wrong", [False, True])
def test_accuracies_of_a_perfect_and_an_always_wrong_model(tmp_path, wrong):
    from conftest import make_tiny_llama
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_llama(tmp_path / "m"))
    res = perplexity(_Oracle(len(tok), wrong), tok, EvalSettings(window=64, max_windows=4))
    want = 0.0 if wrong else 1.0
    assert res.next_token_accuracy == want and res.next_word_accuracy == want and res.last_word_accuracy == want
    assert res.words > 4 * 60 * 0.8 and 0 < res.sentences < res.words
    assert (res.perplexity > 1000) if wrong else (res.perplexity < 1.01)

import numpy as np
import pytest

from llmcodec.codecs import get_codec
from llmcodec.compress import CompressSettings, compress_matrices
from llmcodec.jobs import JobSpec, encode_job, scan_job
from llmcodec.quant import QuantSpec, coefficient_counts, quantize
from llmcodec.ratemodel import BIN, MAX_BINS, RateModel, entropy_bits, magnitude_counts
from llmcodec.runner import Runner


def test_entropy_of_known_level_distributions():
    zeros = magnitude_counts(np.zeros(1000))
    assert entropy_bits(zeros, 4.0, 0.2) == 0.0
    # half the coefficients at level 0, half at +-1 (step 10): 1 bit of level + a sign bit for half
    x = np.concatenate([np.full(500, 0.1), np.full(250, 10.1), np.full(250, -10.1)])
    assert entropy_bits(magnitude_counts(x), 10.0, 0.2) == pytest.approx(1000 * 1.5)
    # a dead zone of 0.5 rounds 6 up to level 1 at step 10; 0.2 keeps it at 0
    six = magnitude_counts(np.concatenate([np.zeros(500), np.full(500, 6.0)]))
    assert entropy_bits(six, 10.0, 0.5) == pytest.approx(1500)
    assert entropy_bits(six, 10.0, 0.2) == 0.0
    with pytest.raises(ValueError, match="step"):
        entropy_bits(six, 0.0, 0.2)


def test_magnitude_counts_add_up_and_cap():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_000) * 30
    whole = magnitude_counts(x)
    parts = magnitude_counts(x[5000:], magnitude_counts(x[:5000]))
    assert np.array_equal(whole, parts)
    assert whole.sum() == x.size
    huge = magnitude_counts(np.array([1e12, 0.0]))
    assert len(huge) == MAX_BINS and huge[-1] == 1 and huge[0] == 1
    assert magnitude_counts(np.array([3 * BIN + 1e-9]))[3] == 1


def test_coefficient_counts_count_every_weight():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((70, 100)).astype(np.float32)
    qz = quantize(w, QuantSpec(block=32, block_cols=16, compact=True))
    counts = coefficient_counts(w, qz)
    assert counts.sum() == w.size
    with pytest.raises(ValueError, match="coefficient domain"):
        coefficient_counts(w, quantize(w, QuantSpec()))


def test_vvc_rate_model_follows_the_encoder():
    """Matrices of different shapes, distributions and rates: the codec's bits over the model's stay
    within a few per cent of one common factor, from 1 to 4 bits per weight."""
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((256, 512)), rng.laplace(size=(192, 576)), rng.standard_t(4, size=(320, 256))]
    spec = JobSpec("vvc", "default", None, 0.125)
    model = get_codec("vvc").rate_model
    ratios = []
    for k, w in enumerate(mats):
        w = w.astype(np.float32)
        scanned = scan_job(spec, f"m{k}", w, None)
        for qp in (24, 34):
            bits = 8 * len(encode_job(spec, f"m{k}", w, qp, False, None, None, scanned[4]))
            assert 0.9 < bits / w.size < 4.5
            ratios.append(bits / model.bits(scanned[5], qp))
    assert max(ratios) / min(ratios) < 1.08, ratios


def test_rate_model_steps_double_per_octave():
    m = RateModel(step0=1.5, qp_per_octave=6.0, dead_zone=0.2)
    assert m.step(12) == pytest.approx(6.0)
    counts = magnitude_counts(np.random.default_rng(2).laplace(size=5000) * 40)
    assert m.bits(counts, 20) > m.bits(counts, 26) > m.bits(counts, 32) > 0


def test_default_rate_control_codes_no_row_samples(monkeypatch):
    """With the codec's rate model, rate control codes every matrix about once and no row sample,
    and still lands within the tolerance below the budget."""
    calls = []
    encode = Runner.encode

    def counted(self, jobs, sample):
        calls.append((len(jobs), sample))
        return encode(self, jobs, sample)

    monkeypatch.setattr(Runner, "encode", counted)
    rng = np.random.default_rng(3)
    mats = [(f"m{i}", (rng.standard_normal((128 + 32 * (i % 3), 256)) * 0.02).astype(np.float32), "float32")
            for i in range(12)]
    settings = CompressSettings(bpw=2.5, budget="coded")
    out = compress_matrices(mats, settings)
    bpw = sum(c.bits for c in out) / sum(c.numel for c in out)
    assert 2.5 * (1 - settings.tolerance) <= bpw <= 2.5
    assert not [n for n, sample in calls if sample]
    assert sum(n for n, _ in calls) <= 1.5 * len(mats)

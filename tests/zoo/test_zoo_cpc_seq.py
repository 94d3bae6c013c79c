"""CPC on sequences (robench/zoo/cpc_seq.py): the InfoNCE estimate, its candidates, and the probe."""
from __future__ import annotations

import math

import pytest
import torch

from robench.data import Dataset, load_dataset
from robench.registry import models
from robench.target import SEQUENCE
from robench.zoo import cpc_seq as C

pytest.importorskip("mnist1d")


@pytest.fixture(scope="module")
def tiny_mnist1d() -> Dataset:
    data = load_dataset("mnist1d")
    return Dataset("tiny-mnist1d", data.x_train[:256], data.y_train[:256], data.x_test[:64], data.y_test[:64], 10)


def test_positive_scores_are_the_true_future_latents():
    torch.manual_seed(0)
    model = C.CPCSequence(1, latent=8, context=12, horizon=3)
    z = model.latents(torch.rand(4, 1, 40))
    c = model.contexts(z)
    n, steps, _ = z.shape
    assert steps == 10, "g_enc has a total stride of 4"
    for k in (1, 3):
        scores, target = model.scores(z, c, k)
        assert scores.shape == (n * (steps - k), n * steps), "every latent of the batch is a candidate"
        for i, t in ((0, 0), (2, steps - k - 1), (3, 4)):
            row = i * (steps - k) + t
            expected = z[i, t + k] @ model.predictors[k - 1](c[i, t])  # z_{t+k}^T W_k c_t
            assert torch.allclose(scores[row, target[row]], expected, atol=1e-5)


def test_infonce_estimate_never_exceeds_log_candidates_random_and_trained(tiny_mnist1d):
    torch.manual_seed(0)
    model = C.CPCSequence(1)
    random_inputs = [torch.rand(32, 1, 40), torch.zeros(16, 1, 40), torch.rand(2, 1, 40)]
    for x in random_inputs:
        estimate, ceiling = model.infonce_estimate(x)
        assert ceiling == pytest.approx(math.log(len(x) * 10)) and estimate <= ceiling + 1e-9
    before, _ = model.infonce_estimate(tiny_mnist1d.x_test)
    trained = C.cpc_seq(tiny_mnist1d, steps=60, batch_size=32)
    after, ceiling = trained.infonce_estimate(tiny_mnist1d.x_test)
    assert after <= ceiling + 1e-9 and after > before + 0.5, "training raises the bound, below its ceiling"
    for x in (*random_inputs, tiny_mnist1d.x_test[:3]):
        estimate, ceiling = trained.infonce_estimate(x)
        assert estimate <= ceiling + 1e-9
    assert trained.robench_meta["test_infonce_nats"] <= trained.robench_meta["infonce_ceiling_nats"]


def test_cpc_seq_is_an_encoder_and_its_probe_a_sequence_classifier(tiny_mnist1d):
    encoder_entry, probe_entry = models.entry("cpc-seq"), models.entry("cpc-seq-probe")
    assert encoder_entry.inputs == probe_entry.inputs == (SEQUENCE,)
    assert encoder_entry.extra["role"] == "encoder" and probe_entry.extra["role"] == "classifier"
    probe = probe_entry.factory(tiny_mnist1d, steps=20, epochs=20)
    assert probe.encoder(tiny_mnist1d.x_test[:3]).shape == (3, 128)
    x = tiny_mnist1d.x_test[:4].clone().requires_grad_(True)
    logits = probe(x)
    assert logits.shape == (4, 10)
    logits[:, 1].sum().backward()
    assert x.grad.abs().sum() > 0 and all(not p.requires_grad for p in probe.encoder.parameters())
    assert probe.robench_meta["clean_test_accuracy"] > 0.2, "chance is 0.1"

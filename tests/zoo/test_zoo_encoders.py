"""Contrastive encoders: seeded augmentations, every objective trains, WPC's critic is penalised to be
1-Lipschitz, and the deprecated ``cpc`` names resolve to ``infonce-views``."""
from __future__ import annotations

import logging

import pytest
import torch

from robench.registry import models
from robench.zoo import encoders, probes


def test_augment_is_seeded_and_stays_in_bounds(tiny_digits):
    x = tiny_digits.x_train[:16]
    a = encoders.augment(x, torch.Generator().manual_seed(1))
    b = encoders.augment(x, torch.Generator().manual_seed(1))
    c = encoders.augment(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # without noise, a view is a translation by at most one pixel: total ink can only shrink at the border
    shifted = encoders.augment(x, torch.Generator().manual_seed(3), noise=0.0)
    assert (shifted.sum((1, 2, 3)) <= x.sum((1, 2, 3)) + 1e-5).all()


@pytest.mark.parametrize("objective", encoders.OBJECTIVES)
def test_every_objective_trains_deterministically(objective, tiny_digits):
    def train() -> tuple[encoders.ContrastiveModel, dict]:
        model = encoders.seeded_init(0, lambda: encoders.ContrastiveModel(1, 8, 8, objective=objective, dim=16, head_dim=8))
        meta = encoders.train_contrastive(model, tiny_digits.x_train, steps=4, batch_size=16, seed=0)
        return model, meta

    (m1, meta), (m2, _) = train(), train()
    assert meta["steps"] == 4 and torch.isfinite(torch.tensor(meta["final_bound_nats"]))
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(p1, p2), name
    z = m1(tiny_digits.x_test[:5])
    assert z.shape == (5, 16)


def test_wpc_critic_is_penalised_to_be_1_lipschitz(tiny_digits):
    """Measured here (40 steps): 0.83 with the penalty, 4.9 without (critic_lipschitz on 100 test digits)."""

    def trained(penalty: float) -> encoders.ContrastiveModel:
        model = encoders.seeded_init(0, lambda: encoders.ContrastiveModel(1, 8, 8, objective="wpc", dim=16, head_dim=8,
                                                                          penalty=penalty))
        encoders.train_contrastive(model, tiny_digits.x_train, steps=40, batch_size=32, seed=0, lr=3e-3)
        return model

    measure = torch.Generator().manual_seed(5)
    with_gp = encoders.critic_lipschitz(trained(10.0), tiny_digits.x_test, measure)
    without = encoders.critic_lipschitz(trained(0.0), tiny_digits.x_test, torch.Generator().manual_seed(5))
    assert 0.3 <= with_gp <= 1.3, with_gp  # near 1 (a soft penalty: a little above is possible)
    assert without > 3 * with_gp, (without, with_gp)  # and it is the penalty that does it
    # one-sided: zero for a critic whose gradient norm stays below 1, positive once it exceeds 1
    model = encoders.seeded_init(0, lambda: encoders.ContrastiveModel(1, 8, 8, objective="wpc", dim=16, head_dim=8))
    x = tiny_digits.x_train[:8]
    with torch.no_grad():
        for p in model.head[-1].parameters():
            p.mul_(1e-3)
    assert model.gradient_penalty(x, x, torch.Generator().manual_seed(0)).item() == 0.0
    with torch.no_grad():
        for p in model.head[-1].parameters():
            p.mul_(1e6)
    assert model.gradient_penalty(x, x, torch.Generator().manual_seed(0)).item() > 0.0
    assert encoders.ContrastiveModel(1, 8, 8, objective="infonce-views").terms(
        x, x, torch.Generator().manual_seed(0))[1].item() == 0.0


def test_deprecated_cpc_resolves_to_the_same_cached_model(tiny_digits, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(encoders, "_warned", set())
    new = models.get("infonce-views")(tiny_digits, steps=2)
    with caplog.at_level(logging.WARNING, logger="robench.zoo.encoders"):
        old = models.get("cpc")(tiny_digits, steps=2)  # loaded from the file infonce-views wrote: no training
        models.get("cpc")(tiny_digits, steps=2)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1  # warned once
    assert "deprecated" in caplog.records[0].getMessage() and "infonce-views" in caplog.records[0].getMessage()
    assert len(list(tmp_path.glob("infonce-views-*.pt"))) == 1 and not list(tmp_path.glob("cpc*"))
    for (key, a), b in zip(new.state_dict().items(), old.state_dict().values()):
        assert torch.equal(a, b), key
    assert old.robench_meta == new.robench_meta
    probe_new = models.get("infonce-views-probe")(tiny_digits, steps=2)
    probe_old = models.get("cpc-probe")(tiny_digits, steps=2)
    x = tiny_digits.x_test[:8]
    assert torch.equal(probe_new(x), probe_old(x))
    assert len(list(tmp_path.glob("infonce-views-probe-*.pt"))) == 1


def test_probe_without_standardization_keeps_raw_features(tiny_digits, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    raw = models.get("wpc-probe")(tiny_digits, steps=2, standardize=False)
    assert raw.standardize is False and torch.equal(raw.mean, torch.zeros_like(raw.mean))
    assert torch.equal(raw.std, torch.ones_like(raw.std))
    x = tiny_digits.x_test[:4]
    torch.testing.assert_close(raw(x), raw.linear(raw.encoder(x)))
    standard = models.get("wpc-probe")(tiny_digits, steps=2)
    assert standard.standardize and not torch.equal(standard.std, torch.ones_like(standard.std))
    config = encoders.encoder_config("wpc", tiny_digits, steps=2)
    assert probes.probe_config(tiny_digits, seed=0, encoder_config=config) != probes.probe_config(
        tiny_digits, seed=0, encoder_config=config, standardize=False)


def test_progress_callback_sees_every_step(tiny_digits):
    seen = []
    model = encoders.ContrastiveModel(1, 8, 8, objective="infonce-views", dim=8, head_dim=4)
    with encoders.progress_callback(lambda name, done, total: seen.append((name, done, total))):
        encoders.train_contrastive(model, tiny_digits.x_train, steps=3, batch_size=8, seed=0, name="infonce-views")
    assert seen == [("infonce-views", 1, 3), ("infonce-views", 2, 3), ("infonce-views", 3, 3)]


def test_encoders_are_registered_as_encoders_not_classifiers():
    for name in (*encoders.OBJECTIVES, *encoders.ALIASES, "vqvae", "acn"):
        assert models.entry(name).extra["role"] == "encoder"
        assert models.entry(f"{name}-probe").extra["role"] == "classifier"
    assert models.entry("pixelcnn").extra["role"] == "density"

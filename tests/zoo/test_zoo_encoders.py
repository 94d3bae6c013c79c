"""Contrastive encoders: seeded augmentations, every objective trains, WPC stays Lipschitz."""
from __future__ import annotations

import pytest
import torch

from robench.registry import models
from robench.zoo import encoders


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


def test_wpc_encoder_is_lipschitz_constrained(tiny_digits):
    model = encoders.seeded_init(0, lambda: encoders.ContrastiveModel(1, 8, 8, objective="wpc", dim=16, head_dim=8))
    encoders.train_contrastive(model, tiny_digits.x_train, steps=20, batch_size=16, seed=0, lr=1e-2)
    linear = model.encoder.net[-1]
    assert torch.linalg.matrix_norm(linear.weight, ord=2).item() <= 1.05  # spectral norm ~ 1 after power iteration
    plain = encoders.ContrastiveModel(1, 8, 8, objective="cpc")
    assert not hasattr(plain.encoder.net[-1], "parametrizations")


def test_progress_callback_sees_every_step(tiny_digits):
    seen = []
    model = encoders.ContrastiveModel(1, 8, 8, objective="cpc", dim=8, head_dim=4)
    with encoders.progress_callback(lambda name, done, total: seen.append((name, done, total))):
        encoders.train_contrastive(model, tiny_digits.x_train, steps=3, batch_size=8, seed=0, name="cpc")
    assert seen == [("cpc", 1, 3), ("cpc", 2, 3), ("cpc", 3, 3)]


def test_encoders_are_registered_as_encoders_not_classifiers():
    for name in (*encoders.OBJECTIVES, "vqvae"):
        assert models.entry(name).extra["role"] == "encoder"
        assert models.entry(f"{name}-probe").extra["role"] == "classifier"
    assert models.entry("pixelcnn").extra["role"] == "density"

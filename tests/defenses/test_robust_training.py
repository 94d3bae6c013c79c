"""Honest baselines (robench/defenses/robust_training.py): adversarial training and a Lipschitz CNN."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robench.data import load_synthetic
from robench.defenses.robust_training import adversarial_training, lipschitz, pgd_examples
from robench.errors import RobenchError
from robench.target import is_differentiable, is_randomized
from robench.threat import ThreatModel


@pytest.fixture(scope="module")
def tiny_data():
    return load_synthetic(n=64, shape=(1, 4, 4), num_classes=3, seed=0)


def test_pgd_examples_stay_in_the_ball_and_raise_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    threat = ThreatModel("linf", 0.1)
    x_adv = pgd_examples(model, x, y, threat, steps=10, generator=torch.Generator().manual_seed(0))
    assert threat.contains(x_adv, x).all()
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.05
    again = pgd_examples(model, x, y, threat, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, again)  # seeded random start


def test_adversarial_training_builds_a_cached_model(tiny_data):
    model = adversarial_training(None, data=tiny_data, epochs=1, steps=2)
    assert is_differentiable(model) and not is_randomized(model)
    assert set(model.robench_meta) >= {"clean_test_accuracy", "pgd_test_accuracy", "train_seconds"}
    logits = model(tiny_data.x_test[:4])
    assert logits.shape == (4, 3)
    assert torch.equal(adversarial_training(None, data=tiny_data, epochs=1, steps=2)(tiny_data.x_test[:4]), logits)


def test_lipschitz_layers_are_spectrally_normalised(tiny_data):
    model = lipschitz(None, data=tiny_data, epochs=1, logit_scale=2.0)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 4
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma <= 1.0 + 1e-3
    x = tiny_data.x_test[:8]
    noise = 0.01 * torch.randn_like(x)
    with torch.no_grad():
        change = (model(x + noise) - model(x)).norm(dim=1)
    # per-layer bounds; a 3x3 conv's gain is at most 3x its reshaped weight's norm (Sedghi et al. 2019)
    assert (change <= 2.0 * 3 * 3 * noise.flatten(1).norm(dim=1) + 1e-5).all()
    assert is_differentiable(model) and not is_randomized(model)


@pytest.mark.parametrize(
    "factory, params, message",
    [
        (adversarial_training, {"epsilon": 0}, "epsilon must be a finite number > 0"),
        (adversarial_training, {"epsilon": 2.0}, "larger than the data range"),
        (adversarial_training, {"steps": 0}, "steps must be a positive integer"),
        (adversarial_training, {"data": None}, "training split"),
        (lipschitz, {"logit_scale": 0}, "logit_scale must be a number > 0"),
        (lipschitz, {"epochs": 1.5}, "epochs must be a positive integer"),
        (lipschitz, {"data": None}, "training split"),
    ],
)
def test_bad_parameters(factory, params, message, tiny_data):
    params.setdefault("data", tiny_data)
    with pytest.raises(RobenchError, match=message):
        factory(None, **params)

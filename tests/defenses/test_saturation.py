"""Logit saturation (robench/defenses/saturation.py): same predictions, vanishing CE gradients."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.saturation import logit_saturation
from robench.errors import RobenchError
from robench.target import is_differentiable, is_randomized, margin


def test_predictions_unchanged_and_cross_entropy_gradient_underflows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.rand(64, 1, 4, 4)
    y = model(x).argmax(1)  # every example correctly classified by construction
    block = logit_saturation(model, temperature=1e4)
    assert is_differentiable(block) and not is_randomized(block)
    assert torch.equal(block(x).argmax(1), y)
    confident = margin(model(x), y) * 1e4 > 110  # exp(-110) underflows to 0 in float32
    assert confident.sum() > 32
    x_ce = x.clone().requires_grad_(True)
    F.cross_entropy(block(x_ce), y, reduction="sum").backward()
    assert x_ce.grad[confident].abs().max() == 0  # masked for the confident examples
    x_margin = x.clone().requires_grad_(True)
    margin(block(x_margin), y).sum().backward()
    assert (x_margin.grad[confident].flatten(1).abs().sum(1) > 0).all()  # a margin loss still sees the model


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), "1000", True])
def test_bad_temperature(temperature):
    with pytest.raises(RobenchError, match="temperature must be a finite number > 0"):
        logit_saturation(nn.Identity(), temperature=temperature)

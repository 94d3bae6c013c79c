"""Thermometer encoding (robench/defenses/thermometer.py): the code, its relaxation, its classifier."""
import pytest
import torch

from robench.data import load_synthetic
from robench.defenses.thermometer import Thermometer, soft_thermometer, thermometer, thermometer_encode
from robench.errors import RobenchError
from robench.target import is_differentiable, is_randomized


@pytest.mark.parametrize("levels", [2, 5, 16])
def test_encoding_is_a_unary_code_of_the_rounded_value(levels):
    x = torch.rand(6, 2, 4, 4, generator=torch.Generator().manual_seed(levels))
    x[0, 0, 0, :] = torch.tensor([0.0, 1.0, 0.5 / levels, 0.5 / levels - 1e-4])
    bits = thermometer_encode(x, levels).view(6, 2, levels, 4, 4)
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert (bits[:, :, :-1] >= bits[:, :, 1:]).all()  # once 0, always 0: a thermometer
    expected_ones = torch.floor(x * levels + 0.5).clamp(0, levels)
    assert torch.equal(bits.sum(2), expected_ones)
    assert bits[0, 0, :, 0, 0].sum() == 0 and bits[0, 0, :, 0, 1].sum() == levels
    assert bits[0, 0, :, 0, 2].sum() == 1 and bits[0, 0, :, 0, 3].sum() == 0


def test_soft_relaxation_tiles_the_interval_and_agrees_outside_each_bin():
    levels = 8
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    soft = soft_thermometer(x, levels)
    assert soft.shape == thermometer_encode(x, levels).shape
    assert torch.allclose(soft.view(3, 1, levels, 5, 5).sum(2), levels * x, atol=1e-5)
    grid = (torch.arange(levels + 1, dtype=torch.float32) / levels).view(1, 1, -1, 1)  # bin edges
    assert torch.equal(soft_thermometer(grid, levels), thermometer_encode(grid, levels))
    x = x.clone().requires_grad_(True)
    soft_thermometer(x, levels).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, float(levels)))  # useful gradient everywhere
    x.grad = None
    thermometer_encode(x, levels).sum().backward()
    assert x.grad.abs().max() == 0  # the hard code masks the gradient


def test_factory_trains_a_cached_classifier_on_the_encoding():
    data = load_synthetic(n=64, shape=(1, 4, 4), num_classes=3, seed=0)
    block = thermometer(None, data=data, levels=4, epochs=1)
    assert isinstance(block, Thermometer)
    assert not is_differentiable(block) and not is_randomized(block)
    assert block.model.features[0].in_channels == 4
    logits = block(data.x_test[:5])
    assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    again = thermometer(None, data=data, levels=4, epochs=1)  # loaded from the cache, same weights
    assert torch.equal(again(data.x_test[:5]), logits)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"levels": 1}, "levels must be an integer"),
        ({"levels": 3.0}, "levels must be an integer"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"data": None}, "training split"),
    ],
)
def test_bad_parameters(params, message):
    params.setdefault("data", load_synthetic(n=8, shape=(1, 4, 4), num_classes=2))
    with pytest.raises(RobenchError, match=message):
        thermometer(None, **params)

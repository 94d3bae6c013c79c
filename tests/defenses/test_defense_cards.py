"""Every registered defense card names a registered factory with parameters it accepts."""
import inspect

import pytest
import torch
from torch import nn

from robench.cards import all_defense_cards
from robench.data import load_synthetic
from robench.registry import defenses

CARDS = {card.name: card for card in all_defense_cards()}
OURS = ["jpeg-75", "bit-depth-3", "thermometer-16", "random-resize-pad", "gaussian-noise", "logit-saturation", "adv-trained", "lipschitz"]
#: cards that train a model: built here with one epoch instead of the card's
TRAINED = {"thermometer-16", "adv-trained", "lipschitz"}


@pytest.mark.parametrize("name", OURS)
def test_card_is_complete_and_its_factory_accepts_its_params(name):
    card = CARDS[name]
    assert card.paper and card.description
    assert card.differentiable is not None and card.randomized is not None
    factory = defenses.get(card.factory)
    inspect.signature(factory).bind(None, **card.params)


@pytest.mark.parametrize("name", OURS)
def test_card_flags_match_the_built_block(name):
    card = CARDS[name]
    data = load_synthetic(n=32, shape=(1, 8, 8), num_classes=3, seed=0)
    params = dict(card.params)
    factory = defenses.get(card.factory)
    if "data" in inspect.signature(factory).parameters:
        params["data"] = data
    if name in TRAINED:
        params["epochs"] = 1
        if "steps" in params:
            params["steps"] = 1
    torch.manual_seed(0)
    block = factory(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), **params)
    assert getattr(block, "differentiable", True) is card.differentiable
    assert getattr(block, "randomized", False) is card.randomized
    assert block(data.x_test[:3]).shape == (3, 3)

"""Shared supervised training loop for zoo models: seeded, deterministic, CPU by default."""
from __future__ import annotations

import logging

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.errors import RobenchError


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        correct += (model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size]).sum().item()
    return correct / max(len(x), 1)


log = logging.getLogger(__name__)


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    parameters: list[nn.Parameter] | None = None,
) -> None:
    """Adam on cross-entropy (or ``loss_fn(model, x, y)``), minibatches in a seeded order.

    Refuses an empty training set: a model "trained" on nothing would be attacked and reported as if
    it were a model (issue 25: an .npz with only x_test/y_test and the default --model)."""
    if len(x) == 0:
        raise RobenchError("the data set has no training split, so a zoo model cannot be trained on it; give a trained "
                           "model of your own (--model file.py:callable, or robench.evaluate's model), or add x_train "
                           "and y_train to the .npz (train= in robench.evaluate)")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(parameters if parameters is not None else model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            xb, yb = x[batch], y[batch]
            loss = loss_fn(model, xb, yb) if loss_fn is not None else F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()


def seeded_init(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with parameters drawn from a seeded RNG, without touching global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def supervised(name: str, config: dict, build: Callable[[], nn.Module], data, *, epochs: int, seed: int) -> nn.Module:
    """A classifier trained with cross-entropy on ``data`` on first use and cached under ``name``
    (the zoo's ``cnn`` and ``mlp``): seeded build, seeded training, clean accuracy in its meta."""
    from robench.zoo.cache import cached_model

    def train(model: nn.Module) -> dict:
        train_classifier(model, data.x_train, data.y_train, epochs=epochs, seed=seed)
        clean = accuracy(model, data.x_test, data.y_test)
        log.info("%s trained: clean test accuracy %.4f", name, clean)
        return {"clean_test_accuracy": clean}

    return cached_model(name, config, lambda: seeded_init(seed, build), train)

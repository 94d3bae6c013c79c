"""Small ReLU MLPs that a verifier can settle: the exact side of the bracket (issue 14).

``mlp``: a 2 x 32 ReLU MLP with standard training; ``robench.certify``'s ``milp`` answers it
exactly (certified or a verified counterexample) in well under a second per example at the data
set's default epsilon, so the harness's attacks can be measured against ground truth.

``ibp-mlp``: the same architecture trained with interval bound propagation (Gowal et al. 2018,
"On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models",
Eq. 12): the loss mixes the clean cross-entropy with the cross-entropy of the worst-case logits
that IBP bounds over the L-inf ball, with epsilon and the mixing weight ramped up over training,
so its certified accuracy is far from zero and the bracket is tight.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.data import Dataset
from robench.registry import models
from robench.target import ANY
from robench.zoo.cache import cached_model
from robench.zoo.training import accuracy, seeded_init, supervised, train_classifier

log = logging.getLogger(__name__)
CODE_VERSION = 1
HIDDEN = 32


def build_mlp(data: Dataset, hidden: int = HIDDEN) -> nn.Sequential:
    """Flatten, two hidden ReLU layers, logits: the layers every certifier of robench supports."""
    features = math.prod(data.input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, data.num_classes))


def interval_logits(model: nn.Sequential, x: Tensor, epsilon: float, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Differentiable IBP bounds on the logits over the L-inf ball ∩ bounds (training only; the
    sound, float64 certifier is ``robench.certify.ibp``)."""
    lower, upper = (x - epsilon).clamp(*bounds), (x + epsilon).clamp(*bounds)
    for layer in model:
        if isinstance(layer, nn.Flatten):
            lower, upper = layer(lower), layer(upper)
        elif isinstance(layer, nn.Linear):
            center, radius = (upper + lower) / 2, (upper - lower) / 2
            center, radius = layer(center), radius @ layer.weight.abs().T
            lower, upper = center - radius, center + radius
        elif isinstance(layer, nn.ReLU):
            lower, upper = lower.relu(), upper.relu()
        else:
            raise TypeError(f"interval_logits: unsupported layer {type(layer).__name__}")
    return lower, upper


def worst_case_logits(lower: Tensor, upper: Tensor, y: Tensor) -> Tensor:
    """The true class at its lower bound, every other class at its upper bound."""
    return torch.where(F.one_hot(y, upper.shape[1]).bool(), lower, upper)


@models.register("mlp", inputs=(ANY,), description="2 x 32 ReLU MLP (standard training, cached): small enough for exact MILP verification")
def mlp(data: Dataset, *, seed: int = 0, epochs: int = 30) -> nn.Module:
    config = {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "epochs": epochs}
    return supervised("mlp", config, lambda: build_mlp(data), data, epochs=epochs, seed=seed)


@models.register("ibp-mlp", inputs=(ANY,),
                 description="the mlp trained with interval bound propagation (Gowal et al. 2018) at the data's L-inf epsilon: certifiably robust")
def ibp_mlp(data: Dataset, *, seed: int = 0, epochs: int = 60, epsilon: float | None = None, kappa_final: float = 0.5) -> nn.Module:
    """IBP training: epsilon ramps linearly from 0 over the first half of training, and the clean
    weight kappa from 1 to ``kappa_final`` (Gowal et al. 2018, Sec. 4; eps_train = eps_test here)."""
    epsilon = data.default_epsilon("linf") if epsilon is None else float(epsilon)
    config = {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "epochs": epochs, "epsilon": epsilon,
              "kappa_final": kappa_final}
    steps_per_epoch = max(1, math.ceil(len(data.x_train) / 64))
    ramp = max(1, (epochs // 2) * steps_per_epoch)

    def train(model: nn.Module) -> dict:
        step = [0]

        def loss(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            progress = min(1.0, step[0] / ramp)
            step[0] += 1
            kappa = 1.0 - (1.0 - kappa_final) * progress
            clean = F.cross_entropy(net(xb), yb)
            lower, upper = interval_logits(net, xb, epsilon * progress, data.bounds)
            return kappa * clean + (1 - kappa) * F.cross_entropy(worst_case_logits(lower, upper, yb), yb)

        train_classifier(model, data.x_train, data.y_train, epochs=epochs, seed=seed, loss_fn=loss)
        clean = accuracy(model, data.x_test, data.y_test)
        with torch.no_grad():
            lower, upper = interval_logits(model, data.x_test, epsilon, data.bounds)
            verified = (worst_case_logits(lower, upper, data.y_test).argmax(1) == data.y_test).float().mean().item()
        log.info("ibp-mlp trained: clean test accuracy %.4f, IBP-verified %.4f at eps %g", clean, verified, epsilon)
        return {"clean_test_accuracy": clean, "ibp_verified_accuracy": verified, "epsilon": epsilon}

    return cached_model("ibp-mlp", config, lambda: seeded_init(seed, lambda: build_mlp(data)), train)

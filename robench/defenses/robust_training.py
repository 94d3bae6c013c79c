"""Honest baselines: models made robust by training, not by hiding their gradients.

``adversarial_training``: Madry, Makelov, Schmidt, Tsipras, Vladu (2018), "Towards Deep Learning
Models Resistant to Adversarial Attacks": minimise the cross-entropy on PGD adversarial examples
(Eq. 2.1, the inner maximisation approximated by PGD from a uniform random start in the L-inf
ball, step size 2.5 * epsilon / steps as in Sec. 5 / Appendix).

``lipschitz``: every convolution and linear layer spectrally normalised (Miyato et al. 2018,
``torch.nn.utils.parametrizations.spectral_norm``), which bounds each layer's gain and hence
how fast the logits can move with the input (Tsuzuku, Sato, Sugiyama 2018 train such networks
for robustness). A fixed ``logit_scale`` lets cross-entropy reach confident predictions.

Both use the cnn zoo architecture, are trained on ``data`` on first use and cached like every
zoo model; the ``model`` handed to the factory is not used (these defenses are the model).
They are differentiable and deterministic: every attack should see their true robustness, and
SPSA should not beat PGD on them (Uesato et al. 2018, Sec. 5).
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from robench.data import Dataset
from robench.errors import RobenchError
from robench.registry import defenses
from robench.target import IMAGE
from robench.threat import ThreatModel
from robench.zoo.cache import cached_model
from robench.zoo.cnn import architecture_key, build_cnn
from robench.zoo.training import accuracy, seeded_init, train_classifier

log = logging.getLogger(__name__)
CODE_VERSION = 2


def pgd_examples(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, steps: int, generator: torch.Generator,
) -> Tensor:
    """L-inf PGD on the cross-entropy from a uniform random start (Madry et al. 2018, Eq. 2.1).

    The training loop's inner maximisation, not an evaluation attack: every example takes every
    step (no early exit) on the batch-mean loss, drawing its start from a ``torch.Generator``
    (``ThreatModel.random_start``), exactly as the cached weights were trained; robench's
    evaluation PGD is ``robench.attacks.pgd``."""
    step_size = 2.5 * threat.epsilon / steps
    x_adv = threat.random_start(x, generator=generator)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = threat.project(x_adv.detach() + step_size * grad.sign(), x)
    return x_adv.detach()


def _require_data(name: str, data: Dataset | None) -> Dataset:
    if data is None or len(data.x_train) == 0:
        raise RobenchError(f"{name}: trains its own model and needs a data set with a training split "
                           "(an .npz needs x_train and y_train)")
    return data


def _check_positive_int(name: str, key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RobenchError(f"{name}: {key} must be a positive integer, got {value!r}")


class ScaledLogits(nn.Module):
    """``scale * model(x)``: a fixed gain after a Lipschitz-bounded network."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


@defenses.register("adversarial_training", description="PGD adversarial training (Madry et al. 2018): honest robust baseline",
                   inputs=(IMAGE,), own_model="cnn")
def adversarial_training(
    model: nn.Module | None = None,
    *,
    data: Dataset | None = None,
    epsilon: float | None = None,
    steps: int = 7,
    epochs: int = 20,
    seed: int = 0,
) -> nn.Module:
    """A cnn zoo CNN trained on L-inf PGD examples at ``epsilon`` (default: the data set's standard
    L-inf epsilon, as Madry et al. train at the epsilon they evaluate); cached; ``model`` is ignored."""
    data = _require_data("adversarial_training", data)
    epsilon = data.default_epsilon("linf") if epsilon is None else epsilon
    _check_positive_int("adversarial_training", "steps", steps)
    _check_positive_int("adversarial_training", "epochs", epochs)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise RobenchError(f"adversarial_training: epsilon must be a number, got {epsilon!r}")
    threat = ThreatModel("linf", float(epsilon), data.bounds)  # validates epsilon against the bounds

    def train(network: nn.Module) -> dict:
        generator = torch.Generator().manual_seed(seed + 1)

        def adversarial_loss(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            return F.cross_entropy(net(pgd_examples(net, xb, yb, threat, steps=steps, generator=generator)), yb)

        start = time.perf_counter()
        train_classifier(network, data.x_train, data.y_train, epochs=epochs, seed=seed, loss_fn=adversarial_loss)
        seconds = time.perf_counter() - start
        clean = accuracy(network, data.x_test, data.y_test)
        x_adv = pgd_examples(network, data.x_test, data.y_test, threat, steps=steps, generator=torch.Generator().manual_seed(seed + 2))
        robust = accuracy(network, x_adv, data.y_test)
        log.info("adversarial training: %.1fs; clean test accuracy %.4f, PGD-%d accuracy %.4f", seconds, clean, steps, robust)
        return {"clean_test_accuracy": clean, "pgd_test_accuracy": robust, "train_seconds": round(seconds, 2)}

    config = {"code": CODE_VERSION, "data": data.fingerprint, "epsilon": float(epsilon), "steps": steps, "epochs": epochs,
              "seed": seed, **architecture_key(data.input_shape)}
    return cached_model("adv-cnn", config, lambda: seeded_init(seed, lambda: build_cnn(data)), train)


def build_lipschitz_cnn(data: Dataset, logit_scale: float) -> nn.Module:
    """The cnn zoo architecture with every Conv2d and Linear layer spectrally normalised."""
    network = build_cnn(data)
    for module in list(network.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            spectral_norm(module)
    return ScaledLogits(network, logit_scale)


@torch.no_grad()
def converge_spectral_norms(network: nn.Module, x: Tensor, iterations: int = 50) -> None:
    """Run the power iterations to convergence, so the eval-mode weights have norm <= 1.

    Training takes one power-iteration step per batch, which lags behind the moving weights;
    the singular-vector estimates stored for eval mode are refined here on the final weights.
    """
    network.train()
    for _ in range(iterations):
        network(x)
    network.eval()


@defenses.register("lipschitz", description="spectrally normalised CNN (Lipschitz-bounded): honest baseline",
                   inputs=(IMAGE,), own_model="cnn")
def lipschitz(
    model: nn.Module | None = None,
    *,
    data: Dataset | None = None,
    logit_scale: float = 10.0,
    epochs: int = 30,
    seed: int = 0,
) -> nn.Module:
    """A spectrally normalised cnn zoo CNN trained on ``data`` (cached); ``model`` is ignored."""
    data = _require_data("lipschitz", data)
    _check_positive_int("lipschitz", "epochs", epochs)
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or not logit_scale > 0:
        raise RobenchError(f"lipschitz: logit_scale must be a number > 0, got {logit_scale!r}")

    def train(network: nn.Module) -> dict:
        start = time.perf_counter()
        train_classifier(network, data.x_train, data.y_train, epochs=epochs, seed=seed)
        converge_spectral_norms(network, data.x_train[:1])
        seconds = time.perf_counter() - start
        clean = accuracy(network, data.x_test, data.y_test)
        log.info("lipschitz cnn: %.1fs; clean test accuracy %.4f", seconds, clean)
        return {"clean_test_accuracy": clean, "train_seconds": round(seconds, 2)}

    config = {"code": CODE_VERSION, "data": data.fingerprint, "logit_scale": float(logit_scale), "epochs": epochs,
              "seed": seed, **architecture_key(data.input_shape)}
    return cached_model("lipschitz-cnn", config, lambda: seeded_init(seed, lambda: build_lipschitz_cnn(data, float(logit_scale))), train)

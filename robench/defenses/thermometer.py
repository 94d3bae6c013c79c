"""Thermometer encoding (Buckman, Roy, Raffel, Goodfellow 2018) with a classifier trained on it.

Each pixel value x in [0, 1] becomes ``levels`` bits, bit k = 1 iff x >= (k + 1/2) / levels
(k = 0..levels-1): a unary code of x quantized to ``levels + 1`` values. The hard threshold has
zero gradient almost everywhere, which is why the defense looked robust.

BPDA stand-in (Athalye, Carlini, Wagner 2018, Sec. 5.2.1 use a clipped linear relaxation):
bit k becomes the ramp clamp(levels * x - k, 0, 1), which rises from 0 to 1 across the k-th of
``levels`` equal bins of [0, 1]. The ramps tile the interval, so their sum is ``levels * x`` and
every pixel has a useful gradient; the ramp equals the hard bit wherever x is outside the bin.

The classifier is the cnn zoo architecture with ``levels * channels`` input channels, trained
(clean, not adversarially: Buckman et al. also report clean-trained results) on the encoded
training set and cached like every zoo model. The ``model`` handed to the factory is not used.
"""
from __future__ import annotations

import logging
import time

import torch
from torch import Tensor, nn

from robench.data import Dataset
from robench.target import IMAGE, Preprocessed
from robench.errors import RobenchError
from robench.registry import defenses
from robench.zoo.cache import cached_model
from robench.zoo.cnn import SmallCNN, architecture_key
from robench.zoo.training import accuracy, seeded_init, train_classifier

log = logging.getLogger(__name__)
CODE_VERSION = 1


def thermometer_encode(x: Tensor, levels: int) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C * levels, H, W) of 0/1; channel c * levels + k is bit k of channel c.

    Bit k is 1 iff x >= (k + 1/2) / levels, written with ``floor`` so that the output stays
    attached to x with an exactly-zero gradient (what a plain gradient attack sees).
    """
    k = torch.arange(levels, device=x.device, dtype=x.dtype).view(1, 1, -1, 1, 1)
    return torch.floor(levels * x.unsqueeze(2) - k + 0.5).clamp(0, 1).flatten(1, 2)


def soft_thermometer(x: Tensor, levels: int) -> Tensor:
    """The differentiable relaxation: bit k -> clamp(levels * x - k, 0, 1)."""
    k = torch.arange(levels, device=x.device, dtype=x.dtype).view(1, 1, -1, 1, 1)
    return (levels * x.unsqueeze(2) - k).clamp(0, 1).flatten(1, 2)


class Thermometer(Preprocessed):
    """``classifier(thermometer_encode(x))``; not differentiable (BPDA: the soft ramps)."""

    differentiable = False

    def __init__(self, classifier: nn.Module, levels: int) -> None:
        super().__init__(classifier)
        self.levels = levels

    def transform(self, x: Tensor) -> Tensor:
        return thermometer_encode(x, self.levels)

    def bpda(self, x: Tensor) -> Tensor:
        return soft_thermometer(x, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


@defenses.register("thermometer", description="thermometer encoding + a classifier trained on it (Buckman et al. 2018)",
                   inputs=(IMAGE,), own_model="cnn")
def thermometer(
    model: nn.Module | None = None,
    *,
    data: Dataset | None = None,
    levels: int = 16,
    epochs: int = 30,
    seed: int = 0,
) -> nn.Module:
    """``model`` is ignored: the encoding needs its own classifier, trained on ``data`` (cached)."""
    if not isinstance(levels, int) or isinstance(levels, bool) or not 2 <= levels <= 256:
        raise RobenchError(f"thermometer: levels must be an integer from 2 to 256, got {levels!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise RobenchError(f"thermometer: epochs must be a positive integer, got {epochs!r}")
    if data is None or len(data.x_train) == 0:
        raise RobenchError("thermometer: trains its own classifier and needs a data set with a training split "
                           "(an .npz needs x_train and y_train)")
    if data.bounds != (0.0, 1.0):
        raise RobenchError(f"thermometer: encodes pixels in [0, 1], but the data's bounds are {data.bounds}; rescale the data")
    c, h, w = data.input_shape

    def build() -> nn.Module:
        return seeded_init(seed, lambda: SmallCNN(c * levels, h, w, data.num_classes))

    def train(classifier: nn.Module) -> dict:
        encode = lambda x: thermometer_encode(x, levels)  # noqa: E731
        start = time.perf_counter()
        train_classifier(classifier, encode(data.x_train), data.y_train, epochs=epochs, seed=seed)
        seconds = time.perf_counter() - start
        acc = accuracy(classifier, encode(data.x_test), data.y_test)
        log.info("thermometer-%d classifier: %.1fs; clean test accuracy %.4f", levels, seconds, acc)
        return {"clean_test_accuracy": acc, "train_seconds": round(seconds, 2)}

    config = {"code": CODE_VERSION, "data": data.fingerprint, "levels": levels, "epochs": epochs, "seed": seed,
              **architecture_key(data.input_shape)}
    classifier = cached_model(f"thermometer{levels}", config, build, train)
    return Thermometer(classifier, levels)

"""The supervised baseline: a small CNN trained on the evaluation data set on first use."""
from __future__ import annotations

import logging

import torch
from torch import nn

from robench.data import Dataset
from robench.registry import models
from robench.target import IMAGE
from robench.zoo.training import supervised

log = logging.getLogger(__name__)
CODE_VERSION = 2


#: images at least this tall and wide get a pooling after each convolution (MNIST's 28 x 28): a
#: quarter of the compute, so the trained defenses fit their training budget on 2 cores
POOL_EACH_FROM = 16


def pools_each(height: int, width: int) -> bool:
    return height >= POOL_EACH_FROM and width >= POOL_EACH_FROM


def architecture_key(shape: tuple[int, ...]) -> dict[str, str]:
    """What a cache key must add for the architecture SmallCNN builds for ``shape`` (nothing for
    small images, whose weights were cached before the variant existed)."""
    return {"arch": "pool-each"} if len(shape) == 3 and pools_each(shape[1], shape[2]) else {}


class SmallCNN(nn.Module):
    """Two 3x3 conv layers, pooling, two linear layers; works for any C x H x W input.

    Small images (the digits' 8 x 8) pool once, after both convolutions; images of 16 x 16 and
    more (MNIST) pool after each convolution.
    """

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int, width_mult: int = 16) -> None:
        super().__init__()
        c1, c2 = width_mult, 2 * width_mult
        each = pools_each(height, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            *([nn.MaxPool2d(2)] if each else []),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side_h, side_w = (height // 4, width // 4) if each else (height // 2, width // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side_h * side_w, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_cnn(data: Dataset) -> SmallCNN:
    c, h, w = data.input_shape
    return SmallCNN(c, h, w, data.num_classes)


@models.register("cnn", inputs=(IMAGE,), description="small supervised CNN trained on the data set on first use (cached; shipped for digits and mnist)")
def cnn(data: Dataset, *, seed: int = 0, epochs: int = 30) -> nn.Module:
    config = {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "epochs": epochs, **architecture_key(data.input_shape)}
    return supervised("cnn", config, lambda: build_cnn(data), data, epochs=epochs, seed=seed)


@models.register("mnist-cnn", inputs=(IMAGE,),
                 description="the cnn trained on the mnist data set (standard training; shipped), for any 1x28x28 test set")
def mnist_cnn(data: Dataset | None = None, *, seed: int = 0, epochs: int = 30) -> nn.Module:
    """The supervised MNIST baseline: ``cnn`` trained on robench's mnist split, whatever is attacked."""
    from robench.data import load_mnist
    from robench.errors import RobenchError

    mnist = load_mnist()
    if data is not None and data.input_shape != mnist.input_shape:
        raise RobenchError(f"model 'mnist-cnn' takes 1x28x28 images, but the data set holds {data.input_shape}; "
                           "use --dataset mnist or an .npz of MNIST digits")
    return cnn(mnist, seed=seed, epochs=epochs)

"""The supervised baseline: a small CNN trained on the evaluation data set on first use."""
from __future__ import annotations

import logging

import torch
from torch import nn

from robench.data import Dataset
from robench.registry import models
from robench.target import IMAGE
from robench.zoo.cache import cached_model
from robench.zoo.training import accuracy, seeded_init, train_classifier

log = logging.getLogger(__name__)
CODE_VERSION = 2


class SmallCNN(nn.Module):
    """Two 3x3 conv layers, one pooling, two linear layers; works for any C x H x W input."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int, width_mult: int = 16) -> None:
        super().__init__()
        c1, c2 = width_mult, 2 * width_mult
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * (height // 2) * (width // 2), 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_cnn(data: Dataset) -> SmallCNN:
    c, h, w = data.input_shape
    return SmallCNN(c, h, w, data.num_classes)


@models.register("cnn", inputs=(IMAGE,), description="small supervised CNN trained on the data set on first use (cached)")
def cnn(data: Dataset, *, seed: int = 0, epochs: int = 30) -> nn.Module:
    config = {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "epochs": epochs}

    def train(model: nn.Module) -> dict:
        train_classifier(model, data.x_train, data.y_train, epochs=epochs, seed=seed)
        acc = accuracy(model, data.x_test, data.y_test)
        log.info("cnn trained: clean test accuracy %.4f", acc)
        return {"clean_test_accuracy": acc}

    return cached_model("cnn", config, lambda: seeded_init(seed, lambda: build_cnn(data)), train)

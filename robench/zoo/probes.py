"""Target classifiers from representation models: a frozen encoder plus a linear probe.

The linear-evaluation protocol of representation learning (CPC, van den Oord et al. 2018, Sec. 3.1):
the encoder is trained without labels and frozen; only a linear map from its (standardised)
representation to class logits is trained. Attacking the probe measures how robust the
representation is, which is the question the zoo exists to answer. Registered as ``NAME-probe``
for every encoder NAME (``infonce-views-probe``, ``wpc-probe``, ``vqvae-probe``, ...; ``cpc-probe`` is
the deprecated alias of ``infonce-views-probe``). ``standardize=False`` trains the linear map on the
raw representation, so a Lipschitz bound on the encoder carries over to the classifier as
Lip(encoder) x ||W||_2 (standardizing divides by per-feature deviations, which can be small).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robench.data import Dataset
from robench.registry import models
from robench.target import IMAGE
from robench.zoo import encoders, vqvae
from robench.zoo.cache import cached_model
from robench.zoo.training import accuracy, seeded_init, train_classifier

log = logging.getLogger(__name__)
CODE_VERSION = 1


class LinearProbe(nn.Module):
    """logits = W (encoder(x) - mean) / std + b, with the encoder's parameters frozen (mean 0 and std 1
    when ``standardize`` is False)."""

    differentiable = True
    randomized = False

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int, *, standardize: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.standardize = standardize
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, num_classes)

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout/batch-norm updates, spectral-norm power iteration stays put
        return self

    def standardized(self, x: Tensor) -> Tensor:
        return (self.encoder(x) - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.standardized(x))


@torch.no_grad()
def features(encoder: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    encoder.eval()
    return torch.cat([encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def fit_probe(probe: LinearProbe, data: Dataset, *, epochs: int, seed: int, weight_decay: float = 1e-4) -> dict:
    """Standardise the frozen features (unless ``probe.standardize`` is False), then train the linear
    layer on them (cross-entropy, Adam)."""
    train_features = features(probe.encoder, data.x_train)
    if probe.standardize:
        probe.mean.copy_(train_features.mean(0))
        probe.std.copy_(train_features.std(0).clamp_min(1e-6))
    # the features are precomputed once: only the linear layer trains
    train_classifier(probe.linear, (train_features - probe.mean) / probe.std, data.y_train, epochs=epochs, seed=seed,
                     lr=1e-2, weight_decay=weight_decay, batch_size=128)
    acc = accuracy(probe, data.x_test, data.y_test)
    return {"clean_test_accuracy": acc, "train_accuracy": accuracy(probe, data.x_train, data.y_train)}


def probe_config(data: Dataset, *, seed: int, encoder_config: dict, epochs: int = 100, standardize: bool = True) -> dict:
    """The cache key's configuration: the probe's own settings and its encoder's whole configuration."""
    config = {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "epochs": epochs, "encoder": encoder_config}
    if not standardize:  # only then: the standardized probes keep the cache keys they had
        config["standardize"] = False
    return config


def probe_model(
    name: str,
    data: Dataset,
    *,
    seed: int,
    encoder_config: dict,
    build_encoder: Callable[[], nn.Module],
    trained_encoder: Callable[[], nn.Module],
    epochs: int = 100,
    standardize: bool = True,
) -> LinearProbe:
    """Cache a probe keyed by its encoder's configuration; the encoder is trained only if needed."""
    config = probe_config(data, seed=seed, encoder_config=encoder_config, epochs=epochs, standardize=standardize)

    def build() -> nn.Module:
        def make() -> LinearProbe:
            encoder = build_encoder()
            dim = features(encoder, data.x_test[:2]).shape[1]
            return LinearProbe(encoder, dim, data.num_classes, standardize=standardize)

        return seeded_init(seed, make)

    def train(probe: nn.Module) -> dict:
        start = time.perf_counter()  # includes training the encoder when it is not cached
        probe.encoder.load_state_dict(trained_encoder().state_dict())
        meta = fit_probe(probe, data, epochs=epochs, seed=seed)
        meta["train_seconds"] = time.perf_counter() - start
        log.info("%s trained: clean test accuracy %.4f", name, meta["clean_test_accuracy"])
        return meta

    probe = cached_model(name, config, build, train)
    for p in probe.encoder.parameters():
        p.requires_grad_(False)
    return probe


def _register_contrastive(name: str) -> None:
    """``NAME-probe`` for encoder objective ``name`` (a deprecated alias resolves when called, warning once)."""

    def factory(data: Dataset, *, seed: int = 0, steps: int = 500, standardize: bool = True) -> nn.Module:
        objective = encoders.canonical_objective(name)
        c, h, w = data.input_shape
        return probe_model(
            f"{objective}-probe", data, seed=seed, standardize=standardize,
            encoder_config=encoders.encoder_config(objective, data, seed=seed, steps=steps),
            build_encoder=lambda: encoders.ContrastiveModel(c, h, w, objective=objective),
            trained_encoder=lambda: encoders.contrastive_encoder(objective, data, seed=seed, steps=steps),
        )

    factory.__name__ = f"{name.replace('-', '_')}_probe"
    if name in encoders.ALIASES:
        description = f"deprecated alias of {encoders.ALIASES[name]}-probe (the same cached model)"
    else:
        description = f"frozen {name} encoder + linear probe (classifier; trains the encoder on first use, cached)"
    models.register(f"{name}-probe", inputs=(IMAGE,), description=description, role="classifier")(factory)


for _objective in (*encoders.OBJECTIVES, *encoders.ALIASES):
    _register_contrastive(_objective)


@models.register("vqvae-probe", inputs=(IMAGE,), description="frozen VQ-VAE encoder (quantized codes) + linear probe (classifier, cached)",
                 role="classifier")
def vqvae_probe(data: Dataset, *, seed: int = 0, steps: int = vqvae.DEFAULT_STEPS) -> nn.Module:
    c, h, w = data.input_shape
    return probe_model(
        "vqvae-probe", data, seed=seed,
        encoder_config=vqvae.vqvae_config(data, seed=seed, steps=steps),
        build_encoder=lambda: vqvae.VQVAE(c, h, w),
        trained_encoder=lambda: vqvae.vqvae(data, seed=seed, steps=steps),
    )

"""Representation encoders trained with MI bounds on two augmented views of each image.

The contrastive setup of CPC / SimCLR: two random augmentations of the same image are a positive
pair, the other images of the batch the negatives; a separable critic scores every pair and the
encoder maximises a lower bound on I(view1; view2) (Poole et al. 2019). Registered models:

- ``cpc``: InfoNCE (van den Oord et al. 2018);
- ``nwj``, ``js``, ``interpolated``: the same encoder trained with those bounds (Poole et al. 2019);
- ``wpc``: the Wasserstein dependency measure (Ozair et al. 2019): the InfoNCE objective with a
  Lipschitz critic, enforced here by spectral normalisation of every encoder/head layer.

An encoder maps N x C x H x W inputs to N x ``dim`` representations; it is not a classifier (see
``robench.zoo.probes`` for the frozen-encoder + linear-probe targets).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from robench.data import Dataset
from robench.errors import RobenchError
from robench.registry import models
from robench.target import IMAGE
from robench.zoo import bounds
from robench.zoo.cache import cached_model
from robench.zoo.training import seeded_init

log = logging.getLogger(__name__)
CODE_VERSION = 1
OBJECTIVES = ("cpc", "nwj", "js", "interpolated", "wpc")

# --- progress reporting -------------------------------------------------------------------------
#: ``callback(model_name, steps_done, steps_total)``; set by ``robench zoo train`` to draw a bar
_progress: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("robench_zoo_progress", default=None)


@contextlib.contextmanager
def progress_callback(callback: Callable[[str, int, int], None]) -> Iterator[None]:
    """Within the block, zoo training loops report each step to ``callback`` (library code never prints)."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def fit(
    name: str,
    module: nn.Module,
    loss_fn: Callable[[Tensor, torch.Generator], Tensor],
    x: Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = 1e-3,
) -> list[float]:
    """Adam for ``steps`` minibatches drawn with a seeded generator; returns the loss per step.

    ``loss_fn(batch, generator)`` gets the generator too, for seeded augmentations.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    callback = _progress.get()
    losses: list[float] = []
    module.train()
    for step in range(steps):
        batch = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
        loss = loss_fn(x[batch], generator)
        if not torch.isfinite(loss):
            raise RobenchError(f"training {name}: the loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(name, step + 1, steps)
    module.eval()
    return losses


# --- augmentation -------------------------------------------------------------------------------
def augment(x: Tensor, generator: torch.Generator, *, max_shift: int = 1, noise: float = 0.1) -> Tensor:
    """A random view: translate by up to ``max_shift`` pixels (zero fill), add Gaussian noise, clip to [0, 1]."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, padded.shape[3])
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    shifted = shifted.gather(3, cols)
    return (shifted + noise * torch.randn(shifted.shape, generator=generator)).clamp(0.0, 1.0)


# --- networks -----------------------------------------------------------------------------------
class ConvEncoder(nn.Module):
    """conv3x3(32) - ReLU - conv3x3 stride 2 (64) - ReLU - linear(dim): a representation of size ``dim``.

    ``lipschitz=True`` spectrally normalises every layer (Miyato et al. 2018), which bounds the
    encoder's Lipschitz constant as WPC requires (Ozair et al. 2019, Sec. 4).
    """

    def __init__(self, in_channels: int, height: int, width: int, *, dim: int = 128, lipschitz: bool = False) -> None:
        super().__init__()
        wrap = spectral_norm if lipschitz else (lambda layer: layer)
        self.dim = dim
        self.net = nn.Sequential(
            wrap(nn.Conv2d(in_channels, 32, 3, padding=1)),
            nn.ReLU(),
            wrap(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            nn.Flatten(),
            wrap(nn.Linear(64 * math.ceil(height / 2) * math.ceil(width / 2), dim)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ContrastiveModel(nn.Module):
    """Encoder + projection head + separable critic; ``forward`` gives the representation.

    Scores are ``head(z1) . head(z2) / temperature`` on unit vectors (SimCLR's cosine critic), except
    for WPC, whose Lipschitz critic uses unnormalised spectrally normalised features times ``scale``.
    A learned scalar log-baseline serves the interpolated bound (Poole Eq. 15).
    """

    def __init__(
        self, in_channels: int, height: int, width: int, *, objective: str, dim: int = 128, head_dim: int = 64,
        temperature: float = 0.2, scale: float = 5.0,
    ) -> None:
        super().__init__()
        lipschitz = objective == "wpc"
        wrap = spectral_norm if lipschitz else (lambda layer: layer)
        self.objective = objective
        self.temperature = temperature
        self.scale = scale
        self.encoder = ConvEncoder(in_channels, height, width, dim=dim, lipschitz=lipschitz)
        self.head = nn.Sequential(nn.ReLU(), wrap(nn.Linear(dim, dim)), nn.ReLU(), wrap(nn.Linear(dim, head_dim)))
        self.log_baseline = nn.Parameter(torch.zeros(()))

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def scores(self, view1: Tensor, view2: Tensor) -> Tensor:
        """K x K critic scores; the diagonal pairs two views of the same image."""
        g1, g2 = self.head(self.encoder(view1)), self.head(self.encoder(view2))
        if self.objective == "wpc":
            return self.scale * (g1 @ g2.T) / math.sqrt(g1.shape[1])
        return F.normalize(g1, dim=1) @ F.normalize(g2, dim=1).T / self.temperature

    def bound(self, scores: Tensor, *, alpha: float = 0.01) -> Tensor:
        """The objective's MI lower bound on this batch (nats)."""
        if self.objective in ("cpc", "wpc"):
            return bounds.infonce(scores)
        if self.objective == "nwj":
            return bounds.nwj(scores)
        if self.objective == "js":
            return bounds.js(scores)
        return bounds.interpolated(scores, self.log_baseline, alpha)


def train_contrastive(
    model: ContrastiveModel, x: Tensor, *, steps: int, batch_size: int, seed: int, lr: float = 1e-3,
    alpha: float = 0.01, name: str = "encoder",
) -> dict:
    """Maximise the model's bound between two augmented views; returns the final bound estimate."""

    def loss(batch: Tensor, generator: torch.Generator) -> Tensor:
        return -model.bound(model.scores(augment(batch, generator), augment(batch, generator)), alpha=alpha)

    start = time.perf_counter()
    losses = fit(name, model, loss, x, steps=steps, batch_size=batch_size, seed=seed, lr=lr)
    tail = losses[-max(1, len(losses) // 10):]
    return {"final_bound_nats": -sum(tail) / len(tail), "steps": steps, "train_seconds": time.perf_counter() - start}


def contrastive_encoder(
    objective: str, data: Dataset, *, seed: int = 0, steps: int = 500, batch_size: int = 128, dim: int = 128,
    lr: float = 1e-3, alpha: float = 0.01,
) -> ContrastiveModel:
    """Train (or load from the cache) the encoder for ``objective`` on ``data.x_train``."""
    if objective not in OBJECTIVES:
        raise RobenchError(f"unknown contrastive objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    config = encoder_config(objective, data, seed=seed, steps=steps, batch_size=batch_size, dim=dim, lr=lr, alpha=alpha)
    c, h, w = data.input_shape

    def build() -> nn.Module:
        return seeded_init(seed, lambda: ContrastiveModel(c, h, w, objective=objective, dim=dim))

    def train(model: nn.Module) -> dict:
        meta = train_contrastive(model, data.x_train, steps=steps, batch_size=batch_size, seed=seed, lr=lr,
                                 alpha=alpha, name=objective)
        log.info("%s trained: final bound %.3f nats", objective, meta["final_bound_nats"])
        return meta

    return cached_model(objective, config, build, train)


def encoder_config(objective: str, data: Dataset, *, seed: int = 0, steps: int = 500, batch_size: int = 128,
                   dim: int = 128, lr: float = 1e-3, alpha: float = 0.01) -> dict:
    """The cache key's configuration (also used by ``robench zoo list`` to find cached files)."""
    config = {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "steps": steps,
              "batch_size": batch_size, "dim": dim, "lr": lr}
    if objective == "interpolated":
        config["alpha"] = alpha
    return config


def _register(objective: str, description: str) -> None:
    def factory(data: Dataset, *, seed: int = 0, steps: int = 500) -> nn.Module:
        return contrastive_encoder(objective, data, seed=seed, steps=steps)

    factory.__name__ = f"{objective}_encoder"
    factory.__doc__ = description
    models.register(objective, inputs=(IMAGE,), description=description, role="encoder")(factory)


_register("cpc", "encoder trained with InfoNCE between two augmented views (CPC, van den Oord et al. 2018)")
_register("nwj", "encoder trained with the NWJ bound (Nguyen et al. 2010; Poole et al. 2019)")
_register("js", "encoder trained with a JS critic, evaluated with NWJ (Poole et al. 2019)")
_register("interpolated", "encoder trained with the interpolated bound, alpha = 0.01 (Poole et al. 2019)")
_register("wpc", "encoder trained with the Wasserstein dependency measure: spectrally normalised critic (Ozair et al. 2019)")

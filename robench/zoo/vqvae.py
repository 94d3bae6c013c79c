"""VQ-VAE (van den Oord, Vinyals, Kavukcuoglu 2017, "Neural Discrete Representation Learning").

The encoder's output z_e(x) is snapped to its nearest codebook vector e_k; the decoder sees the
quantized z_q(x). The argmin has no gradient, so the straight-through estimator copies the
decoder's gradient from z_q to z_e (Eq. 3's sg[.] trick), and the loss (Eq. 3) is

    log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2,    beta = 0.25,

reconstruction, codebook and commitment terms. The representation for probes is z_q, flattened;
through the quantizer, an attacker's gradient is the same straight-through (identity) estimate.
"""
from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.data import Dataset
from robench.registry import models
from robench.target import IMAGE
from robench.zoo.cache import cached_model
from robench.zoo.encoders import fit
from robench.zoo.training import seeded_init

log = logging.getLogger(__name__)
CODE_VERSION = 1
DEFAULT_STEPS = 600


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantization with a straight-through gradient (van den Oord et al. 2017, Sec. 3.1)."""

    def __init__(self, num_codes: int, code_dim: int) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))

    def codes(self, z_e: Tensor) -> Tensor:
        """Index of the nearest code for every position of ``z_e`` (N x D x H x W -> N x H x W)."""
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        distances = torch.cdist(flat, self.codebook)
        return distances.argmin(1).view(z_e.shape[0], z_e.shape[2], z_e.shape[3])

    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z_q with straight-through gradient, codebook loss, commitment loss)."""
        e = self.codebook[self.codes(z_e)].permute(0, 3, 1, 2)
        codebook_loss = F.mse_loss(e, z_e.detach())
        commitment_loss = F.mse_loss(z_e, e.detach())
        z_q = z_e + (e - z_e).detach()  # forward: e; backward: identity to z_e
        return z_q, codebook_loss, commitment_loss


class VQVAE(nn.Module):
    """Conv encoder to a (H/2 x W/2) grid of ``code_dim`` vectors, ``num_codes`` codes, conv decoder.

    ``forward`` returns the flattened quantized codes: the representation a probe classifies.
    """

    def __init__(self, in_channels: int, height: int, width: int, *, num_codes: int = 64, code_dim: int = 16,
                 hidden: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, code_dim, 1),
        )
        self.quantizer = VectorQuantizer(num_codes, code_dim)
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, hidden, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, in_channels, 3, padding=1),
        )
        self.shape = (in_channels, height, width)

    def quantize(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.quantizer(self.encoder(x))

    def reconstruct(self, x: Tensor) -> Tensor:
        z_q, _, _ = self.quantize(x)
        out = self.decoder(z_q)
        c, h, w = self.shape
        return torch.sigmoid(out[:, :, :h, :w])

    def loss(self, x: Tensor, *, beta: float = 0.25) -> Tensor:
        """Eq. 3: reconstruction (Bernoulli log-likelihood on [0, 1] pixels) + codebook + beta * commitment."""
        z_q, codebook_loss, commitment_loss = self.quantize(x)
        c, h, w = self.shape
        logits = self.decoder(z_q)[:, :, :h, :w]
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
        return reconstruction / math.prod(self.shape) + codebook_loss + beta * commitment_loss

    def forward(self, x: Tensor) -> Tensor:
        z_q, _, _ = self.quantize(x)
        return z_q.flatten(1)


def vqvae_config(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = 128,
                 lr: float = 2e-3, beta: float = 0.25) -> dict:
    return {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "steps": steps, "batch_size": batch_size,
            "lr": lr, "beta": beta}


@models.register("vqvae", inputs=(IMAGE,), description="VQ-VAE, straight-through estimator + commitment loss (van den Oord et al. 2017)",
                 role="encoder")
def vqvae(data: Dataset, *, seed: int = 0, steps: int = DEFAULT_STEPS, batch_size: int = 128, lr: float = 2e-3,
          beta: float = 0.25) -> nn.Module:
    config = vqvae_config(data, seed=seed, steps=steps, batch_size=batch_size, lr=lr, beta=beta)
    c, h, w = data.input_shape

    def train(model: nn.Module) -> dict:
        start = time.perf_counter()
        losses = fit("vqvae", model, lambda batch, _: model.loss(batch, beta=beta), data.x_train,
                     steps=steps, batch_size=batch_size, seed=seed, lr=lr)
        with torch.no_grad():
            error = F.mse_loss(model.reconstruct(data.x_test), data.x_test).item()
            used = model.quantizer.codes(model.encoder(data.x_train)).unique().numel()
        log.info("vqvae trained: test reconstruction MSE %.4f, %d codes used", error, used)
        return {"test_reconstruction_mse": error, "codes_used": used, "final_loss": losses[-1],
                "train_seconds": time.perf_counter() - start}

    return cached_model("vqvae", config, lambda: seeded_init(seed, lambda: VQVAE(c, h, w)), train)

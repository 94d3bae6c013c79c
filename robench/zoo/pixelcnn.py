"""A small gated PixelCNN over discretized pixels (van den Oord et al. 2016, "Conditional Image
Generation with PixelCNN Decoders").

p(x) = prod_i p(x_i | x_<i) in raster order, each conditional a softmax over ``levels`` grey levels
(the original PixelCNN's discrete softmax; digits have exactly 17 levels, k/16). Gated blocks
(tanh(W_f * x) . sigmoid(W_g * x), Eq. 2) with separate vertical and horizontal stacks, so the
receptive field has no blind spot (Sec. 2.2). Channels of one pixel are modelled independently
given the previous pixels (the RGB sub-pixel ordering is not needed for grey-scale digits).

Its per-image log-likelihood powers PixelDefend (``robench.defenses.purify``, Song et al. 2018).
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
DEFAULT_LEVELS = 17


def _gate(t: Tensor) -> Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated block. The vertical stack at row r sees rows <= r; it feeds the horizontal stack
    shifted down one row (rows < r). The horizontal stack at (r, c) sees columns < c in the first
    layer (mask A) and <= c afterwards (mask B), whose inputs already exclude pixel (r, c).
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, *, first: bool) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.first = first
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.pad + 1, kernel))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.pad + 1))
        self.h_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        height, width = v.shape[-2:]
        p = self.pad
        v_feat = self.v_conv(F.pad(v, (p, p, p, 0)))  # row r: input rows r-p .. r
        v_down = F.pad(v_feat, (0, 0, 1, 0))[:, :, :height]  # row r: rows < r
        if self.first:
            h_feat = self.h_conv(F.pad(h, (p + 1, 0, 0, 0)))[:, :, :, :width]  # columns c-p-1 .. c-1
        else:
            h_feat = self.h_conv(F.pad(h, (p, 0, 0, 0)))  # columns c-p .. c
        h_next = self.h_out(_gate(h_feat + self.v_to_h(v_down)))
        if not self.first:
            h_next = h_next + h
        return _gate(v_feat), h_next


class PixelCNN(nn.Module):
    """Gated PixelCNN; ``forward`` gives logits N x levels x C x H x W for inputs in [0, 1]."""

    def __init__(self, in_channels: int = 1, *, levels: int = DEFAULT_LEVELS, channels: int = 16, layers: int = 5,
                 kernel: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.in_channels = in_channels
        self.layers = nn.ModuleList(
            [GatedLayer(in_channels if i == 0 else channels, channels, kernel, first=i == 0) for i in range(layers)]
        )
        self.output = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                    nn.Conv2d(channels, levels * in_channels, 1))

    def discretize(self, x: Tensor) -> Tensor:
        """Level index of every pixel: round(x * (levels - 1))."""
        return torch.round(x.clamp(0.0, 1.0) * (self.levels - 1)).long()

    def forward(self, x: Tensor) -> Tensor:
        v = h = 2.0 * x - 1.0
        for layer in self.layers:
            v, h = layer(v, h)
        n, _, height, width = x.shape
        return self.output(h).view(n, self.levels, self.in_channels, height, width)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) in nats per image, of the discretized image (N,)."""
        target = self.discretize(x)
        logits = self(target.float() / (self.levels - 1))
        return -F.cross_entropy(logits, target, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor) -> float:
        return float(-self.log_likelihood(x).mean() / (math.log(2) * x[0].numel()))


def pixelcnn_config(data: Dataset, *, seed: int = 0, steps: int = 800, batch_size: int = 32, lr: float = 3e-3,
                    levels: int = DEFAULT_LEVELS) -> dict:
    return {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "steps": steps, "batch_size": batch_size,
            "lr": lr, "levels": levels}


@models.register("pixelcnn", inputs=(IMAGE,), description="small gated PixelCNN density model over discretized pixels (powers PixelDefend)",
                 role="density")
def pixelcnn(data: Dataset, *, seed: int = 0, steps: int = 800, batch_size: int = 32, lr: float = 3e-3,
             levels: int = DEFAULT_LEVELS) -> nn.Module:
    config = pixelcnn_config(data, seed=seed, steps=steps, batch_size=batch_size, lr=lr, levels=levels)
    c = data.input_shape[0]

    def train(model: nn.Module) -> dict:
        start = time.perf_counter()
        fit("pixelcnn", model, lambda batch, _: -model.log_likelihood(batch).mean() / batch[0].numel(),
            data.x_train, steps=steps, batch_size=batch_size, seed=seed, lr=lr)
        with torch.no_grad():
            meta = {"test_bits_per_dim": model.bits_per_dim(data.x_test),
                    "train_bits_per_dim": model.bits_per_dim(data.x_train),
                    "train_seconds": time.perf_counter() - start}
        log.info("pixelcnn trained: %.3f bits/dim on the test split", meta["test_bits_per_dim"])
        return meta

    return cached_model("pixelcnn", config, lambda: seeded_init(seed, lambda: PixelCNN(c, levels=levels)), train)

"""Sequence classifiers (N x C x L -> N x classes) from the seed papers, trained on first use (cached).

- ``cnn1d``: a plain 1-D CNN baseline (three strided convolutions, one linear layer);
- ``bytenet``: ByteNet's residual block stack (Kalchbrenner et al. 2016, "Neural Machine Translation
  in Linear Time", Sec. 3 and Fig. 3): each block is LayerNorm-ReLU-1x1 conv (2d -> d)-LayerNorm-ReLU-
  dilated conv k=3 (d)-LayerNorm-ReLU-1x1 conv (d -> 2d) plus the identity; the dilation doubles per
  block (1, 2, 4, 8, 16: each position sees 31 steps either side, so the middle of the 40-step signal
  sees all of it). A classifier does not generate, so the
  convolutions are the source network's unmasked ones; the head is a global mean pool and a linear layer;
- ``wavernn``: WaveRNN's single-layer GRU (Kalchbrenner et al. 2018, "Efficient Neural Audio
  Synthesis", Sec. 3) read over the signal, time steps = L, features = C, with a linear classifier on
  its final hidden state h_L;
- ``wavernn-sparse``: the same network trained with WaveRNN's weight pruning (Sec. 4.1, after Zhu &
  Gupta 2017): every ``prune_every`` steps the lowest-magnitude weights of each of the GRU's six gate
  matrices (input W_ir, W_iz, W_in and recurrent W_hr, W_hz, W_hn) are masked to zero, the sparsity
  ramping as s_t = s_f (1 - (1 - t/T)^3) up to s_f = 0.9 over the first ``ramp`` of training; the
  masks are then fixed, training goes on under them, and the cached weights hold those zeros.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.data import Dataset
from robench.errors import RobenchError
from robench.registry import models
from robench.target import SEQUENCE
from robench.zoo.cache import cached_model
from robench.zoo.training import accuracy, seeded_init, train_classifier

log = logging.getLogger(__name__)
CODE_VERSION = 1


def sequence_shape(data: Dataset, model: str) -> tuple[int, int]:
    """(channels, length) of the data set's sequences; a one-line error for images."""
    if len(data.input_shape) != 2:
        raise RobenchError(f"model {model!r} takes sequences N x C x L, but data set {data.name!r} holds examples of "
                           f"shape {data.input_shape}; use --dataset mnist1d or an .npz of sequences")
    c, length = data.input_shape
    return int(c), int(length)


class Standardize(nn.Module):
    """x -> (x - mean) / std per channel with the training split's statistics (fixed buffers): the data
    sets keep sequences in [0, 1] (MNIST-1D's raw standard deviation is 1/12 there), which is too small a
    scale for these networks to train well from a standard initialisation (cnn1d: 0.51 vs 0.88 test accuracy
    after 40 epochs, measured)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels, 1))
        self.register_buffer("std", torch.ones(channels, 1))

    @torch.no_grad()
    def fit(self, x: Tensor) -> "Standardize":
        self.mean.copy_(x.mean(dim=(0, 2))[:, None])
        self.std.copy_(x.std(dim=(0, 2)).clamp_min(1e-6)[:, None])
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


# --- cnn1d --------------------------------------------------------------------------------------
class CNN1D(nn.Module):
    """conv k5 s2 - ReLU - conv k3 s2 - ReLU - conv k3 s2 - ReLU - flatten - linear (a 1-D LeNet)."""

    def __init__(self, in_channels: int, length: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.standardize = Standardize(in_channels)
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, length)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.standardize(x)))


# --- bytenet ------------------------------------------------------------------------------------
class ChannelNorm(nn.Module):
    """Layer normalisation over the channels at each time step (ByteNet's LayerNorm on N x C x L)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ByteNetBlock(nn.Module):
    """ByteNet's residual block (Fig. 3, left): 2d channels in and out, a dilated k=3 conv on d inside."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 3) -> None:
        super().__init__()
        half = channels // 2
        self.dilation = dilation
        self.body = nn.Sequential(
            ChannelNorm(channels), nn.ReLU(), nn.Conv1d(channels, half, 1),
            ChannelNorm(half), nn.ReLU(),
            nn.Conv1d(half, half, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2),
            ChannelNorm(half), nn.ReLU(), nn.Conv1d(half, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ByteNet(nn.Module):
    """1x1 input projection to 2d channels, ``blocks`` residual blocks of dilation 1, 2, 4, ..., global
    mean pool over time, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 64, blocks: int = 5) -> None:
        super().__init__()
        self.dilations = tuple(2 ** i for i in range(blocks))
        self.standardize = Standardize(in_channels)
        self.embed = nn.Conv1d(in_channels, channels, 1)
        self.blocks = nn.Sequential(*(ByteNetBlock(channels, d) for d in self.dilations))
        self.norm = ChannelNorm(channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm(self.blocks(self.embed(self.standardize(x)))))
        return self.head(h.mean(dim=2))


# --- wavernn ------------------------------------------------------------------------------------
class GRUClassifier(nn.Module):
    """A single-layer GRU over the L time steps of C features; logits = linear(h_L)."""

    def __init__(self, in_channels: int, num_classes: int, *, hidden: int = 128) -> None:
        super().__init__()
        self.standardize = Standardize(in_channels)
        self.gru = nn.GRU(in_channels, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def final_state(self, x: Tensor) -> Tensor:
        """h_L, the GRU's hidden state after the last time step (N x hidden)."""
        _, h_n = self.gru(self.standardize(x).transpose(1, 2))  # N x C x L -> N x L x C
        return h_n[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.final_state(x))


#: the GRU's weight matrices, each holding its three gates (r, z, n) stacked as in torch.nn.GRU
GRU_MATRICES = ("weight_ih_l0", "weight_hh_l0")
GATES = ("r", "z", "n")


def gate_blocks(gru: nn.GRU) -> dict[str, Tensor]:
    """The six gate matrices W_ir, W_iz, W_in, W_hr, W_hz, W_hn as views into the GRU's weights."""
    blocks = {}
    for name in GRU_MATRICES:
        weight = getattr(gru, name)
        for gate, block in zip(GATES, weight.detach().chunk(3, dim=0)):
            blocks[f"W_{name[7]}{gate}"] = block
    return blocks


def zero_fraction(gru: nn.GRU) -> float:
    """The fraction of exactly-zero entries over the GRU's weight matrices (biases excluded)."""
    weights = [getattr(gru, name).detach() for name in GRU_MATRICES]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def sparsity_at(step: int, *, total: int, final: float) -> float:
    """Zhu & Gupta's (2017) cubic schedule from 0: s_t = s_f (1 - (1 - t/T)^3), s_f after T steps."""
    progress = min(1.0, max(0.0, step / max(total, 1)))
    return final * (1.0 - (1.0 - progress) ** 3)


@torch.no_grad()
def magnitude_masks(gru: nn.GRU, sparsity: float) -> dict[str, Tensor]:
    """Per weight matrix and gate, a mask zeroing the ceil(sparsity * size) smallest-magnitude weights."""
    masks = {}
    for name in GRU_MATRICES:
        weight = getattr(gru, name)
        parts = []
        for block in weight.chunk(3, dim=0):
            k = math.ceil(sparsity * block.numel())
            mask = torch.ones_like(block)
            if k > 0:
                order = block.abs().flatten().argsort(stable=True)  # ties broken by position: deterministic
                mask.view(-1)[order[:k]] = 0.0
            parts.append(mask)
        masks[name] = torch.cat(parts)
    return masks


@torch.no_grad()
def apply_masks(gru: nn.GRU, masks: dict[str, Tensor]) -> None:
    for name, mask in masks.items():
        getattr(gru, name).mul_(mask)


def train_pruned(model: GRUClassifier, data: Dataset, *, epochs: int, seed: int, final_sparsity: float,
                 ramp: float, prune_every: int, batch_size: int = 64, lr: float = 3e-3) -> dict:
    """Cross-entropy training with gradual magnitude pruning of the GRU; masks fixed after the ramp."""
    steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
    total = epochs * steps_per_epoch
    ramp_steps = max(1, int(ramp * total))
    step = [0]
    masks: dict[str, Tensor] = {}

    def loss(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        t = step[0]
        if t <= ramp_steps and (t % prune_every == 0 or t == ramp_steps):
            masks.update(magnitude_masks(model.gru, sparsity_at(t, total=ramp_steps, final=final_sparsity)))
        if masks:  # the previous Adam step may have revived masked weights: zero them before the forward
            apply_masks(model.gru, masks)
        step[0] += 1
        return F.cross_entropy(net(xb), yb)

    train_classifier(model, data.x_train, data.y_train, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                     loss_fn=loss)
    masks = magnitude_masks(model.gru, final_sparsity) if step[0] <= ramp_steps else masks
    apply_masks(model.gru, masks)
    for name, mask in masks.items():
        model.register_buffer(f"mask_{name}", mask)
    return {"gru_zero_fraction": zero_fraction(model.gru), "final_sparsity": final_sparsity}


# --- registration -------------------------------------------------------------------------------
def _timed_supervised(name: str, config: dict, build: Callable[[], nn.Module], data: Dataset, *, epochs: int, seed: int, lr: float,
                      batch_size: int = 64) -> nn.Module:
    """``training.supervised`` with a learning rate of its own and the training time in the meta."""

    def train(model: nn.Module) -> dict:
        start = time.perf_counter()
        train_classifier(model, data.x_train, data.y_train, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size)
        clean = accuracy(model, data.x_test, data.y_test)
        log.info("%s trained: clean test accuracy %.4f", name, clean)
        return {"clean_test_accuracy": clean, "train_seconds": time.perf_counter() - start}

    return cached_model(name, config, lambda: seeded_init(seed, lambda: fitted(build(), data)), train)


def fitted(model: nn.Module, data: Dataset) -> nn.Module:
    """The model with its ``standardize`` layer set from the training split."""
    model.standardize.fit(data.x_train)
    return model


def _config(data: Dataset, seed: int, **settings: object) -> dict:
    return {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, **settings}


@models.register("cnn1d", inputs=(SEQUENCE,), description="plain 1-D CNN (3 strided convs + linear) trained on first use (cached; shipped for mnist1d)",
                 role="classifier")
def cnn1d(data: Dataset, *, seed: int = 0, epochs: int = 60, lr: float = 1e-2) -> nn.Module:
    c, length = sequence_shape(data, "cnn1d")
    config = _config(data, seed, epochs=epochs, lr=lr)
    return _timed_supervised("cnn1d", config, lambda: CNN1D(c, length, data.num_classes), data, epochs=epochs,
                             seed=seed, lr=lr)


@models.register("bytenet", inputs=(SEQUENCE,), role="classifier",
                 description="ByteNet residual dilated-conv stack (Kalchbrenner et al. 2016), dilations 1..16, pooled linear head (cached)")
def bytenet(data: Dataset, *, seed: int = 0, epochs: int = 20, lr: float = 1e-3, blocks: int = 5,
            channels: int = 64) -> nn.Module:
    c, _ = sequence_shape(data, "bytenet")
    config = _config(data, seed, epochs=epochs, lr=lr, blocks=blocks, channels=channels)
    return _timed_supervised("bytenet", config, lambda: ByteNet(c, data.num_classes, channels=channels, blocks=blocks),
                             data, epochs=epochs, seed=seed, lr=lr)


@models.register("wavernn", inputs=(SEQUENCE,), role="classifier",
                 description="WaveRNN-style single-layer GRU (Kalchbrenner et al. 2018), linear head on the final state (cached)")
def wavernn(data: Dataset, *, seed: int = 0, epochs: int = 20, lr: float = 3e-3, hidden: int = 128) -> nn.Module:
    c, _ = sequence_shape(data, "wavernn")
    config = _config(data, seed, epochs=epochs, lr=lr, hidden=hidden)
    return _timed_supervised("wavernn", config, lambda: GRUClassifier(c, data.num_classes, hidden=hidden), data,
                             epochs=epochs, seed=seed, lr=lr)


@models.register("wavernn-sparse", inputs=(SEQUENCE,), role="classifier",
                 description="the wavernn GRU pruned to 90% zero gate weights by WaveRNN's gradual magnitude pruning (cached)")
def wavernn_sparse(data: Dataset, *, seed: int = 0, epochs: int = 30, lr: float = 3e-3, hidden: int = 128,
                   final_sparsity: float = 0.9, ramp: float = 0.6, prune_every: int = 10) -> nn.Module:
    """Masks are recomputed every ``prune_every`` steps during the first ``ramp`` of the training steps,
    then kept fixed; the cached model stores its masks as buffers ``mask_weight_ih_l0`` / ``mask_weight_hh_l0``."""
    c, _ = sequence_shape(data, "wavernn-sparse")
    if not 0.0 <= final_sparsity < 1.0 or not 0.0 < ramp <= 1.0 or prune_every < 1:
        raise RobenchError(f"wavernn-sparse: need 0 <= final_sparsity < 1, 0 < ramp <= 1, prune_every >= 1; got "
                           f"{final_sparsity}, {ramp}, {prune_every}")
    config = _config(data, seed, epochs=epochs, lr=lr, hidden=hidden, final_sparsity=final_sparsity, ramp=ramp,
                     prune_every=prune_every)

    def build() -> nn.Module:
        model = GRUClassifier(c, data.num_classes, hidden=hidden)
        for name in GRU_MATRICES:  # present before loading, so the cached masks load into them
            model.register_buffer(f"mask_{name}", torch.ones_like(getattr(model.gru, name)))
        return model

    def train(model: nn.Module) -> dict:
        start = time.perf_counter()
        meta = train_pruned(model, data, epochs=epochs, seed=seed, final_sparsity=final_sparsity, ramp=ramp,
                            prune_every=prune_every, lr=lr)
        meta["clean_test_accuracy"] = accuracy(model, data.x_test, data.y_test)
        meta["train_seconds"] = time.perf_counter() - start
        log.info("wavernn-sparse trained: clean test accuracy %.4f, %.3f of the GRU weights zero",
                 meta["clean_test_accuracy"], meta["gru_zero_fraction"])
        return meta

    return cached_model("wavernn-sparse", config, lambda: seeded_init(seed, lambda: fitted(build(), data)), train)

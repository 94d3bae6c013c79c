"""WaveNet over discretized sequences and its Parallel WaveNet (IAF) student.

``wavenet`` (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio"):
p(x) = prod_t p(x_t | x_<t) over sequences N x C x L in [0, 1], each conditional a softmax over
``levels`` values k / (levels - 1). Default 64 levels, a step of 1/63 = 0.016: MNIST-1D's values
(mapped into [0, 1] by ``robench.data``) have a standard deviation of 0.083, about five levels, and
its L-inf threat epsilon is 0.01, so a purification box of two or three epsilons holds two to four
levels to choose from; with 16 or 32 levels (steps 0.067, 0.032) a box of that size would hold one. The network is a stack of
dilated causal convolutions (kernel 2, dilations 1, 2, 4, ..., 32: a receptive field of 64 steps)
with gated units tanh(W_f * h) . sigmoid(W_g * h), residual and skip connections (Sec. 2.3-2.4);
its input is shifted right by one step, so the output at t sees only x_<t. Channels of one step are
modelled independently given the earlier steps (as the zoo's PixelCNN does). It is trained on
dequantized inputs (the level plus uniform noise within its bin), so it conditions sensibly on
values off the level grid (purified or student-drawn sequences); its likelihood is evaluated on
the level grid, where it is an exact distribution over level sequences.

``parallel-wavenet`` (van den Oord et al. 2017, "Parallel WaveNet: Fast High-Fidelity Speech
Synthesis"): an inverse autoregressive flow: z ~ N(0, I), each of ``flows`` layers maps
h -> h * s(h_<t) + mu(h_<t) with a small causal WaveNet producing (mu, log s), and x = sigmoid(h)
at the end, so a sample takes one parallel pass and its own log-density comes with it. It is
distilled from the frozen teacher by probability density distillation, minimising
KL(P_S || P_T) = H(P_S, P_T) - H(P_S) estimated from reparameterized student samples (one sample
per sequence, not the paper's per-step analytic cross-entropy; no power, perceptual or contrastive
losses). The teacher is categorical, so it has no density at a continuous sample; the relaxation
used is the teacher's **level-interpolated density**: its level probabilities placed at the level
values and linearly interpolated between them (hat functions), normalised over [0, 1]
(:func:`relaxed_log_density`). That is a proper density with the same mass per level neighbourhood
as the teacher, and it is differentiable in x_t, so the student is pushed towards probable levels;
it is a surrogate for the teacher, not the teacher itself.

Both power the sequence purifiers of ``robench.defenses.sequence_purify``.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robench.data import Dataset
from robench.errors import RobenchError
from robench.registry import models
from robench.target import SEQUENCE
from robench.zoo.cache import cache_key, cached_model
from robench.zoo.encoders import fit
from robench.zoo.training import seeded_init

log = logging.getLogger(__name__)
CODE_VERSION = 1
DEFAULT_LEVELS = 64
DILATIONS = (1, 2, 4, 8, 16, 32)


def discretize(x: Tensor, levels: int) -> Tensor:
    """Level index of every value: round(x * (levels - 1)), x clamped to [0, 1]."""
    return torch.round(x.clamp(0.0, 1.0) * (levels - 1)).long()


def level_values(levels: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The values the levels stand for: k / (levels - 1), k = 0 .. levels - 1."""
    return torch.arange(levels, device=device, dtype=dtype) / (levels - 1)


def _gate(t: Tensor) -> Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class CausalWaveNet(nn.Module):
    """Dilated causal conv stack: output at step t is a function of the input at steps < t only.

    ``forward`` runs the whole sequence in one parallel pass; ``stream`` runs it one step at a time
    (the caching of Paine et al. 2016, "Fast WaveNet"), for the sequential loops of purification and
    flow inversion: each step costs one position per layer instead of a whole pass.
    """

    def __init__(self, in_channels: int, out_channels: int, *, channels: int = 32,
                 dilations: Sequence[int] = DILATIONS, zero_output: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dilations = tuple(int(d) for d in dilations)
        self.input = nn.Conv1d(in_channels, channels, 1)
        self.dilated = nn.ModuleList([nn.Conv1d(channels, 2 * channels, 2, dilation=d) for d in self.dilations])
        self.residual = nn.ModuleList([nn.Conv1d(channels, channels, 1) for _ in self.dilations])
        self.skip = nn.ModuleList([nn.Conv1d(channels, channels, 1) for _ in self.dilations])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.Conv1d(channels, out_channels, 1))
        if zero_output:  # a flow layer starts as the identity
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.dilations)

    def forward(self, v: Tensor) -> Tensor:
        h = self.input(F.pad(v, (1, 0))[:, :, :-1])  # step t sees v_<t
        skips = 0.0
        for dilated, residual, skip, d in zip(self.dilated, self.residual, self.skip, self.dilations):
            g = _gate(dilated(F.pad(h, (d, 0))))  # step t sees h_t and h_{t-d}
            h = h + residual(g)
            skips = skips + skip(g)
        return self.head(skips)

    def stream(self, n: int, *, device: torch.device, dtype: torch.dtype) -> _Stream:
        return _Stream(self, n, device=device, dtype=dtype)


class _Stream:
    """Step-at-a-time evaluation of a :class:`CausalWaveNet` (same outputs as ``forward``).

    The loops that use it (purification, flow inversion) run one step per time step, so the cost
    of a step is Python and call overhead, not arithmetic: the weights are sliced once per stream,
    a layer's two dilated taps are one matrix product over [past, now], and its residual and skip
    projections another (8 calls per layer before, 4 now).
    """

    def __init__(self, net: CausalWaveNet, n: int, *, device: torch.device, dtype: torch.dtype) -> None:
        self.t = 0
        self.channels = net.input.out_channels
        self.zero_in = torch.zeros(n, net.in_channels, device=device, dtype=dtype)
        self.zero_h = torch.zeros(n, self.channels, device=device, dtype=dtype)
        self.dilations = net.dilations
        self.input = (net.input.weight[:, :, 0], net.input.bias)
        # per layer: [past tap | current tap] as one weight, and [residual; skip] stacked
        self.layers = [
            (torch.cat([conv.weight[:, :, 0], conv.weight[:, :, 1]], dim=1), conv.bias,
             torch.cat([res.weight[:, :, 0], skip.weight[:, :, 0]]), torch.cat([res.bias, skip.bias]))
            for conv, res, skip in zip(net.dilated, net.residual, net.skip)
        ]
        head = net.head
        self.head = (head[1].weight[:, :, 0], head[1].bias, head[3].weight[:, :, 0], head[3].bias)
        self.history: list[list[Tensor]] = [[] for _ in net.dilations]  # per layer, its input per step

    def step(self, previous: Tensor | None) -> Tensor:
        """Output at the current step, given the input at the step before (None at step 0)."""
        v = self.zero_in if previous is None else previous
        h = F.linear(v, *self.input)
        skips = None
        for layer, (d, (w_taps, b_taps, w_out, b_out)) in enumerate(zip(self.dilations, self.layers)):
            past = self.history[layer][self.t - d] if self.t >= d else self.zero_h
            self.history[layer].append(h)
            g = _gate(F.linear(torch.cat([past, h], dim=1), w_taps, b_taps))
            res, skip = F.linear(g, w_out, b_out).split(self.channels, dim=1)
            h = h + res
            skips = skip if skips is None else skips + skip
        self.t += 1
        w1, b1, w2, b2 = self.head
        return F.linear(F.relu(F.linear(F.relu(skips), w1, b1)), w2, b2)


class WaveNet(nn.Module):
    """Categorical WaveNet; ``forward`` gives logits N x levels x C x L for inputs in [0, 1]."""

    def __init__(self, in_channels: int = 1, *, levels: int = DEFAULT_LEVELS, channels: int = 32,
                 dilations: Sequence[int] = DILATIONS) -> None:
        super().__init__()
        if levels < 2:
            raise RobenchError(f"wavenet: levels must be >= 2, got {levels}")
        self.levels, self.in_channels = levels, in_channels
        self.net = CausalWaveNet(in_channels, levels * in_channels, channels=channels, dilations=dilations)

    def discretize(self, x: Tensor) -> Tensor:
        return discretize(x, self.levels)

    def forward(self, x: Tensor) -> Tensor:
        n, c, length = x.shape
        return self.net(2.0 * x - 1.0).view(n, self.levels, c, length)

    def stream(self, n: int, *, device: torch.device, dtype: torch.dtype = torch.float32) -> WaveNetStream:
        """Logits of step t given steps < t, one step at a time (purification's loop)."""
        return WaveNetStream(self, n, device=device, dtype=dtype)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(discretize(x)) in nats per sequence (N,), conditioning on the level grid."""
        target = self.discretize(x)
        logits = self(target.to(x.dtype) / (self.levels - 1))
        return -F.cross_entropy(logits, target, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, batch_size: int = 1024) -> float:
        """Mean negative log-likelihood in bits per value (``log2(levels)`` = uniform)."""
        total = sum(float(self.log_likelihood(x[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size))
        return -total / (math.log(2) * x[0].numel() * len(x))


class WaveNetStream:
    """A :class:`WaveNet` evaluated step by step: ``step(x_prev)`` -> logits N x levels x C at the
    next step, given the value (in [0, 1]) chosen for the step before."""

    def __init__(self, model: WaveNet, n: int, *, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.stream = model.net.stream(n, device=device, dtype=dtype)

    def step(self, previous: Tensor | None) -> Tensor:
        out = self.stream.step(None if previous is None else 2.0 * previous - 1.0)
        return out.view(len(out), self.model.levels, self.model.in_channels)


def relaxed_log_density(logits: Tensor, x: Tensor) -> Tensor:
    """The teacher's level-interpolated log-density at continuous x in [0, 1], per value.

    With level probabilities p_k placed at k / (levels - 1) and hat functions between them,
    f(x) = sum_k p_k hat_k(x) / Z, Z = (1 - (p_0 + p_last) / 2) / (levels - 1), is a density on
    [0, 1] (the edge hats are half as wide). ``logits``: N x levels x ...; ``x``: N x ....
    """
    levels = logits.shape[1]
    p = logits.softmax(1)
    pos = x.clamp(0.0, 1.0) * (levels - 1)
    k = pos.detach().floor().clamp(0, levels - 2).long()
    frac = pos - k.to(pos.dtype)
    p_lo = p.gather(1, k.unsqueeze(1)).squeeze(1)
    p_hi = p.gather(1, (k + 1).unsqueeze(1)).squeeze(1)
    mass = 1.0 - 0.5 * (p[:, 0] + p[:, -1])
    return torch.log(((1 - frac) * p_lo + frac * p_hi).clamp_min(1e-30)) - torch.log(mass / (levels - 1))


# --- the Parallel WaveNet student: an inverse autoregressive flow -----------------------------
LOG_SCALE_BOUND = 3.0


class IAFStudent(nn.Module):
    """z ~ N(0, I) -> ``flows`` IAF layers -> sigmoid: samples in one pass, with their log-density."""

    def __init__(self, in_channels: int = 1, *, flows: int = 3, channels: int = 16,
                 dilations: Sequence[int] = DILATIONS) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.flows = nn.ModuleList(
            [CausalWaveNet(in_channels, 2 * in_channels, channels=channels, dilations=dilations, zero_output=True)
             for _ in range(flows)]
        )

    @staticmethod
    def _shift_scale(out: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = out.chunk(2, dim=1)
        return mu, LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)

    def transform(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Noise N x C x L -> (x in (0, 1), log p_S(x) per sequence): one parallel pass per flow."""
        h, log_p = z, (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        for flow in self.flows:
            mu, log_s = self._shift_scale(flow(h))
            h = h * log_s.exp() + mu
            log_p = log_p - log_s.flatten(1).sum(1)
        log_p = log_p + (F.softplus(-h) + F.softplus(h)).flatten(1).sum(1)  # - log sigmoid'(h)
        return torch.sigmoid(h), log_p

    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.in_channels, length, generator=generator)
        return self.transform(z)

    def invert(self, x: Tensor, *, margin: float = 1e-3) -> Tensor:
        """The noise z with ``transform(z)[0] == x`` (x clamped to [margin, 1 - margin]): sequential
        in t, one streamed step per flow and time step (an IAF is parallel to sample, not to invert)."""
        h = torch.logit(x.clamp(margin, 1 - margin))
        n, _, length = x.shape
        for flow in reversed(self.flows):
            stream = flow.stream(n, device=x.device, dtype=x.dtype)
            columns: list[Tensor] = []
            for t in range(length):
                mu, log_s = self._shift_scale(stream.step(columns[-1] if columns else None).unsqueeze(-1))
                columns.append(((h[:, :, t : t + 1] - mu) * (-log_s).exp()).squeeze(-1))
            h = torch.stack(columns, dim=-1)
        return h


def distillation_loss(student: IAFStudent, teacher: WaveNet, z: Tensor) -> Tensor:
    """Monte-Carlo KL(P_S || P_T) per value: mean of log p_S(x) - log f_T(x) over samples x = S(z)
    (f_T: the teacher's level-interpolated density, :func:`relaxed_log_density`)."""
    x, log_p_student = student.transform(z)
    log_p_teacher = relaxed_log_density(teacher(x), x).flatten(1).sum(1)
    return (log_p_student - log_p_teacher).mean() / x[0].numel()


@torch.no_grad()
def teacher_bits_per_dim_of_samples(student: IAFStudent, teacher: WaveNet, n: int, length: int, *, seed: int = 0) -> float:
    """The teacher's exact bits per value of discretized student samples (lower: more teacher-like)."""
    x, _ = student.sample(n, length, generator=torch.Generator().manual_seed(seed))
    return teacher.bits_per_dim(x)


# --- zoo entries -------------------------------------------------------------------------------
def _require_sequences(name: str, data: Dataset) -> None:
    if len(data.input_shape) != 2:
        raise RobenchError(f"{name} models sequences (N x C x L); data set {data.name!r} has examples of shape "
                           f"{data.input_shape}; use a sequence data set")
    if len(data.x_train) == 0:
        raise RobenchError(f"{name} trains on the training split, but data set {data.name!r} has none; "
                           "give x_train and y_train")


def wavenet_config(data: Dataset, *, seed: int = 0, steps: int = 1500, batch_size: int = 64, lr: float = 3e-3,
                   levels: int = DEFAULT_LEVELS) -> dict:
    return {"code": CODE_VERSION, "data": data.fingerprint, "seed": seed, "steps": steps, "batch_size": batch_size,
            "lr": lr, "levels": levels}


@models.register("wavenet", inputs=(SEQUENCE,), role="density",
                 description="WaveNet density model over 64 levels (dilated causal convs, gated units; powers wavenet-purify)")
def wavenet(data: Dataset, *, seed: int = 0, steps: int = 1500, batch_size: int = 64, lr: float = 3e-3,
            levels: int = DEFAULT_LEVELS) -> WaveNet:
    """Trained on ``data``'s training split with dequantized inputs (the level plus uniform noise
    within its bin as the conditioning, the level as the target); seeded and cached."""
    _require_sequences("wavenet", data)
    config = wavenet_config(data, seed=seed, steps=steps, batch_size=batch_size, lr=lr, levels=levels)
    c = data.input_shape[0]

    def train(model: WaveNet) -> dict:
        start = time.perf_counter()
        scale = levels - 1

        def loss(batch: Tensor, generator: torch.Generator) -> Tensor:
            target = model.discretize(batch)
            noise = torch.rand(batch.shape, generator=generator) - 0.5
            logits = model(((target + noise) / scale).clamp(0.0, 1.0))
            return F.cross_entropy(logits, target) / math.log(2)  # bits per value

        fit("wavenet", model, loss, data.x_train, steps=steps, batch_size=batch_size, seed=seed, lr=lr)
        meta = {"test_bits_per_dim": model.bits_per_dim(data.x_test), "train_bits_per_dim": model.bits_per_dim(data.x_train),
                "train_seconds": time.perf_counter() - start}
        log.info("wavenet trained: %.3f bits/dim on the test split", meta["test_bits_per_dim"])
        return meta

    return cached_model("wavenet", config, lambda: seeded_init(seed, lambda: WaveNet(c, levels=levels)), train)


@models.register("parallel-wavenet", inputs=(SEQUENCE,), role="density",
                 description="IAF student distilled from the wavenet (Parallel WaveNet; powers parallel-purify)")
def parallel_wavenet(data: Dataset, *, seed: int = 0, steps: int = 600, batch_size: int = 32, lr: float = 1e-3,
                     flows: int = 3, teacher_steps: int = 1500) -> IAFStudent:
    """Distilled from ``wavenet(data, seed=seed, steps=teacher_steps)`` (trained first if needed);
    cached as its own model, keyed by the teacher's configuration too."""
    _require_sequences("parallel-wavenet", data)
    teacher_config = wavenet_config(data, seed=seed, steps=teacher_steps)
    config = {"code": CODE_VERSION, "teacher": cache_key("wavenet", teacher_config), "seed": seed, "steps": steps,
              "batch_size": batch_size, "lr": lr, "flows": flows}
    c, length = data.input_shape

    def train(student: IAFStudent) -> dict:
        start = time.perf_counter()
        teacher = wavenet(data, seed=seed, steps=teacher_steps)
        teacher.requires_grad_(False)
        before = teacher_bits_per_dim_of_samples(student, teacher, 256, length, seed=seed)
        placeholder = torch.zeros(batch_size, c, length)  # distillation needs no data: fit's batches give the shape

        def loss(batch: Tensor, generator: torch.Generator) -> Tensor:
            return distillation_loss(student, teacher, torch.randn(batch.shape, generator=generator))

        fit("parallel-wavenet", student, loss, placeholder, steps=steps, batch_size=batch_size, seed=seed, lr=lr)
        meta = {"teacher_bits_per_dim_of_samples_before": before,
                "teacher_bits_per_dim_of_samples": teacher_bits_per_dim_of_samples(student, teacher, 256, length, seed=seed),
                "teacher_test_bits_per_dim": float(teacher.robench_meta.get("test_bits_per_dim", float("nan"))),
                "train_seconds": time.perf_counter() - start}
        log.info("parallel-wavenet distilled: teacher bits/dim of its samples %.3f -> %.3f", before,
                 meta["teacher_bits_per_dim_of_samples"])
        return meta

    return cached_model("parallel-wavenet", config, lambda: seeded_init(seed, lambda: IAFStudent(c, flows=flows)), train)

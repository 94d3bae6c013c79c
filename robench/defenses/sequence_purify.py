"""Density-model purifiers for sequences (N x C x L): PixelDefend in 1-D, and its one-pass cousin.

``wavenet-purify`` is PixelDefend (Song et al. 2018, Algorithm 1) with the zoo's WaveNet
(``robench.zoo.wavenet``) in place of the PixelCNN: visit the time steps in order and set each
value to the most probable WaveNet level given the steps already purified, among the levels
within ``eps_defend`` of the input. The argmax makes it piecewise constant (zero gradient almost
everywhere): ``differentiable = False``, and BPDA backpropagates through the identity, exactly as
Athalye, Carlini, Wagner (2018, Sec. 4.1) broke PixelDefend.

``parallel-purify`` uses the Parallel WaveNet student (an inverse autoregressive flow) instead;
see :class:`ParallelPurify` for exactly what it computes. It is differentiable and randomized.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robench.data import Dataset
from robench.errors import RobenchError
from robench.registry import defenses
from robench.target import SEQUENCE, Preprocessed, SeededDraws


@torch.no_grad()
def purify_sequence(wavenet: nn.Module, x: Tensor, *, eps_defend: float, passes: int = 1) -> Tensor:
    """Greedy sequential purification of x (N x C x L in [0, 1]); the result lies within
    ``eps_defend`` of x (in L-inf) and in [0, 1].

    Each sweep visits t = 0 .. L-1 and picks, per channel, the most probable level under the
    WaveNet given the values already chosen for steps < t, among the levels inside the box; the
    chosen level's value is clipped into the box (so the box holds exactly, and ``eps_defend = 0``
    returns x). When no level lies inside the box, the level nearest to the box's centre is the only
    candidate. With ``passes = 1`` the box is [x - eps_defend, x + eps_defend] (PixelDefend). A
    causal model makes a second sweep over the same box a no-op (step t sees only steps < t, which
    the sweep has already fixed), so with ``passes = P`` each sweep moves at most eps_defend / P
    from the previous sweep's result, and never leaves the eps_defend box around x.
    """
    levels = wavenet.levels
    values = torch.arange(levels, device=x.device, dtype=x.dtype) / (levels - 1)
    grid = values.view(1, levels, 1)
    lo_all, hi_all = (x - eps_defend).clamp(0.0, 1.0), (x + eps_defend).clamp(0.0, 1.0)
    radius = eps_defend / passes
    current = x.clamp(0.0, 1.0)
    for _ in range(passes):
        lo, hi = torch.maximum(lo_all, current - radius), torch.minimum(hi_all, current + radius)
        centre = torch.round((lo + hi) * 0.5 * (levels - 1)).long()
        stream = wavenet.stream(len(x), device=x.device, dtype=x.dtype)
        columns: list[Tensor] = []
        for t in range(x.shape[-1]):
            logits = stream.step(columns[-1] if columns else None)  # N x levels x C
            allowed = (grid >= lo[:, None, :, t] - 1e-6) & (grid <= hi[:, None, :, t] + 1e-6)
            allowed |= torch.arange(levels, device=x.device).view(1, levels, 1) == centre[:, None, :, t]
            chosen = values[logits.masked_fill(~allowed, float("-inf")).argmax(1)]  # N x C
            columns.append(torch.minimum(torch.maximum(chosen, lo[:, :, t]), hi[:, :, t]))
        current = torch.stack(columns, dim=-1)
    return current


class WaveNetPurify(Preprocessed):
    """``model(purify_sequence(x))``; BPDA's backward pass is the identity (inherited ``bpda``)."""

    differentiable = False

    def __init__(self, model: nn.Module, wavenet: nn.Module, *, eps_defend: float, passes: int = 1) -> None:
        super().__init__(model)
        self.wavenet = wavenet
        self.eps_defend = eps_defend
        self.passes = passes

    def transform(self, x: Tensor) -> Tensor:
        self.wavenet.eval()
        # tied to x with an exactly-zero gradient (as rounding's is): a naive gradient attack runs and sees nothing
        return purify_sequence(self.wavenet, x, eps_defend=self.eps_defend, passes=self.passes) + 0.0 * x

    def extra_repr(self) -> str:
        return f"eps_defend={self.eps_defend}, passes={self.passes}, levels={self.wavenet.levels}"


class ParallelPurify(Preprocessed):
    """Encode, partly re-draw, decode in one parallel pass, project: with the IAF student S,

        z  = S^-1(x)                                     (exact inversion: sequential in t)
        z' = keep * z + sqrt(1 - keep^2) * e,  e ~ N(0, I)   (fresh noise, one draw per forward)
        x' = clip(S(z'), x - eps_defend, x + eps_defend) ∩ [0, 1]   (one parallel pass of S)

    ``keep = 1`` returns x (up to float error in the inversion), ``keep = 0`` replaces x by a fresh
    student sample pulled into the eps_defend box around x. z' keeps the N(0, I) marginal of the
    student's noise, so x' is a student-typical sequence correlated with x: a latent-space analogue of
    diffusion purification (one noising step; the flow's decoder is the exact inverse). Every step
    is differentiable (the clip almost everywhere), so ``differentiable = True``; it draws noise,
    so ``randomized = True`` (unless keep = 1) and gradient attacks use EOT.
    """

    differentiable = True
    independent_rows = True  # noise per element

    def __init__(self, model: nn.Module, student: nn.Module, *, eps_defend: float, keep: float, seed: int = 0) -> None:
        super().__init__(model)
        self.student = student
        self.eps_defend = eps_defend
        self.keep = keep
        self.randomized = keep < 1.0
        self.draws = SeededDraws(seed)

    def transform(self, x: Tensor) -> Tensor:
        self.student.eval()
        z = self.student.invert(x)
        if self.keep < 1.0:
            noise = torch.randn(z.shape, generator=self.draws.generator(x.device), device=x.device, dtype=x.dtype)
            z = self.keep * z + math.sqrt(1.0 - self.keep**2) * noise
        decoded, _ = self.student.transform(z)
        return torch.minimum(torch.maximum(decoded, x - self.eps_defend), x + self.eps_defend).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"eps_defend={self.eps_defend}, keep={self.keep}, flows={len(self.student.flows)}, seed={self.draws.seed}"


def _check_unit(name: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RobenchError(f"{name}: {what} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_count(name: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RobenchError(f"{name}: {what} must be a positive integer, got {value!r}")
    return value


@defenses.register("wavenet_purify", inputs=(SEQUENCE,),
                   description="PixelDefend in 1-D: greedy WaveNet purification within eps_defend (Song et al. 2018); slow")
def wavenet_purify(model: nn.Module, *, data: Dataset, eps_defend: float = 0.02, passes: int = 1, seed: int = 0,
                   steps: int = 1500) -> nn.Module:
    """``eps_defend`` in input units; ``seed`` and ``steps`` pick the zoo WaveNet (trained on
    ``data``'s training split on first use, cached)."""
    eps_defend = _check_unit("wavenet_purify", "eps_defend", eps_defend)
    passes = _check_count("wavenet_purify", "passes", passes)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RobenchError(f"wavenet_purify: seed must be an integer, got {seed!r}")
    from robench.zoo.wavenet import wavenet

    density = wavenet(data, seed=seed, steps=_check_count("wavenet_purify", "steps", steps))
    return WaveNetPurify(model, density, eps_defend=eps_defend, passes=passes)


@defenses.register("parallel_purify", inputs=(SEQUENCE,),
                   description="one-pass purification with the Parallel WaveNet student (IAF); randomized, differentiable")
def parallel_purify(model: nn.Module, *, data: Dataset, eps_defend: float = 0.02, keep: float = 0.8, seed: int = 0,
                    steps: int = 600, teacher_steps: int = 1500, flows: int = 3) -> nn.Module:
    """``keep``: the share of the input's latent kept (see :class:`ParallelPurify`); ``seed``,
    ``steps``, ``teacher_steps`` and ``flows`` pick the zoo student (distilled on first use, cached);
    ``seed`` also seeds the purifier's noise."""
    eps_defend = _check_unit("parallel_purify", "eps_defend", eps_defend)
    keep = _check_unit("parallel_purify", "keep", keep)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise RobenchError(f"parallel_purify: seed must be an integer, got {seed!r}")
    from robench.zoo.wavenet import parallel_wavenet

    student = parallel_wavenet(data, seed=seed, steps=_check_count("parallel_purify", "steps", steps),
                               teacher_steps=_check_count("parallel_purify", "teacher_steps", teacher_steps),
                               flows=_check_count("parallel_purify", "flows", flows))
    return ParallelPurify(model, student, eps_defend=eps_defend, keep=keep, seed=seed)

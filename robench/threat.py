"""Threat models: the one place that defines the ball, samples it, projects onto it and checks membership.

Attacks call ``project`` and ``random_start``; ``verify`` calls ``contains``; nothing else
re-implements a clip or draws a random start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from robench import rng
from robench.errors import RobenchError

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass(frozen=True)
class ThreatModel:
    """An epsilon-ball in the L-inf or L2 norm, intersected with the data bounds."""

    norm: Norm
    epsilon: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise RobenchError(f"unknown norm {self.norm!r}; valid choices: {', '.join(NORMS)}")
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise RobenchError(f"bad data bounds {self.bounds}: need finite lo < hi")
        eps = self.epsilon
        if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise RobenchError(f"epsilon must be a finite number > 0, got {eps!r}")
        if self.norm == "linf" and eps > hi - lo:
            raise RobenchError(
                f"L-inf epsilon {eps} is larger than the data range {hi - lo} (bounds {self.bounds}); "
                "use an epsilon inside the range"
            )

    def check_input_size(self, n_features: int) -> None:
        """An L2 ball larger than the diagonal of the data box contains the whole box."""
        lo, hi = self.bounds
        diameter = (hi - lo) * math.sqrt(n_features)
        if self.norm == "l2" and self.epsilon > diameter:
            raise RobenchError(
                f"L2 epsilon {self.epsilon} is larger than the data's diameter {diameter:.3g}; "
                "use a smaller epsilon"
            )

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-example distance in this threat model's norm."""
        delta = (x_adv - x).flatten(1)
        if self.norm == "linf":
            return delta.abs().amax(dim=1)
        return delta.norm(p=2, dim=1)

    def clip_to_bounds(self, x: Tensor) -> Tensor:
        return x.clamp(self.bounds[0], self.bounds[1])

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Nearest point of (ball around x) ∩ (bounds), exactly for L-inf.

        For L2 we project onto the ball, then clip to the box: clipping moves every coordinate
        towards x's (which is inside the box), so the result stays in the ball.
        """
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.epsilon, self.epsilon)
        else:
            norms = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
            factor = (self.epsilon / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (delta.dim() - 1)))
        return self.clip_to_bounds(x + delta)

    def contains(self, x_adv: Tensor, x: Tensor, *, tolerance: float = 1e-6) -> Tensor:
        """Per-example: inside the ball (within tolerance) and inside the bounds."""
        lo, hi = self.bounds
        in_ball = self.distance(x_adv, x) <= self.epsilon + tolerance
        flat = x_adv.flatten(1)
        in_bounds = (flat >= lo - tolerance).all(dim=1) & (flat <= hi + tolerance).all(dim=1)
        finite = torch.isfinite(flat).all(dim=1)
        return in_ball & in_bounds & finite

    def random_start(self, x: Tensor, *, seeds: Tensor | None = None, generator: torch.Generator | None = None,
                     **options: object) -> Tensor:
        """``x`` plus a :meth:`random_delta`, projected into ball and bounds: where PGD starts."""
        delta = random_delta(self.norm, self.epsilon, tuple(x.shape[1:]) if generator is None else tuple(x.shape), seeds=seeds,
                                  generator=generator, dtype=x.dtype, device=x.device, **options)  # type: ignore[arg-type]
        return self.project(x + delta, x)

    def describe(self) -> str:
        return f"{self.norm} eps={self.epsilon:g} bounds={self.bounds}"


def steepest_direction(grad: Tensor, norm: str) -> Tensor:
    """The unit-norm ascent direction of a gradient step under ``norm``: sign(g) for L-inf
    (the dual of L1), g / ||g||_2 for L2 (Madry et al. 2018, Sec. 2.1)."""
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))


def random_delta(
    norm: str, epsilon: float, shape: tuple[int, ...], *, seeds: Tensor | None = None, counter: int = 0, radius_counter: int | None = None,
    surface: bool = False, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A random perturbation per row (the only sampler of random starts), of shape (rows, *shape), in the ball of radius epsilon.

    Uniform in the ball (Madry et al. 2018; foolbox): L-inf, each coordinate uniform on
    [-eps, eps]; L2, a normal direction with radius eps * u^(1/d). With ``surface``, on the
    ball's boundary instead (AutoAttack's APGD start: the L-inf or L2 direction rescaled to
    norm eps). Draws come from the per-example counter streams of ``robench.rng`` (``seeds``,
    one per row; the L-inf values and the L2 direction from stream ``counter``, the L2 radius
    from ``radius_counter``), so a row's start depends on nothing but its seed; or, for
    training loops, from a ``torch.Generator`` (uniform only; rows = ``shape[0]``).
    """
    eps = epsilon
    if generator is not None:
        u = torch.rand(shape, generator=generator, dtype=dtype)
        u = u.to(device) if device is not None else u
        if norm != "linf" or surface:
            raise RobenchError("random_delta with a generator draws the L-inf uniform start only")
        return (2 * u - 1) * eps
    if seeds is None:
        raise RobenchError("random_delta needs per-row seeds or a generator")
    view = (-1, *[1] * len(shape))
    if norm == "linf":
        t = 2 * rng.uniform(seeds, counter, shape, dtype) - 1
        if surface:
            return eps * (t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(view))
        return t * eps
    g = rng.normal(seeds, counter, shape, dtype).flatten(1)
    direction = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if surface:
        return (eps * direction).view(-1, *shape)
    radius_counter = counter + 1 if radius_counter is None else radius_counter
    radius = rng.uniform(seeds, radius_counter, (1,), dtype) ** (1.0 / g.shape[1])
    return (eps * radius * direction).view(-1, *shape)


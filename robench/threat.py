"""Threat models: the one place that defines the ball, samples it, projects onto it and checks membership.

Everything a norm decides lives in one :class:`Ball` subclass per norm (distance, projection,
steepest-ascent step, the scale of one coordinate's step, the input-size check, the dual norm,
random points in, on and at the vertices of the ball, FAB's box-constrained hyperplane terms), as
foolbox keeps one class per norm: adding L1 is one class and one line in ``BALLS``. ``ThreatModel``
(norm, epsilon, bounds) delegates to ``threat.ball``; attacks call ``project`` and
``random_start``; ``verify`` calls ``contains``; nothing else re-implements a clip or draws a
random start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from robench import rng
from robench.errors import RobenchError

Norm = Literal["linf", "l2"]


def _rows(t: Tensor) -> tuple[int, ...]:
    """The view that broadcasts a per-row value over ``t``'s other dimensions."""
    return (-1, *[1] * (t.dim() - 1))


class Ball:
    """The geometry of one norm's ball around 0 (the threat model adds the centre and the bounds)."""

    #: the norm's name, as cards and ``--norm`` spell it
    name: ClassVar[str]
    #: whether the ball is an axis-aligned box: then ball ∩ bounds is exactly the interval
    #: [x - eps, x + eps] ∩ bounds certifiers start from, and needs no bound of its own
    is_box: ClassVar[bool]
    #: what :meth:`extreme_points` draws, in words
    extreme_points_are: ClassVar[str]

    def norm(self, flat: Tensor) -> Tensor:
        """Per-row norm of (N, D) rows."""
        raise NotImplementedError

    def dual_norm(self, t: Tensor, dim: int = -1) -> Tensor:
        """The dual norm along ``dim``: max of <w, delta> over the unit ball (bounds of linear maps)."""
        raise NotImplementedError

    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        """The nearest perturbation of norm <= epsilon (per row)."""
        raise NotImplementedError

    def steepest_direction(self, grad: Tensor) -> Tensor:
        """The unit-norm direction that increases a linear function with gradient ``grad`` the most."""
        raise NotImplementedError

    def coordinate_scale(self, epsilon: float, dim: int) -> float:
        """One coordinate's share of an epsilon perturbation spread evenly over ``dim`` coordinates:
        the natural unit of a finite-difference or SPSA step."""
        raise NotImplementedError

    def covering_radius(self, width: float, dim: int) -> float:
        """The smallest epsilon whose ball covers a box of side ``width`` in ``dim`` dimensions."""
        raise NotImplementedError

    def check_epsilon(self, epsilon: float, bounds: tuple[float, float]) -> None:
        """Refuse an epsilon that says nothing about the data (checked when the threat model is made)."""

    def check_input_size(self, epsilon: float, bounds: tuple[float, float], n_features: int) -> None:
        """Refuse an epsilon whose ball covers the whole data box of inputs of ``n_features``."""

    def uniform(self, stream: rng.Stream, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """Perturbations (rows, *shape) uniform in the ball (Madry et al. 2018's random start)."""
        raise NotImplementedError

    def surface(self, stream: rng.Stream, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """Perturbations (rows, *shape) on the ball's boundary (AutoAttack's APGD and FAB starts)."""
        raise NotImplementedError

    def extreme_points(self, stream: rng.Stream, k: int, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """(rows, k, *shape) random points of norm epsilon where blind noise moves a model most:
        the vertices when the ball has them (Carlini et al. 2019, Sec. 5.2)."""
        raise NotImplementedError

    def hyperplane_terms(self, a: Tensor, room: Tensor, moving: Tensor) -> tuple[Tensor, Tensor]:
        """FAB's box-constrained projection (Croce & Hein 2020, Sec. 2.1) as g(tau) = sum_i m_i
        min(tau, beta_i): the weights m and breakpoints beta, from |w_i| and the room per coordinate."""
        raise NotImplementedError

    def hyperplane_step(self, tau: Tensor, a: Tensor) -> Tensor:
        """How far each coordinate moves at the root tau of g (before the room caps it)."""
        raise NotImplementedError


class LinfBall(Ball):
    name = "linf"
    is_box = True
    extreme_points_are = "vertices"

    def norm(self, flat: Tensor) -> Tensor:
        return flat.abs().amax(dim=1)

    def dual_norm(self, t: Tensor, dim: int = -1) -> Tensor:
        return t.abs().sum(dim=dim)

    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        return delta.clamp(-epsilon, epsilon)

    def steepest_direction(self, grad: Tensor) -> Tensor:
        """sign(g), the dual of L1 (Goodfellow et al. 2015; Madry et al. 2018, Sec. 2.1)."""
        return grad.sign()

    def coordinate_scale(self, epsilon: float, dim: int) -> float:
        return epsilon

    def covering_radius(self, width: float, dim: int) -> float:
        return width

    def check_epsilon(self, epsilon: float, bounds: tuple[float, float]) -> None:
        lo, hi = bounds
        if epsilon > hi - lo:
            raise RobenchError(
                f"L-inf epsilon {epsilon} is larger than the data range {hi - lo} (bounds {bounds}); "
                "use an epsilon inside the range"
            )

    def uniform(self, stream: rng.Stream, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """Each coordinate uniform on [-eps, eps]."""
        return (2 * stream.uniform(shape, dtype) - 1) * epsilon

    def surface(self, stream: rng.Stream, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """A uniform point of the cube rescaled to L-inf norm eps (AutoAttack's start)."""
        t = 2 * stream.uniform(shape, dtype) - 1
        return epsilon * (t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(_rows(t)))

    def extreme_points(self, stream: rng.Stream, k: int, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        return epsilon * stream.rademacher((k, *shape), dtype)

    def hyperplane_terms(self, a: Tensor, room: Tensor, moving: Tensor) -> tuple[Tensor, Tensor]:
        """g(tau) = sum_i |w_i| min(tau, r_i): the most <v, delta> reaches within radius tau."""
        return a, room

    def hyperplane_step(self, tau: Tensor, a: Tensor) -> Tensor:
        return tau


class L2Ball(Ball):
    name = "l2"
    is_box = False
    extreme_points_are = "surface"

    def norm(self, flat: Tensor) -> Tensor:
        return flat.norm(p=2, dim=1)

    def dual_norm(self, t: Tensor, dim: int = -1) -> Tensor:
        return t.norm(dim=dim)

    def project(self, delta: Tensor, epsilon: float) -> Tensor:
        norms = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        factor = (epsilon / norms).clamp(max=1.0)
        return delta * factor.view(_rows(delta))

    def steepest_direction(self, grad: Tensor) -> Tensor:
        """g / ||g||_2 (Madry et al. 2018, Sec. 2.1)."""
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(_rows(grad))

    def coordinate_scale(self, epsilon: float, dim: int) -> float:
        return epsilon / math.sqrt(dim)

    def covering_radius(self, width: float, dim: int) -> float:
        return width * math.sqrt(dim)

    def check_input_size(self, epsilon: float, bounds: tuple[float, float], n_features: int) -> None:
        """An L2 ball larger than the diagonal of the data box contains the whole box."""
        lo, hi = bounds
        diameter = (hi - lo) * math.sqrt(n_features)
        if epsilon > diameter:
            raise RobenchError(
                f"L2 epsilon {epsilon} is larger than the data's diameter {diameter:.3g}; "
                "use a smaller epsilon"
            )

    def _direction(self, stream: rng.Stream, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        g = stream.normal(shape, dtype).flatten(1)
        return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def uniform(self, stream: rng.Stream, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """A normal direction with radius eps * u^(1/d) (foolbox's L2 start); the radius is the
        stream's draw after the direction."""
        direction = self._direction(stream, shape, dtype)
        radius = stream.uniform((1,), dtype) ** (1.0 / direction.shape[1])
        return (epsilon * radius * direction).view(-1, *shape)

    def surface(self, stream: rng.Stream, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        return (epsilon * self._direction(stream, shape, dtype)).view(-1, *shape)

    def extreme_points(self, stream: rng.Stream, k: int, shape: tuple[int, ...], epsilon: float, dtype: torch.dtype) -> Tensor:
        """An L2 ball has no vertices: normal directions scaled onto its surface."""
        g = stream.normal((k, *shape), dtype)
        norms = g.flatten(2).norm(dim=2).clamp_min(1e-12).view(len(g), k, *[1] * len(shape))
        return epsilon * g / norms

    def hyperplane_terms(self, a: Tensor, room: Tensor, moving: Tensor) -> tuple[Tensor, Tensor]:
        """KKT: delta_i = sign(v_i) min(lambda |w_i|, r_i), so g(lambda) = sum_i w_i^2 min(lambda, r_i / |w_i|)."""
        return a * a, room / torch.where(moving, a, torch.ones_like(a))

    def hyperplane_step(self, tau: Tensor, a: Tensor) -> Tensor:
        return tau * a


#: one ball per norm: the registry of norms (adding L1 is one class and one entry)
BALLS: dict[str, Ball] = {ball.name: ball for ball in (LinfBall(), L2Ball())}
NORMS: tuple[str, ...] = tuple(BALLS)


def ball_of(norm: str | Ball) -> Ball:
    """The ball of a norm's name (a ball is returned as it is)."""
    if isinstance(norm, Ball):
        return norm
    ball = BALLS.get(norm)
    if ball is None:
        raise RobenchError(f"unknown norm {norm!r}; valid choices: {', '.join(NORMS)}")
    return ball


@dataclass(frozen=True)
class ThreatModel:
    """An epsilon-ball in the L-inf or L2 norm, intersected with the data bounds."""

    norm: Norm
    epsilon: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        ball = ball_of(self.norm)
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise RobenchError(f"bad data bounds {self.bounds}: need finite lo < hi")
        eps = self.epsilon
        if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise RobenchError(f"epsilon must be a finite number > 0, got {eps!r}")
        ball.check_epsilon(eps, self.bounds)

    @property
    def ball(self) -> Ball:
        """The norm's geometry: everything that differs between norms."""
        return BALLS[self.norm]

    def check_input_size(self, n_features: int) -> None:
        """Refuse a ball that contains the whole data box of inputs of ``n_features`` (L2)."""
        self.ball.check_input_size(self.epsilon, self.bounds, n_features)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-example distance in this threat model's norm."""
        return self.ball.norm((x_adv - x).flatten(1))

    def clip_to_bounds(self, x: Tensor) -> Tensor:
        return x.clamp(self.bounds[0], self.bounds[1])

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Nearest point of (ball around x) ∩ (bounds), exactly for L-inf.

        For L2 we project onto the ball, then clip to the box: clipping moves every coordinate
        towards x's (which is inside the box), so the result stays in the ball.
        """
        return self.clip_to_bounds(x + self.ball.project(x_adv - x, self.epsilon))

    def steepest_direction(self, grad: Tensor) -> Tensor:
        """The unit ascent direction of a gradient step in this norm (sign / normalized)."""
        return self.ball.steepest_direction(grad)

    def step_scale(self, dim: int) -> float:
        """The size of one coordinate's step (eps under L-inf, eps / sqrt(D) under L2)."""
        return self.ball.coordinate_scale(self.epsilon, dim)

    def contains(self, x_adv: Tensor, x: Tensor, *, tolerance: float = 1e-6) -> Tensor:
        """Per-example: inside the ball (within tolerance) and inside the bounds."""
        lo, hi = self.bounds
        in_ball = self.distance(x_adv, x) <= self.epsilon + tolerance
        flat = x_adv.flatten(1)
        in_bounds = (flat >= lo - tolerance).all(dim=1) & (flat <= hi + tolerance).all(dim=1)
        finite = torch.isfinite(flat).all(dim=1)
        return in_ball & in_bounds & finite

    def random_start(self, x: Tensor, *, stream: rng.Stream | None = None, seeds: Tensor | None = None,
                     generator: torch.Generator | None = None, surface: bool = False, radius: float = 1.0,
                     counter: int = 0) -> Tensor:
        """``x`` plus a random perturbation, projected into ball and bounds: where PGD starts.

        Uniform in the ball, or on its boundary with ``surface``, of radius ``radius`` times
        epsilon; drawn from ``stream`` (``robench.rng``: depends on nothing but each row's seed),
        from stream ``counter`` of ``seeds``, or, for training loops, from a ``torch.Generator``
        (L-inf uniform only).
        """
        if generator is not None:
            delta = random_delta(self.norm, self.epsilon, tuple(x.shape), generator=generator, dtype=x.dtype, device=x.device)
            return self.project(x + delta, x)
        if stream is None:
            if seeds is None:
                raise RobenchError("random_start needs a stream, per-row seeds or a generator")
            stream = rng.stream(seeds, counter)
        delta = self.random_delta(stream, tuple(x.shape[1:]), dtype=x.dtype, surface=surface, radius=radius)
        return self.project(x + delta, x)

    def random_delta(self, stream: rng.Stream, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
                     surface: bool = False, radius: float = 1.0) -> Tensor:
        """A perturbation per row of ``stream``, uniform in (or, ``surface``, on) the ball of radius ``radius`` * eps."""
        eps = radius * self.epsilon if radius != 1.0 else self.epsilon
        draw = self.ball.surface if surface else self.ball.uniform
        return draw(stream, shape, eps, dtype)

    def describe(self) -> str:
        return f"{self.norm} eps={self.epsilon:g} bounds={self.bounds}"


def steepest_direction(grad: Tensor, norm: str) -> Tensor:
    """The unit-norm ascent direction of a gradient step under ``norm`` (see :meth:`Ball.steepest_direction`)."""
    return ball_of(norm).steepest_direction(grad)


def random_delta(
    norm: str, epsilon: float, shape: tuple[int, ...], *, seeds: Tensor | None = None, counter: int = 0,
    surface: bool = False, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A random perturbation per row, of shape (rows, *shape), in (or on) the ball of radius epsilon.

    From stream ``counter`` of the per-example ``seeds`` (see :meth:`ThreatModel.random_delta`),
    or, for training loops, from a ``torch.Generator`` (L-inf uniform only; rows = ``shape[0]``).
    """
    if generator is not None:
        if norm != LinfBall.name or surface:
            raise RobenchError("random_delta with a generator draws the L-inf uniform start only")
        u = torch.rand(shape, generator=generator, dtype=dtype)
        u = u.to(device) if device is not None else u
        return (2 * u - 1) * epsilon
    if seeds is None:
        raise RobenchError("random_delta needs per-row seeds or a generator")
    ball = ball_of(norm)
    draw = ball.surface if surface else ball.uniform
    return draw(rng.stream(seeds, counter), shape, epsilon, dtype)

"""PGD: projected gradient ascent on the cross-entropy loss (Madry et al. 2018, Eq. 2).

Madry, Makelov, Schmidt, Tsipras, Vladu. "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018. From a random point of the ball, repeat

    x_{t+1} = Proj_{B(x, eps) ∩ bounds}(x_t + alpha * s(grad_x CE(f(x_t), y))),

with s = sign under L-inf and s = g / ||g||_2 under L2. Written here instead of going through
foolbox because foolbox/eagerpy cost ~1.4x a plain torch loop on a small model and ask for one more
forward per example (benchmarks/RESULTS.md). The parameters and their defaults are foolbox's
LinfPGD / L2PGD ones, so cards written for the former adapter keep their meaning: 40 steps of
0.01/0.3 eps under L-inf, 50 steps of 0.025 eps under L2, ``abs_stepsize`` overriding both.

Vectorized over examples: the forward of each gradient also says whether the current iterate is
misclassified; such an example leaves the batch with that iterate as its proposal, so robust
examples get the whole budget (one host sync per step, to shrink the batch). An example that is
never misclassified proposes its last iterate (``verify`` decides). Restarts run only on examples
still robust, each from a fresh random start of the per-example streams of ``robench.rng``.
Queries: one per forward+backward of an example (times the target's ``queries_per_row``), plus
one forward per example between restarts to see which are still robust. The loop of restarts and
steps is ``robench.attacks.iterative``'s; PGD is its start and its step.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from torch import Tensor

from robench import rng
from robench.attacks.iterative import Batch, Run, Setup, SteppedAttack
from robench.hyperparameters import Flag, Float, Int, declare
from robench.registry import attacks
from robench.threat import ThreatModel

#: foolbox 3's defaults per norm: (steps, step size relative to epsilon)
DEFAULTS: dict[str, tuple[int, float]] = {"linf": (40, 0.01 / 0.3), "l2": (50, 0.025)}


@attacks.register("pgd", description="PGD on cross-entropy, L-inf sign / L2 normalized steps (Madry et al. 2018)")
class PGD(SteppedAttack):
    """Madry et al.'s PGD with foolbox's parameters; ``None`` means foolbox's default for the norm."""

    name = "pgd"
    gradient_free = False
    #: restart r owns counters 4r .. 4r + 3: the L-inf start takes one, the L2 start three (a normal
    #: direction, a pair, then its radius)
    streams: ClassVar[rng.Layout] = rng.Layout(stride=4, unit="counter")

    hyperparameters = declare(
        steps=Int(None, "gradient steps per restart; None: foolbox's default for the norm (40 L-inf, 50 L2)", ge=1),
        rel_stepsize=Float(None, "step size as a fraction of epsilon; None: foolbox's (0.01 / 0.3 L-inf, 0.025 L2)", gt=0),
        abs_stepsize=Float(None, "absolute step size, overriding rel_stepsize", gt=0),
        random_start=Flag(True, "start each restart from a uniform point of the ball"),
        restarts=Int(1, "runs from fresh random starts, each on the examples still robust", ge=1),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(
        self,
        *,
        steps: int | None = None,
        rel_stepsize: float | None = None,
        abs_stepsize: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        max_batch: int | None = None,
    ) -> None:
        self._set(locals())

    def schedule(self, threat: ThreatModel) -> tuple[int, float]:
        """(steps, absolute step size) under ``threat``: explicit values, else foolbox's per-norm defaults."""
        default_steps, default_rel = DEFAULTS[threat.norm]
        steps = self.steps if self.steps is not None else default_steps
        if self.abs_stepsize is not None:
            return steps, self.abs_stepsize
        rel = self.rel_stepsize if self.rel_stepsize is not None else default_rel
        return steps, rel * threat.epsilon

    def budget(self, threat: ThreatModel) -> int:
        return (self.schedule(threat)[0] + 1) * self.restarts

    def runs(self, setup: Setup) -> Iterable[Run]:
        # without a random start every restart would be the same
        return (Run(r) for r in range(self.restarts if self.random_start else 1))

    def start(self, batch: Batch, stream: rng.Stream) -> Tensor:
        """Uniform in the L-inf ball / the L2 ball (direction normal, radius u^(1/d)), as foolbox draws it."""
        if not self.random_start:
            return batch.x.clone()
        return batch.threat.random_start(batch.x, stream=stream)

    def step(self, current: Tensor, grad: Tensor, x: Tensor, state: dict[str, Tensor], step_size: float,
             threat: ThreatModel) -> Tensor:
        return threat.project(current + step_size * threat.steepest_direction(grad), x)

"""Randomized-smoothing certification (Cohen, Rosenfeld, Kolter 2019, "Certified Adversarial
Robustness via Randomized Smoothing", Sec. 3.2, CERTIFY) for the gaussian-noise defense.

The target must declare its base classifier and noise level as a ``gaussian_smoothing`` tag (a
``robench.tags.GaussianSmoothing``, as ``robench.defenses.noise.GaussianNoiseVote`` does). Per
example: ``n0`` noisy copies
x + N(0, sigma^2 I) select the top class c_A, ``n`` fresh copies count its votes n_A,
p_lower = the one-sided (1 - alpha) Clopper-Pearson lower bound Beta(alpha; n_A, n - n_A + 1),
and the radius is sigma * Phi^-1(p_lower). The example is certified when c_A == y, p_lower > 1/2
and the radius exceeds epsilon (strictly: Cohen et al.'s Theorem 1 covers the open ball of that
radius, robench's balls are closed); otherwise unknown (abstain). Never a counterexample: the test
is probabilistic.

What is certified is the smoothed classifier g(x) = argmax_c P(base(x + noise) = c), with
probability at least 1 - alpha over the draws; the defense's forward pass is a Monte-Carlo
estimate of g from ``votes`` draws, which can disagree with g near its decision boundary, so a
"certified" example can still be misclassified by some of the defense's own forward passes. The
L2 ball is certified whole, which contains its intersection with the data bounds. Draws come from
a ``torch.Generator`` seeded from ``seed`` and the example's seed (or its position in the batch).
"""
from __future__ import annotations

import math

import torch
from scipy.stats import beta, norm
from torch import Tensor, nn

from robench.certify.base import (
    CERTIFIED, UNKNOWN, Certification, Certifier, Timer, check_examples,
)
from robench.errors import RobenchError
from robench.hyperparameters import Float, Int, declare
from robench.registry import certifiers
from robench.rng import derive_seed
from robench.tags import target_tags
from robench.threat import ThreatModel


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) lower confidence bound on a binomial proportion."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(p_lower) where p_lower > 1/2, else NaN (abstain)."""
    return float(sigma * norm.ppf(p_lower)) if p_lower > 0.5 else float("nan")


def smoothed_parts(target: nn.Module, who: str = "smoothing") -> tuple[nn.Module, float]:
    """The base classifier and noise level of the target's ``smoothing`` tag."""
    parts = target_tags(target).smoothing
    sigma = None if parts is None else parts.sigma
    if parts is None or isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise RobenchError(f"{who} certifies the gaussian-noise defense (a module declaring gaussian_smoothing: a base "
                           f"classifier and a noise level > 0, like GaussianNoiseVote); {type(target).__name__} has none")
    return parts.base, float(sigma)


@torch.no_grad()
def vote_counts(model: nn.Module, x: Tensor, draws: int, sigma: float, batch: int, generator: torch.Generator) -> Tensor:
    """Votes of ``model`` on ``draws`` copies x + sigma * N(0, I) of one example x (C x ...)."""
    counts: Tensor | None = None
    done = 0
    while done < draws:
        size = min(batch, draws - done)
        noise = torch.randn((size, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
        logits = model(x.unsqueeze(0) + sigma * noise)
        found = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).cpu()
        counts = found if counts is None else counts + found
        done += size
    assert counts is not None
    return counts


@certifiers.register("smoothing")
class Smoothing(Certifier):
    """Cohen et al.'s CERTIFY for the gaussian-noise defense under L2.

    Keyword-only: ``n0`` (selection draws), ``n`` (estimation draws), ``alpha`` (failure
    probability), ``batch`` (noisy copies per forward pass), ``seed``.
    """

    name = "smoothing"
    norms = ("l2",)
    #: certifies the smoothed classifier with probability 1 - alpha, not the defense's own Monte-Carlo
    #: vote: an attack may rightly break what it certified
    sound = False

    hyperparameters = declare(
        n0=Int(100, "noisy draws that select the top class", ge=1),
        n=Int(1000, "noisy draws that estimate its probability", ge=1),
        alpha=Float(0.001, "failure probability of the certificate", gt=0, lt=0.5),
        batch=Int(1000, "noisy copies per forward pass", ge=1),
        seed=Int(0, "seed of the noise, with each example's own"),
    )

    def __init__(self, *, n0: int = 100, n: int = 1000, alpha: float = 0.001, batch: int = 1000, seed: int = 0) -> None:
        self._set(locals())

    def example_target(self, model: nn.Module) -> nn.Module:
        """The gaussian-noise defense around ``model``: what smoothing certifies."""
        from robench.defenses.noise import GaussianNoiseVote

        return GaussianNoiseVote(model, sigma=0.25, votes=64, seed=0).eval()

    def budget(self, threat: ThreatModel) -> int:
        """Its noisy forward passes per example: the selection and the estimation draws."""
        return self.n0 + self.n

    def check_norm(self, threat: ThreatModel) -> None:
        if threat.norm not in self.norms:
            raise RobenchError(f"smoothing certifies L2 balls only (Gaussian noise, Cohen et al. 2019), not {threat.norm}; "
                               "use ibp, crown or milp")

    def check(self, target: nn.Module, threat: ThreatModel, example_shape: tuple[int, ...] | None = None) -> None:
        self.check_norm(threat)
        smoothed_parts(target)

    def certify(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *,
                seeds: Tensor | None = None) -> Certification:
        check_examples(x, y)
        self.check_norm(threat)
        model, sigma = smoothed_parts(target)
        n = len(x)
        status = torch.full((n,), UNKNOWN, dtype=torch.int8)
        seconds = torch.zeros(n, dtype=torch.float64)
        radius = torch.full((n,), math.nan, dtype=torch.float64)
        p_lower = torch.zeros(n, dtype=torch.float64)
        top = torch.zeros(n, dtype=torch.int64)
        count = torch.zeros(n, dtype=torch.int64)
        for i in range(n):
            timer = Timer()
            key = int(seeds[i]) if seeds is not None else i
            generator = torch.Generator().manual_seed(derive_seed("smoothing", self.seed, key))
            selection = vote_counts(model, x[i], self.n0, sigma, self.batch, generator)
            top[i] = int(selection.argmax())
            estimate = vote_counts(model, x[i], self.n, sigma, self.batch, generator)
            count[i] = int(estimate[top[i]]) if top[i] < len(estimate) else 0
            p_lower[i] = clopper_pearson_lower(int(count[i]), self.n, self.alpha)
            radius[i] = certified_radius(float(p_lower[i]), sigma)
            if int(top[i]) == int(y[i]) and p_lower[i] > 0.5 and radius[i] > threat.epsilon:
                status[i] = CERTIFIED
            seconds[i] = timer.elapsed()
        return Certification(status.to(x.device), x.detach().clone(), seconds,
                             {"radius": radius, "p_lower": p_lower, "top_class": top, "count": count})

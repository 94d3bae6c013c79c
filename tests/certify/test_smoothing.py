"""Randomized-smoothing certification (robench/certify/smoothing.py): the radius is the hand
computation sigma * Phi^-1(Beta(alpha; n_A, n - n_A + 1)) on a base classifier whose votes are
scripted; selection and estimation draws are separate; a linear base classifier's radius stays
below its true distance to the boundary; refusals."""
import math

import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from robench.certify import CERTIFIED, UNKNOWN, Smoothing
from robench.defenses.noise import GaussianNoiseVote
from robench.errors import RobenchError
from robench.threat import ThreatModel


class Scripted(nn.Module):
    """Votes in a fixed order, whatever the (noisy) inputs: one-hot logits of ``labels``, in turn."""

    def __init__(self, labels: list[int], classes: int = 4) -> None:
        super().__init__()
        self.labels, self.classes, self.used = list(labels), classes, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.tensor(self.labels[self.used : self.used + len(x)])
        assert len(out) == len(x), "asked for more votes than scripted"
        self.used += len(x)
        return nn.functional.one_hot(out, self.classes).float()


def _target(labels, sigma=0.5):
    return GaussianNoiseVote(Scripted(labels), sigma=sigma, votes=1)


def test_radius_matches_the_hand_computation():
    n0, n, alpha, sigma = 10, 200, 0.001, 0.5
    # selection: class 2 wins; estimation: 180 votes for 2, 20 for 0 (counted in batches of 64)
    labels = [2] * 7 + [1] * 3 + [2] * 100 + [0] * 20 + [2] * 80
    p_lower = beta.ppf(alpha, 180, n - 180 + 1)
    radius = sigma * norm.ppf(p_lower)
    x, y = torch.zeros(1, 1, 3, 3), torch.tensor([2])
    certifier = Smoothing(n0=n0, n=n, alpha=alpha, batch=64)
    for eps, expected in ((0.9 * radius, CERTIFIED), (1.1 * radius, UNKNOWN)):
        target = _target(labels, sigma)
        result = certifier.certify(target, x, y, ThreatModel("l2", eps))
        assert target.model.used == n0 + n
        assert result.status.tolist() == [expected]
        assert result.details["radius"][0].item() == pytest.approx(radius, rel=1e-12)
        assert result.details["p_lower"][0].item() == pytest.approx(p_lower, rel=1e-12)
        assert result.details["top_class"].tolist() == [2] and result.details["count"].tolist() == [180]
        assert torch.equal(result.counterexample, x), "never a counterexample"
    # the wrong label: the smoothed classifier is certified, but for another class: unknown
    wrong = certifier.certify(_target(labels, sigma), x, torch.tensor([0]), ThreatModel("l2", 0.1 * radius))
    assert wrong.status.tolist() == [UNKNOWN]


def test_selection_and_estimation_use_separate_draws():
    """Selection picks class 2; the estimation draws never vote for it: p_lower = 0, abstain."""
    labels = [2] * 10 + [0] * 200
    result = Smoothing(n0=10, n=200).certify(_target(labels), torch.zeros(1, 4), torch.tensor([2]), ThreatModel("l2", 0.01))
    assert result.status.tolist() == [UNKNOWN]
    assert result.details["top_class"].tolist() == [2] and result.details["count"].tolist() == [0]
    assert result.details["p_lower"].tolist() == [0.0] and math.isnan(result.details["radius"][0].item())


def test_a_bare_majority_abstains():
    labels = [1] * 10 + [1] * 110 + [3] * 90  # p_hat = 0.55: the lower bound is below 1/2
    result = Smoothing(n0=10, n=200).certify(_target(labels), torch.zeros(1, 4), torch.tensor([1]), ThreatModel("l2", 0.01))
    assert result.status.tolist() == [UNKNOWN] and result.details["p_lower"][0] < 0.5


class Halfplane(nn.Module):
    """logits [0, w.x + b]: the smoothed classifier's radius is exactly |w.x + b| / ||w||."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.tensor([3.0, -4.0, 0.0, 0.0])  # ||w|| = 5
        self.b = -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


def test_a_linear_base_classifier_is_certified_up_to_its_distance_to_the_boundary():
    sigma = 0.25
    target = GaussianNoiseVote(Halfplane(), sigma=sigma, votes=8)
    x = torch.tensor([[0.5, 0.0, 0.2, 0.2], [0.1, 0.5, 0.0, 0.0], [0.3, 0.1, 0.5, 0.5]])
    distance = (x @ target.model.w + target.model.b).abs() / 5.0  # 0.2, 0.44, 0.02
    y = target.model(x).argmax(1)
    certifier = Smoothing(n0=64, n=4000, alpha=0.001, batch=1000, seed=3)
    result = certifier.certify(target, x, y, ThreatModel("l2", 0.1))
    radius = result.details["radius"]
    assert result.status.tolist() == [CERTIFIED, CERTIFIED, UNKNOWN]
    assert (radius[:2] < distance[:2]).all() and (radius[:2] > distance[:2] - 0.2 * sigma).all()
    # seeded: the same again; an example's result does not depend on its batch
    again = certifier.certify(target, x, y, ThreatModel("l2", 0.1), seeds=torch.tensor([7, 8, 9]))
    alone = certifier.certify(target, x[1:2], y[1:2], ThreatModel("l2", 0.1), seeds=torch.tensor([8]))
    assert alone.details["count"][0] == again.details["count"][1]
    assert torch.equal(certifier.certify(target, x, y, ThreatModel("l2", 0.1)).details["count"], result.details["count"])


def test_refusals():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(RobenchError, match="smoothing certifies the gaussian-noise defense.*Sequential has none"):
        Smoothing().certify(plain, torch.zeros(1, 4), torch.tensor([0]), ThreatModel("l2", 0.1))
    with pytest.raises(RobenchError, match="smoothing certifies L2 balls only"):
        Smoothing().certify(_target([0] * 10), torch.zeros(1, 4), torch.tensor([0]), ThreatModel("linf", 0.1))
    with pytest.raises(RobenchError, match="smoothing: n must be an integer >= 1"):
        Smoothing(n=0)
    with pytest.raises(RobenchError, match="alpha must be a finite number > 0 and < 0.5"):
        Smoothing(alpha=0.7)

"""The rest of the checklist (robench/diagnostics/checklist.py): each check fires on a target built to
trigger it and stays quiet on an honest linear model (``test_diagnostics``'s ``linear_probes``)."""
import copy

import pytest
import torch
from torch import nn

from robench.attacks.random_search import RandomSearch
from robench.diagnostics import checklist
from robench.threat import ThreatModel
from test_diagnostics import Bowl, Linear, Saturated, labelled_inputs, run_probes

NEW_CHECKS = ("single_step_beats_iterative", "random_search_beats_attacks", "hard_label_beats_gradient",
              "gradient_mismatch", "restart_sensitivity", "step_size_sensitivity", "targeted_beats_untargeted")

EPS = 0.1


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Corner(nn.Module):
    """Wrong class only within 0.2 eps (L-inf) of one corner ``x0 + eps * s`` of the ball around x0."""

    def __init__(self, x0: torch.Tensor, signs: torch.Tensor, eps: float = EPS) -> None:
        super().__init__()
        self.register_buffer("corner", (x0 + eps * signs).flatten())
        self.eps = eps

    def forward(self, x):
        inside = 0.2 * self.eps - (x.flatten(1) - self.corner).abs().amax(1)
        return torch.stack([torch.zeros_like(inside), inside], dim=1)


class Hill(nn.Module):
    """A stand-in gradient (what BPDA would give) whose slope at x0 is ``signs`` but which peaks
    right next to x0: one step from x0 lands on the corner, iterates from anywhere else fall back."""

    def __init__(self, x0: torch.Tensor, signs: torch.Tensor, curvature: float = 1e3) -> None:
        super().__init__()
        self.register_buffer("x0", x0.flatten())
        self.register_buffer("signs", signs.flatten())
        self.curvature = curvature

    def forward(self, x):
        d = x.flatten(1) - self.x0
        up = d @ self.signs - self.curvature * d.pow(2).sum(1)
        return torch.stack([torch.zeros_like(up), up], dim=1)


class Outward(nn.Module):
    """A stand-in gradient that pushes every coordinate away from x0 in the direction it already
    has: PGD ends in the corner of the orthant its random start fell in (where the stand-in, too,
    calls it misclassified: every coordinate beyond 0.9 eps)."""

    def __init__(self, x0: torch.Tensor, eps: float = EPS) -> None:
        super().__init__()
        self.register_buffer("x0", x0.flatten())
        self.threshold = 0.9 * eps * x0.numel()

    def forward(self, x):
        up = (x.flatten(1) - self.x0).abs().sum(1) - self.threshold
        return torch.stack([torch.zeros_like(up), up], dim=1)


def corner_case(n: int = 32, dims: int = 4):
    x0 = torch.full((1, 1, 1, dims), 0.5)
    signs = torch.tensor([1.0, -1.0] * (dims // 2)).view(1, 1, 1, dims)
    return x0, signs, x0.repeat(n, 1, 1, 1), torch.zeros(n, dtype=torch.long)


@pytest.fixture(scope="module")
def linear_probes():
    linear = Linear().eval()
    x, y = labelled_inputs(linear)
    return run_probes(linear, undefended=copy.deepcopy(linear), x=x, y=y, epsilon=0.05)


@pytest.fixture(scope="module")
def saturated_probes():
    linear = Linear().eval()
    x, y = labelled_inputs(linear)
    return run_probes(Saturated(linear), undefended=linear, x=x, y=y, epsilon=0.05)


def test_the_new_checks_are_registered_and_quiet_on_an_honest_linear_model(linear_probes):
    for name in NEW_CHECKS:
        assert name in linear_probes
        assert not linear_probes[name].fired, linear_probes[name].detail
    assert linear_probes["gradient_mismatch"].detail.split("median ")[1] > "0.5"  # the true gradient, measured


def test_a_saturated_softmax_is_beaten_by_random_search_hard_labels_and_targeted_attacks(saturated_probes):
    for name in ("random_search_beats_attacks", "hard_label_beats_gradient", "targeted_beats_untargeted"):
        assert saturated_probes[name].fired, saturated_probes[name].detail
    assert "10,000 random points" in saturated_probes["random_search_beats_attacks"].detail


def test_single_step_beats_iterative_fires_when_only_the_first_step_points_the_right_way():
    x0, signs, x, y = corner_case()
    rows = run_probes(Corner(x0, signs), attack_target=Hill(x0, signs), x=x, y=y, epsilon=EPS)
    assert rows["single_step_beats_iterative"].fired, rows["single_step_beats_iterative"].detail
    assert "robust accuracy 0.000" in rows["single_step_beats_iterative"].detail  # FGSM broke all 32


def test_gradient_mismatch_fires_on_a_stand_in_gradient_unrelated_to_the_model():
    target = Linear(seed=0).eval()
    x, y = labelled_inputs(target)
    wrong = Linear(seed=1).eval()  # a BPDA stand-in that is some other model
    rows = run_probes(target, attack_target=wrong, x=x, y=y, epsilon=0.05)
    assert rows["gradient_mismatch"].fired, rows["gradient_mismatch"].detail
    honest = run_probes(target, x=x, y=y, epsilon=0.05)
    assert not honest["gradient_mismatch"].fired


def test_restart_sensitivity_fires_when_only_some_random_starts_lead_to_the_wrong_class():
    x0, signs, x, y = corner_case(dims=2)  # a start reaches the one bad corner in 1 of 4 orthants
    rows = run_probes(Corner(x0, signs), attack_target=Outward(x0), x=x, y=y, epsilon=EPS)
    assert rows["restart_sensitivity"].fired, rows["restart_sensitivity"].detail


def test_step_size_sensitivity_fires_when_the_base_steps_jump_over_the_wrong_class():
    clean = torch.full((1, 1, 2, 2), 0.5)
    target = Bowl(clean + 0.5 * EPS, radius=0.8 * EPS).eval()
    x, y = clean.repeat(32, 1, 1, 1), torch.zeros(32, dtype=torch.long)
    rows = run_probes(target, x=x, y=y, epsilon=EPS, pgd_steps=2)  # steps of 1.25 eps
    assert rows["step_size_sensitivity"].fired, rows["step_size_sensitivity"].detail


def test_random_search_draws_vertices_or_surface_points_from_each_examples_own_stream():
    search = RandomSearch(samples=300, block=100)
    x, seeds = torch.rand(3, 1, 2, 3), torch.tensor([5, 6, 7])
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        threat = ThreatModel(norm, eps)
        d = search.directions(threat, seeds, 0, 100, (1, 2, 3), torch.float32)
        norms = d.flatten(2).abs().amax(2) if norm == "linf" else d.flatten(2).norm(dim=2)
        assert torch.allclose(norms, torch.full_like(norms, eps))
        if norm == "linf":
            assert torch.allclose(d.abs(), torch.full_like(d, eps))  # every coordinate at +-eps: a vertex
        alone = search.directions(threat, seeds[1:2], 0, 100, (1, 2, 3), torch.float32)
        assert torch.equal(alone[0], d[1])  # a row's draws do not depend on its batch


def test_random_search_stops_at_the_first_block_with_a_break_and_counts_its_queries():
    class Threshold(nn.Module):
        def forward(self, x):
            s = x.flatten(1).sum(1) - 0.5 * x[0].numel()
            return torch.stack([-s, s], dim=1)  # class 1 once the pixels' sum passes half

    x = torch.full((2, 1, 1, 4), 0.5)
    x[1] = 0.3  # too far for eps 0.1: never broken
    y = torch.zeros(2, dtype=torch.long)
    result = RandomSearch(samples=1000, block=100).run(Threshold(), x, y, ThreatModel("linf", 0.1), seeds=torch.tensor([1, 2]))
    assert result.queries[0] == 100 and result.queries[1] == 1000
    assert Threshold()(result.x_adv[:1]).argmax(1).item() == 1
    assert (result.x_adv - x).abs().max() <= 0.1 + 1e-6


def test_finite_difference_estimate_matches_a_linear_models_gradient():
    model = Linear().eval()
    x, y = labelled_inputs(model, n=4)
    rows = run_probes(model, x=x, y=y, epsilon=0.05)
    cosine = float(rows["gradient_mismatch"].detail.split("median ")[1].split(",")[0])
    assert cosine > 0.7  # sqrt(K / (K + d)) = 0.94 for K = 128 pairs, d = 16
    assert checklist.FD_PAIRS == 128

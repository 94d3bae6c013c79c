"""SPSA (robench/attacks/spsa.py): estimator, optimisation, budget and determinism properties."""
import pytest
import torch
from torch import nn

from robench import rng
from robench.attacks.spsa import SPSA
from robench.errors import RobenchError
from robench.target import margin
from robench.threat import ThreatModel
from robench.verify import verify


class SmoothNet(nn.Module):
    """A small tanh network: smooth, so its true input gradient is well defined."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(16, 32, generator=generator) / 4, requires_grad=False)
        self.w2 = nn.Parameter(torch.randn(32, 3, generator=generator) / 4, requires_grad=False)

    def forward(self, x):
        return torch.tanh(x.flatten(1) @ self.w1) @ self.w2


def test_gradient_estimate_correlates_with_the_true_gradient():
    torch.manual_seed(0)
    net = SmoothNet().double()
    x = torch.rand(8, 1, 4, 4, dtype=torch.float64) * 0.5 + 0.25
    y = net(x).argmax(1)
    attack = SPSA(samples=2048, delta=1e-3)
    seeds = rng.example_seeds(0, "grad", torch.arange(8))
    estimate = attack._estimate_gradient(net, x.flatten(1), y, seeds, 0, (1, 4, 4), ThreatModel("linf", 0.1), 1, 4096, attack.delta)
    x_req = x.clone().requires_grad_(True)
    margin(net(x_req), y).sum().backward()
    true = x_req.grad.flatten(1)
    cosine = nn.functional.cosine_similarity(estimate, true, dim=1)
    # for D = 16 and 1024 pairs the expected cosine is about sqrt(P / (P + D)) ≈ 0.99
    assert cosine.min() > 0.9


def _needed_epsilon(model, x):
    w = model.w.flatten()
    return (x.flatten(1) @ w + model.b).abs() / w.abs().sum()


def test_spsa_breaks_a_linear_model_exactly_where_the_analytic_answer_says(linear_binary):
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(32, 1, 4, 4, generator=generator) * 0.2 + 0.4
    y = linear_binary(x).argmax(1)
    needed = _needed_epsilon(linear_binary, x)
    bounds = (-100.0, 100.0)  # the ball never touches the data bounds here
    seeds = rng.example_seeds(0, "linear", torch.arange(32))
    attack = SPSA(steps=60, samples=64, learning_rate=0.05)
    for factor, expected in ((1.25, True), (0.8, False)):
        broken = []
        for i in range(len(x)):  # each example has its own analytic epsilon
            threat = ThreatModel("linf", float(needed[i]) * factor, bounds)
            result = attack.run(linear_binary, x[i : i + 1], y[i : i + 1], threat, seeds=seeds[i : i + 1])
            broken.append(bool(verify(linear_binary, x[i : i + 1], result.x_adv, y[i : i + 1], threat).broken))
        assert all(b == expected for b in broken), (factor, broken)


def _toy_problem(n=12):
    generator = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.rand(n, 1, 4, 4, generator=generator)
    y = model(x).argmax(1)
    return model.eval(), x, y, rng.example_seeds(0, "toy", torch.arange(n))


def test_batched_and_unbatched_runs_agree():
    model, x, y, seeds = _toy_problem()
    threat = ThreatModel("linf", 0.05)
    attack = SPSA(steps=15, samples=32)
    batched = attack.run(model, x, y, threat, seeds=seeds)
    for i in range(len(x)):
        single = attack.run(model, x[i : i + 1], y[i : i + 1], threat, seeds=seeds[i : i + 1])
        assert torch.allclose(single.x_adv, batched.x_adv[i : i + 1], atol=1e-6)
        assert single.queries.item() == batched.queries[i].item()


@pytest.mark.parametrize("max_batch", [1, 7, 64, 100_000])
def test_chunk_size_does_not_change_results(max_batch):
    model, x, y, seeds = _toy_problem()
    threat = ThreatModel("l2", 0.5)
    reference = SPSA(steps=10, samples=300).run(model, x, y, threat, seeds=seeds)
    chunked = SPSA(steps=10, samples=300, max_batch=max_batch).run(model, x, y, threat, seeds=seeds)
    assert torch.allclose(chunked.x_adv, reference.x_adv, atol=1e-6)
    assert torch.equal(chunked.queries, reference.queries)


def test_early_stopped_examples_stop_spending_queries_and_counts_are_exact():
    model, x, y, seeds = _toy_problem(16)
    threat = ThreatModel("linf", 0.3)
    attack = SPSA(steps=20, samples=16)
    result = attack.run(model, x, y, threat, seeds=seeds)
    full_budget = attack.steps * attack.queries_per_step() + 1  # one last check of the final iterate
    broken = verify(model, x, result.x_adv, y, threat).broken
    assert broken.any() and (result.queries[broken] < full_budget).all()
    assert (result.queries[~broken] == full_budget).all()
    # each step costs exactly samples + 1 rows, so counts are multiples of 17 (plus the last check)
    assert ((result.queries[broken] % attack.queries_per_step()) == 1).all()
    no_stop = SPSA(steps=20, samples=16, early_stop=False).run(model, x, y, threat, seeds=seeds)
    assert (no_stop.queries == full_budget).all()


def test_proposals_stay_in_the_ball_and_bounds():
    model, x, y, seeds = _toy_problem()
    for norm, eps in (("linf", 0.1), ("l2", 0.4)):
        threat = ThreatModel(norm, eps)
        result = SPSA(steps=10, samples=32, learning_rate=0.5).run(model, x, y, threat, seeds=seeds)
        assert threat.contains(result.x_adv, x).all()


def test_counting_queries_on_the_model_matches_the_reported_count():
    from robench.target import QueryCounter

    model, x, y, seeds = _toy_problem()
    counter = QueryCounter(model)
    result = SPSA(steps=7, samples=10, max_batch=64).run(counter, x, y, ThreatModel("linf", 0.05), seeds=seeds)
    assert counter.rows == int(result.queries.sum())


@pytest.mark.parametrize("params", [{"samples": 3}, {"samples": 0}, {"steps": 0}, {"delta": 0.0}, {"max_batch": 0}])
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(RobenchError):
        SPSA(**params)


def test_repr_shows_every_hyperparameter():
    text = repr(SPSA(steps=3))
    for name in ("steps=3", "samples=128", "delta=0.01", "learning_rate=0.01", "early_stop=True"):
        assert name in text


@pytest.mark.parametrize("params", [{"delta": 0.1, "rel_delta": 1.0}, {"learning_rate": 0.1, "rel_learning_rate": 0.1},
                                    {"rel_delta": 0.0}, {"rel_learning_rate": -1.0}])
def test_absolute_and_relative_steps_are_exclusive_and_positive(params):
    with pytest.raises(RobenchError, match="delta|learning_rate"):
        SPSA(**params)


def test_relative_steps_follow_the_threat_model():
    """rel_* times epsilon under L-inf, times epsilon / sqrt(D) under L2; absolute values ignore it."""
    relative = SPSA(rel_delta=1.0, rel_learning_rate=0.1)
    assert relative.steps_for(ThreatModel("linf", 0.01), 40) == pytest.approx((0.01, 0.001))
    assert relative.steps_for(ThreatModel("linf", 0.3), 784) == pytest.approx((0.3, 0.03))
    assert relative.steps_for(ThreatModel("l2", 2.0), 64) == pytest.approx((0.25, 0.025))
    assert SPSA(delta=0.1).steps_for(ThreatModel("linf", 0.01), 40) == (0.1, 0.01)
    assert SPSA().steps_for(ThreatModel("l2", 5.0), 10) == (0.01, 0.01)  # the paper's defaults


def test_relative_delta_is_the_finite_difference_step_used():
    """The rows SPSA queries lie exactly rel_delta * epsilon from the iterate (before clipping)."""
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1)

    x = torch.full((1, 1, 8), 0.5)
    SPSA(steps=1, samples=4, rel_delta=0.5, early_stop=False).run(
        Spy(), x, torch.zeros(1, dtype=torch.long), ThreatModel("linf", 0.04), seeds=torch.zeros(1, dtype=torch.long))
    probes = torch.cat([rows.flatten(1) for rows in seen[1:2]])  # the first call checks the start; then the pairs
    assert torch.allclose((probes - 0.5).abs(), torch.full_like(probes, 0.02))

"""Native PGD (robench/attacks/pgd.py): ball, analytic boundary, strength vs foolbox, determinism, budget."""
import pytest
import torch
from torch import nn

from robench import rng
from robench.attacks.gradient import FOOLBOX_BY_NORM
from robench.attacks.pgd import PGD
from robench.errors import RobenchError
from robench.registry import attacks
from robench.target import QueryCounter
from robench.threat import ThreatModel
from robench.verify import verify
from robench_testing import assert_batch_independent, at_distance, conv_problem


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 3.0), ("linf", 0.01), ("l2", 0.05)])
def test_proposals_stay_in_the_ball_and_bounds(norm, eps):
    model, x, y, seeds = conv_problem("pgd", 12, pin_bounds=True)
    threat = ThreatModel(norm, eps)
    result = PGD(steps=10, rel_stepsize=0.5, restarts=2, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert result.x_adv.shape == x.shape
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all()


def test_breaks_a_linear_model_exactly_where_the_analytic_answer_says(linear_binary):
    x = at_distance(linear_binary, 0.1)
    y = linear_binary(x).argmax(1)
    seeds = rng.example_seeds(0, "pgd-linear", torch.arange(len(x)))
    for factor, expected in ((1.05, True), (0.95, False)):
        threat = ThreatModel("linf", 0.1 * factor)
        result = PGD(steps=20, rel_stepsize=0.25, max_batch=64).run(linear_binary, x, y, threat, seeds=seeds)
        assert (verify(linear_binary, x, result.x_adv, y, threat).broken == expected).all(), factor


def test_at_least_as_strong_as_foolbox_linf_pgd_with_the_same_budget(digits_mlp):
    model, x, y = digits_mlp
    threat = ThreatModel("linf", 0.08)
    seeds = rng.example_seeds(0, "pgd-vs-foolbox", torch.arange(len(x)))
    foolbox = attacks.get("foolbox.LinfPGD")(steps=20).run(model, x, y, threat, seeds=seeds)
    native = attacks.get("pgd")(steps=20).run(model, x, y, threat, seeds=seeds)
    broken_foolbox = verify(model, x, foolbox.x_adv, y, threat).broken
    broken_native = verify(model, x, native.x_adv, y, threat).broken
    assert 0.0 < broken_foolbox.float().mean() < 1.0  # the comparison means something
    assert broken_native.sum() >= broken_foolbox.sum()
    assert (native.queries <= 20).all() and (native.queries <= foolbox.queries).all()  # within the same budget


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.3)])
def test_an_example_gets_the_same_result_alone_in_a_batch_or_in_chunks_and_for_the_same_seeds(norm, eps):
    model, x, y, seeds = conv_problem("pgd", 12, pin_bounds=True)
    threat = ThreatModel(norm, eps)
    attack = PGD(steps=15, rel_stepsize=0.1, restarts=2, max_batch=64)
    batched = assert_batch_independent(attack, PGD(steps=15, rel_stepsize=0.1, restarts=2, max_batch=3),
                                       model, x, y, threat, seeds)
    assert not torch.equal(attack.run(model, x, y, threat, seeds=seeds + 1).x_adv, batched.x_adv)


class _Repeated(nn.Module):
    """Answers each row with ``queries_per_row`` draws, as an EOT wrapper does, and counts them."""

    queries_per_row = 3

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x):
        self.rows += len(x) * self.queries_per_row
        return self.model(x)


@pytest.mark.parametrize("restarts", [1, 3])
def test_query_counts_are_exact_and_broken_examples_stop_spending(restarts):
    model, x, y, seeds = conv_problem("pgd", 16, pin_bounds=True)
    threat = ThreatModel("linf", 0.02)
    attack = PGD(steps=12, rel_stepsize=0.1, restarts=restarts, max_batch=5)
    counter = QueryCounter(model)
    result = attack.run(counter, x, y, threat, seeds=seeds)
    assert counter.rows == int(result.queries.sum())  # one row per forward+backward, one per check
    check = attack.run(model, x, y, ThreatModel("linf", 0.02), seeds=seeds)
    broken = verify(model, x, check.x_adv, y, threat).broken
    full = restarts * attack.steps + (restarts - 1)
    assert broken.any() and (~broken).any()
    assert (result.queries[broken] < full).all()
    assert (result.queries[~broken] == full).all()
    repeated = _Repeated(model)
    tripled = attack.run(repeated, x, y, threat, seeds=seeds)
    assert repeated.rows == int(tripled.queries.sum())
    assert torch.equal(tripled.queries, 3 * result.queries)


def test_an_example_misclassified_at_the_start_costs_one_query():
    model, x, y, seeds = conv_problem("pgd", 12, pin_bounds=True)
    wrong = (y + 1) % 5
    result = PGD(steps=10, max_batch=64).run(model, x, wrong, ThreatModel("linf", 0.001), seeds=seeds)
    assert (result.queries == 1).all()
    assert (model(result.x_adv).argmax(1) != wrong).all()


def test_restarts_are_never_weaker_than_one_restart(digits_mlp):
    model, x, y = digits_mlp
    threat = ThreatModel("l2", 0.8)
    seeds = rng.example_seeds(0, "pgd-restarts", torch.arange(len(x)))
    one = verify(model, x, PGD(steps=5, restarts=1).run(model, x, y, threat, seeds=seeds).x_adv, y, threat).broken
    three = verify(model, x, PGD(steps=5, restarts=3).run(model, x, y, threat, seeds=seeds).x_adv, y, threat).broken
    assert not (one & ~three).any()  # every example one restart breaks, three restarts break too
    assert three.sum() > one.sum()


@pytest.mark.parametrize(
    "params", [{"steps": 0}, {"steps": 2.5}, {"restarts": 0}, {"max_batch": 0}, {"rel_stepsize": 0.0}, {"abs_stepsize": -1.0}]
)
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(RobenchError, match="pgd"):
        PGD(**params)


def test_registered_with_foolboxs_parameters_and_defaults():
    attack = attacks.get("pgd")()
    assert isinstance(attack, PGD) and not attack.gradient_free
    assert attack.schedule(ThreatModel("linf", 0.3)) == pytest.approx((40, 0.01))  # foolbox LinfPGD
    assert attack.schedule(ThreatModel("l2", 2.0)) == pytest.approx((50, 0.05))  # foolbox L2PGD
    assert PGD(steps=7, rel_stepsize=0.1, abs_stepsize=0.02).schedule(ThreatModel("linf", 0.3)) == (7, 0.02)
    assert "restarts=1" in repr(attack)
    assert "pgd" not in FOOLBOX_BY_NORM  # foolbox's PGD stays reachable by its class name
    assert attacks.get("foolbox.LinfPGD")().name == "foolbox.LinfPGD"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_inputs_device():
    model, x, y, seeds = conv_problem("pgd", 12, pin_bounds=True)
    device = torch.device("cuda")
    result = PGD(steps=5, restarts=2).run(model.to(device), x.to(device), y.to(device), ThreatModel("l2", 0.3), seeds=seeds.to(device))
    assert result.x_adv.device.type == "cuda" and result.queries.device.type == "cuda"

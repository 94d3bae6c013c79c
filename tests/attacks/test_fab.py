"""FAB-T (robench/attacks/fab.py): the box-constrained projection, strength, ball, budget, determinism."""
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from robench import rng
from robench.attacks.fab import FABT, project_hyperplane_box
from robench.errors import RobenchError
from robench.target import QueryCounter
from robench.threat import ThreatModel
from robench.verify import verify
from robench_testing import assert_batch_independent, at_distance, conv_problem


def _projection_cases(n=40, d=4, lo=0.0, hi=1.0):
    """Random points in the box (some on its faces), normals (some with zero coordinates) and offsets."""
    generator = torch.Generator().manual_seed(11)
    x = lo + (hi - lo) * torch.rand(n, d, generator=generator, dtype=torch.float64)
    x[::5, 0] = lo
    x[1::5, 1] = hi
    w = torch.randn(n, d, generator=generator, dtype=torch.float64)
    w[::7, 2] = 0.0
    c = torch.randn(n, generator=generator, dtype=torch.float64) * 0.6 * (hi - lo)
    c[3] = 0.0
    return x, w, c


def _linf_optimum(x, w, c, lo, hi):
    """min t s.t. |delta_i| <= t, <w, delta> = c, lo <= x + delta <= hi, by linear programming."""
    d = len(x)
    cost = np.r_[np.zeros(d), 1.0]
    a_ub = np.vstack([np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]])
    bounds = [(lo - x[i], hi - x[i]) for i in range(d)] + [(0, None)]
    result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None], b_eq=[c], bounds=bounds)
    return result.x[-1] if result.status == 0 else None


def _l2_optimum(x, w, c, lo, hi):
    """The QP min ||delta||_2 s.t. <w, delta> = c, box, by brute force over active sets: each
    coordinate at its lower bound, at its upper bound, or free (then delta_free = lambda w_free)."""
    best = None
    for pattern in itertools.product((0, 1, 2), repeat=len(x)):
        delta = np.zeros(len(x))
        free = [i for i, p in enumerate(pattern) if p == 2]
        for i, p in enumerate(pattern):
            if p < 2:
                delta[i] = (lo if p == 0 else hi) - x[i]
        rest = c - w @ delta
        w_free = w[free]
        if free and w_free @ w_free > 0:
            delta[free] = rest / (w_free @ w_free) * w_free
        elif abs(rest) > 1e-12:
            continue
        if (x + delta < lo - 1e-12).any() or (x + delta > hi + 1e-12).any():
            continue
        norm = np.linalg.norm(delta)
        best = norm if best is None else min(best, norm)
    return best


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-2.0, 3.0)])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_minimal_norm_point_of_hyperplane_and_box(norm, bounds):
    lo, hi = bounds
    x, w, c = _projection_cases(lo=lo, hi=hi)
    delta = project_hyperplane_box(x, w, c, lo, hi, norm)
    feasible = 0
    for i in range(len(x)):
        xi, wi, ci = x[i].numpy(), w[i].numpy(), c[i].item()
        optimum = (_linf_optimum if norm == "linf" else _l2_optimum)(xi, wi, ci, lo, hi)
        point = x[i] + delta[i]
        assert (point >= lo - 1e-9).all() and (point <= hi + 1e-9).all(), "the projection must lie in the box"
        if optimum is None:
            continue  # the hyperplane misses the box: see the next test
        feasible += 1
        assert (w[i] @ delta[i]).item() == pytest.approx(ci, abs=1e-9), "the projection must lie on the hyperplane"
        size = delta[i].abs().max() if norm == "linf" else delta[i].norm()
        assert size.item() == pytest.approx(optimum, abs=1e-9), i
    assert feasible >= 25  # most cases are feasible, so the comparison means something


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_moves_to_the_nearest_corner_when_the_hyperplane_misses_the_box(norm):
    x = torch.tensor([[0.2, 0.7, 0.5, 0.5]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0, 0.5]], dtype=torch.float64)
    reach = 0.8 * 1.0 + 0.7 * 2.0 + 0.5 * 0.5  # the most <w, delta> can reach inside [0, 1]^4
    delta = project_hyperplane_box(x, w, torch.tensor([reach + 1.0], dtype=torch.float64), 0.0, 1.0, norm)
    assert torch.allclose(delta, torch.tensor([[0.8, -0.7, 0.0, 0.5]], dtype=torch.float64))
    delta = project_hyperplane_box(x, w, torch.tensor([-10.0], dtype=torch.float64), 0.0, 1.0, norm)
    assert torch.allclose(delta, torch.tensor([[-0.2, 0.3, 0.0, -0.5]], dtype=torch.float64))


def test_projection_without_box_constraints_is_the_textbook_one():
    """Far from the box faces: L2 moves along w by c / ||w||^2, L-inf along sign(w) by |c| / ||w||_1."""
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(8, 30, generator=generator) * 0.2 + 0.4
    w = torch.randn(8, 30, generator=generator)
    c = torch.randn(8, generator=generator) * 0.05
    l2 = project_hyperplane_box(x, w, c, 0.0, 1.0, "l2")
    assert torch.allclose(l2, (c / (w * w).sum(1)).unsqueeze(1) * w, atol=1e-6)
    linf = project_hyperplane_box(x, w, c, 0.0, 1.0, "linf")
    assert torch.allclose(linf, (c / w.abs().sum(1)).unsqueeze(1) * w.sign(), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_nearly_minimal_adversarials_on_a_linear_model(linear_binary, norm):
    distance = 0.1
    x = at_distance(linear_binary, distance, norm)
    y = linear_binary(x).argmax(1)
    seeds = rng.example_seeds(0, "fab-linear", torch.arange(len(x)))
    for factor, expected in ((1.05, True), (2.0, True), (0.95, False)):
        threat = ThreatModel(norm, distance * factor, (-100.0, 100.0))
        result = FABT(steps=20, early_stop=False, max_batch=64).run(linear_binary, x, y, threat, seeds=seeds)
        check = verify(linear_binary, x, result.x_adv, y, threat)
        assert (check.broken == expected).all(), factor
        if expected:  # the smallest adversarial found, even when the ball is twice as large
            assert (check.distance >= distance * (1 - 1e-4)).all() and (check.distance <= distance * 1.02).all(), factor
        else:
            assert torch.equal(result.x_adv, x)  # nothing within eps: the clean input is proposed


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 3.0), ("linf", 0.01), ("l2", 0.05)])
def test_proposals_stay_in_the_ball_and_bounds(norm, eps):
    model, x, y, seeds = conv_problem("fab", pin_bounds=True)
    threat = ThreatModel(norm, eps)
    result = FABT(steps=10, restarts=2, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all()
    broken = verify(model, x, result.x_adv, y, threat).broken
    assert torch.equal(result.x_adv[~broken], x[~broken])  # unbroken examples propose the clean input


def test_fab_breaks_a_conv_net_at_least_as_often_as_apgd():
    from robench.attacks.apgd import APGDCE

    model, x, y, seeds = conv_problem("fab", 20)
    threat = ThreatModel("linf", 0.02)
    fab = FABT(steps=20, max_batch=64).run(model, x, y, threat, seeds=seeds)
    apgd = APGDCE(steps=40, max_batch=64).run(model, x, y, threat, seeds=seeds)
    broken_fab = verify(model, x, fab.x_adv, y, threat).broken
    broken_apgd = verify(model, x, apgd.x_adv, y, threat).broken
    assert 0 < broken_apgd.sum() < len(x)  # the comparison means something
    assert broken_fab.sum() >= broken_apgd.sum()


class _ThreeClasses(nn.Module):
    """logits [1, 0.5 + (x_0 - 0.5), -10 (x_1 - 0.5)] on 1 x 4 x 4 inputs: at x = 0.5 the
    second most likely class (1) is 0.5 away in L-inf, the third (2) only 0.1 away."""

    def forward(self, x):
        flat = x.flatten(1)
        one = torch.ones_like(flat[:, 0])
        return torch.stack([one, 0.5 + (flat[:, 0] - 0.5), -10.0 * (flat[:, 1] - 0.5)], dim=1)


def test_targets_are_the_next_most_likely_classes_and_later_ones_only_see_unbroken_examples():
    model = _ThreeClasses()
    x = torch.full((3, 1, 4, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    seeds = rng.example_seeds(0, "fab-targets", torch.arange(3))
    threat = ThreatModel("linf", 0.2)
    steps = 10
    first_only = FABT(steps=steps, n_target_classes=1).run(model, x, y, threat, seeds=seeds)
    assert not verify(model, x, first_only.x_adv, y, threat).broken.any()  # class 1 is out of reach
    both = FABT(steps=steps, n_target_classes=2, early_stop=False).run(model, x, y, threat, seeds=seeds)
    check = verify(model, x, both.x_adv, y, threat)
    assert check.broken.all() and (check.distance <= 0.1 * 1.02).all()  # class 2 is 0.1 away
    assert (model(both.x_adv).argmax(1) == 2).all()
    # 9 targets asked for, 2 possible: the same attack, and the same queries
    nine = FABT(steps=steps, early_stop=False).run(model, x, y, threat, seeds=seeds)
    assert torch.equal(nine.x_adv, both.x_adv) and torch.equal(nine.queries, both.queries)


@pytest.mark.parametrize("restarts", [1, 3])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_query_counts_are_exact_on_a_linear_model(linear_binary, norm, restarts):
    """On a linear model every FAB step overshoots the (exact) boundary by eta and every backward
    step returns to the correct side, so a run costs: its start, steps checks, and steps - 1
    passes after the backward steps; the clean pass is the first run's start."""
    x = at_distance(linear_binary, 0.1, norm)
    y = linear_binary(x).argmax(1)
    seeds = rng.example_seeds(0, "fab-queries", torch.arange(len(x)))
    steps = 7
    for factor, runs in ((1.5, 1), (0.5, restarts)):  # broken in the first run / never broken
        threat = ThreatModel(norm, 0.1 * factor, (-100.0, 100.0))
        counter = QueryCounter(linear_binary)
        result = FABT(steps=steps, restarts=restarts, early_stop=False, max_batch=4).run(counter, x, y, threat, seeds=seeds)
        assert (result.queries == runs * 2 * steps).all(), factor
        assert counter.rows == int(result.queries.sum())


def test_query_counts_match_the_rows_the_target_answered():
    model, x, y, seeds = conv_problem("fab", 12)
    threat = ThreatModel("linf", 0.01)
    counter = QueryCounter(model)
    steps, targets = 8, 4  # five classes: four targets
    result = FABT(steps=steps, early_stop=False, max_batch=5).run(counter, x, y, threat, seeds=seeds)
    assert counter.rows == int(result.queries.sum())
    broken = verify(model, x, result.x_adv, y, threat).broken
    assert broken.any() and (~broken).any()
    assert (result.queries[~broken] >= targets * (1 + steps)).all()  # every target ran on them
    assert (result.queries <= targets * 2 * steps).all()
    assert (result.queries[broken] < result.queries[~broken].min()).all()  # broken examples stop early


class _Costly(nn.Module):
    """A target whose every row costs three rows (as an EOT wrapper reports)."""

    queries_per_row = 3

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def test_queries_are_counted_in_the_targets_rows(linear_binary):
    x = at_distance(linear_binary, 0.1)
    y = linear_binary(x).argmax(1)
    seeds = rng.example_seeds(0, "fab-cost", torch.arange(len(x)))
    threat = ThreatModel("linf", 0.15, (-100.0, 100.0))
    plain = FABT(steps=5, early_stop=False).run(linear_binary, x, y, threat, seeds=seeds)
    costly = FABT(steps=5, early_stop=False).run(_Costly(linear_binary), x, y, threat, seeds=seeds)
    assert torch.equal(costly.queries, 3 * plain.queries)


def test_misclassified_inputs_propose_themselves_for_one_query():
    model, x, y, seeds = conv_problem("fab")
    wrong = (y + 1) % 5
    result = FABT(steps=5).run(model, x, wrong, ThreatModel("linf", 0.01), seeds=seeds)
    assert torch.equal(result.x_adv, x) and (result.queries == 1).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.02), ("l2", 0.2)])
def test_an_example_gets_the_same_result_alone_in_a_batch_or_in_chunks(norm, eps):
    model, x, y, seeds = conv_problem("fab")
    threat = ThreatModel(norm, eps)
    attack = FABT(steps=12, restarts=2, n_target_classes=2, max_batch=64)
    batched = assert_batch_independent(attack, FABT(steps=12, restarts=2, n_target_classes=2, max_batch=3),
                                       model, x, y, threat, seeds)
    # the random starts of later restarts come from the seeds alone
    other = attack.run(model, x, y, threat, seeds=seeds + 1)
    assert not torch.equal(other.queries, batched.queries)


@pytest.mark.parametrize("params", [
    {"steps": 0}, {"n_target_classes": 0}, {"restarts": 0}, {"alpha_max": -0.1}, {"alpha_max": 1.5},
    {"eta": 0.0}, {"beta": 0.0}, {"beta": 1.5}, {"max_batch": 0}, {"steps": 2.5},
])
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(RobenchError):
        FABT(**params)


def test_registered_with_autoattacks_defaults():
    from robench.registry import attacks

    attack = attacks.get("fab-t")()
    assert isinstance(attack, FABT) and not attack.gradient_free
    assert (attack.steps, attack.n_target_classes, attack.restarts) == (100, 9, 1)
    assert (attack.alpha_max, attack.eta, attack.beta, attack.max_batch) == (0.1, 1.05, 0.9, None)
    assert "steps=100" in repr(attack) and "n_target_classes=9" in repr(attack)
    with pytest.raises(TypeError):
        FABT(100)  # keyword-only


def test_early_stop_breaks_the_same_examples_for_fewer_passes():
    """Stopping an example at its first adversarial within epsilon changes no verdict, only cost."""
    model, x, y, seeds = conv_problem("fab-early", 16)
    for eps in (0.02, 0.05):
        threat = ThreatModel("linf", eps)
        full = FABT(steps=15, n_target_classes=3, early_stop=False).run(model, x, y, threat, seeds=seeds)
        early = FABT(steps=15, n_target_classes=3).run(model, x, y, threat, seeds=seeds)
        assert torch.equal(verify(model, x, full.x_adv, y, threat).broken, verify(model, x, early.x_adv, y, threat).broken)
        assert (early.queries <= full.queries).all()
    assert (early.queries < full.queries).any(), "some broken example must have stopped early"

"""Square Attack (robench/attacks/square.py): analytic breaks, ball, budget, determinism."""
import pytest
import torch
from torch import nn

from robench import rng
from robench.attacks.square import Square, meta_pseudo_gaussian, p_schedule
from robench.errors import RobenchError
from robench.target import QueryCounter
from robench.threat import ThreatModel
from robench.verify import verify
from robench_testing import at_distance, conv_problem


# L-inf: random vertices reach the optimal corner; L2: the paper's window patterns reach about 0.7
# of the optimal linear decrease on a 4x4 input (measured), so the L2 break is asked at 2x.
@pytest.mark.parametrize("norm, enough", [("linf", 1.25), ("l2", 2.0)])
def test_square_breaks_a_linear_model_exactly_where_the_analytic_answer_says(linear_binary, norm, enough):
    x = at_distance(linear_binary, 0.1, norm, n=12)
    y = linear_binary(x).argmax(1)
    seeds = rng.example_seeds(0, "square-linear", torch.arange(len(x)))
    bounds = (-100.0, 100.0)  # the ball never touches the data bounds here
    for factor, expected in ((enough, True), (0.8, False)):
        threat = ThreatModel(norm, 0.1 * factor, bounds)
        result = Square(queries=300, max_batch=64).run(linear_binary, x, y, threat, seeds=seeds)
        broken = verify(linear_binary, x, result.x_adv, y, threat).broken
        assert (broken == expected).all(), (norm, factor, broken)


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 2.0), ("linf", 0.02), ("l2", 0.1)])
def test_proposals_stay_in_the_ball_and_bounds(norm, eps):
    model, x, y, seeds = conv_problem("square", side=8)
    threat = ThreatModel(norm, eps)
    result = Square(queries=60, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_query_counts_are_exact_and_broken_examples_stop_spending(norm, eps):
    model, x, y, seeds = conv_problem("square", 16, side=8)
    threat = ThreatModel(norm, eps)
    counter = QueryCounter(model)
    result = Square(queries=80, max_batch=5).run(counter, x, y, threat, seeds=seeds)
    assert counter.rows == int(result.queries.sum())
    broken = verify(model, x, result.x_adv, y, threat).broken
    assert broken.any() and (result.queries[broken] < 80).all()
    assert (result.queries[~broken] == 80).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_an_example_gets_the_same_result_alone_in_a_batch_or_in_chunks(norm, eps):
    model, x, y, seeds = conv_problem("square", side=8)
    threat = ThreatModel(norm, eps)
    batched = Square(queries=50, max_batch=64).run(model, x, y, threat, seeds=seeds)
    chunked = Square(queries=50, max_batch=3).run(model, x, y, threat, seeds=seeds)
    assert torch.allclose(chunked.x_adv, batched.x_adv, atol=1e-6)
    for i in (0, 4, 9):
        single = Square(queries=50, max_batch=64).run(model, x[i : i + 1], y[i : i + 1], threat, seeds=seeds[i : i + 1])
        assert torch.allclose(single.x_adv, batched.x_adv[i : i + 1], atol=1e-6)
        assert single.queries.item() == batched.queries[i].item()


def test_results_are_determined_by_the_seeds():
    model, x, y, seeds = conv_problem("square", side=8)
    threat = ThreatModel("linf", 0.05)
    first = Square(queries=30, max_batch=64).run(model, x, y, threat, seeds=seeds)
    again = Square(queries=30, max_batch=64).run(model, x, y, threat, seeds=seeds)
    other = Square(queries=30, max_batch=64).run(model, x, y, threat, seeds=seeds + 1)
    assert torch.equal(first.x_adv, again.x_adv)
    assert not torch.equal(first.x_adv, other.x_adv)


def test_p_schedule_halves_at_the_papers_fractions_of_the_budget():
    values = [p_schedule(0.05, i, 10000) for i in (0, 10, 11, 50, 51, 500, 9999)]
    assert values == [0.05, 0.05, 0.025, 0.025, 0.0125, 0.05 / 8, 0.05 / 512]
    assert p_schedule(0.1, 5, 100) == p_schedule(0.1, 500, 10000)  # rescaled to the budget


def test_l2_pattern_has_unit_norm_and_opposite_halves():
    for side in (1, 3, 5, 8):
        pattern = meta_pseudo_gaussian(side)
        assert torch.isclose(pattern.norm(), torch.tensor(1.0, dtype=torch.float64))
    pattern = meta_pseudo_gaussian(5)
    assert (pattern[:2] > 0).all() and (pattern[2:] < 0).all()


def test_default_p_init_follows_the_norm_and_repr_shows_parameters():
    assert "queries=10000" in repr(Square())
    assert Square(p_init=0.2).p_init == 0.2


@pytest.mark.parametrize("params", [{"queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"max_batch": 0}])
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(RobenchError):
        Square(**params)


def test_non_image_inputs_are_a_user_error():
    model = nn.Linear(16, 3)
    x = torch.rand(4, 16)
    with pytest.raises(RobenchError, match="square"):
        Square(queries=5).run(model, x, model(x).argmax(1), ThreatModel("linf", 0.1), seeds=torch.arange(4))

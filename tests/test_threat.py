import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robench.errors import RobenchError
from robench import rng
from robench.threat import BALLS, ThreatModel

shapes = st.sampled_from([(3, 1, 4, 4), (2, 3, 5, 5), (5, 10)])


@settings(max_examples=60, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), epsilon=st.floats(1e-3, 1.0), shape=shapes, seed=st.integers(0, 10_000),
       scale=st.floats(0.0, 5.0))
def test_projection_lands_in_ball_and_bounds(norm, epsilon, shape, seed, scale):
    generator = torch.Generator().manual_seed(seed)
    threat = ThreatModel(norm, epsilon)
    x = torch.rand(shape, generator=generator)
    proposal = x + scale * torch.randn(shape, generator=generator)
    projected = threat.project(proposal, x)
    assert threat.contains(projected, x, tolerance=1e-6).all()
    assert (threat.distance(projected, x) <= epsilon + 1e-6).all()


@settings(max_examples=40, deadline=None)
@given(norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 10_000))
def test_projection_is_idempotent_and_keeps_points_inside(norm, seed):
    generator = torch.Generator().manual_seed(seed)
    threat = ThreatModel(norm, 0.3)
    x = torch.rand(4, 1, 3, 3, generator=generator)
    inside = threat.project(x + 0.05 * torch.randn(x.shape, generator=generator), x)
    assert torch.allclose(threat.project(inside, x), inside, atol=1e-6)


def test_linf_projection_is_the_nearest_point():
    threat = ThreatModel("linf", 0.1)
    x = torch.full((1, 4), 0.5)
    proposal = torch.tensor([[0.9, 0.55, 0.2, -3.0]])
    assert torch.allclose(threat.project(proposal, x), torch.tensor([[0.6, 0.55, 0.4, 0.4]]))


def test_l2_projection_scales_onto_the_sphere():
    threat = ThreatModel("l2", 1.0, bounds=(-10.0, 10.0))
    x = torch.zeros(1, 2)
    projected = threat.project(torch.tensor([[3.0, 4.0]]), x)
    assert torch.allclose(projected, torch.tensor([[0.6, 0.8]]))


def test_contains_rejects_outside_ball_bounds_and_nan():
    threat = ThreatModel("linf", 0.1)
    x = torch.full((4, 2), 0.5)
    x_adv = torch.tensor([[0.6, 0.5], [0.61, 0.5], [0.5, float("nan")], [0.5, 0.5]])
    x_adv_out = x_adv.clone()
    x_adv_out[3] = torch.tensor([0.55, 0.45])
    assert threat.contains(x_adv_out, x).tolist() == [True, False, False, True]
    edge = ThreatModel("linf", 0.5)
    assert not edge.contains(torch.tensor([[1.05]]), torch.tensor([[0.9]])).item()


@pytest.mark.parametrize(
    "norm, epsilon, message",
    [("linf", 0.0, "epsilon must be"), ("linf", -0.1, "epsilon must be"), ("linf", math.nan, "epsilon must be"),
     ("linf", 1.5, "larger than the data range"), ("l3", 0.1, "unknown norm")],
)
def test_bad_threat_models_are_user_errors(norm, epsilon, message):
    with pytest.raises(RobenchError, match=message):
        ThreatModel(norm, epsilon)


def test_l2_epsilon_beyond_the_diameter_is_rejected():
    ThreatModel("l2", 7.9).check_input_size(64)
    with pytest.raises(RobenchError, match="diameter"):
        ThreatModel("l2", 8.1).check_input_size(64)


@pytest.mark.parametrize("name", sorted(BALLS))
def test_every_ball_keeps_its_contract(name):
    """What attacks rely on, for each registered norm: projection lands in the ball, the steepest
    direction has unit norm and ascends, random points lie in (uniform) or on (surface, extreme
    points) the ball, and the dual norm bounds <w, delta> over the ball."""
    ball = BALLS[name]
    generator = torch.Generator().manual_seed(0)
    delta = 3 * torch.randn(16, 2, 3, 3, generator=generator)
    eps = 0.4
    assert (ball.norm(ball.project(delta, eps).flatten(1)) <= eps + 1e-6).all()
    grad = torch.randn(16, 2, 3, 3, generator=generator)
    direction = ball.steepest_direction(grad)
    assert torch.allclose(ball.norm(direction.flatten(1)), torch.ones(16), atol=1e-5)
    assert torch.allclose((grad * direction).flatten(1).sum(1), ball.dual_norm(grad.flatten(1)), rtol=1e-4)
    seeds = rng.example_seeds(0, name, torch.arange(16))
    inside = ball.uniform(rng.stream(seeds), (2, 3, 3), eps, torch.float32)
    assert inside.shape == (16, 2, 3, 3) and (ball.norm(inside.flatten(1)) <= eps + 1e-6).all()
    on = ball.surface(rng.stream(seeds), (2, 3, 3), eps, torch.float32)
    assert torch.allclose(ball.norm(on.flatten(1)), torch.full((16,), eps), atol=1e-5)
    extreme = ball.extreme_points(rng.stream(seeds), 5, (2, 3, 3), eps, torch.float32)
    assert extreme.shape == (16, 5, 2, 3, 3)
    assert torch.allclose(ball.norm(extreme.flatten(2).flatten(0, 1)), torch.full((80,), eps), atol=1e-5)
    assert ball.covering_radius(1.0, 18) >= ball.norm(torch.ones(1, 18)).item() - 1e-6  # covers the unit box
    assert ThreatModel(name, 0.1).ball is ball


def test_threat_model_delegates_to_its_ball():
    threat = ThreatModel("l2", 0.5, bounds=(-10.0, 10.0))  # bounds far away: no clipping
    x = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    start = threat.random_start(x, stream=rng.stream(rng.example_seeds(0, "d", torch.arange(4))), surface=True)
    assert torch.allclose(threat.distance(start, x), torch.full((4,), 0.5), atol=1e-5)
    assert threat.step_scale(9) == pytest.approx(0.5 / 3) and ThreatModel("linf", 0.1).step_scale(9) == 0.1

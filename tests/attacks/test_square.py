"""Square Attack (robench/attacks/square.py): analytic breaks, ball, budget, determinism."""
import pytest
import torch
from torch import nn

from robench import rng
from robench.attacks.square import Square, _window_shape, meta_pseudo_gaussian, meta_pseudo_gaussian_1d, p_schedule
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


@pytest.mark.parametrize("shape", [(4, 16), (4, 1, 1), (4, 1, 1, 8), (4, 1, 2, 2, 2)], ids=["tabular", "L=1", "H=1", "5-d"])
def test_inputs_that_are_neither_images_nor_sequences_are_a_user_error(shape):
    model = nn.Flatten()  # never called: the input is refused first
    x = torch.rand(*shape)
    with pytest.raises(RobenchError, match="square: needs images .* or sequences .*; use spsa") as error:
        Square(queries=5).run(model, x, torch.zeros(4, dtype=torch.long), ThreatModel("linf", 0.1), seeds=torch.arange(4))
    assert "\n" not in str(error.value)


# -- sequences (N x C x L): robench's 1-D form -----------------------------------------------


def sequence_problem(key: str, n: int = 10, channels: int = 2, length: int = 40):
    """A small random 1-D conv net on N x C x L, inputs it classifies as ``y`` (the first two at
    the data bounds 0 and 1, where clipping matters), and per-example seeds under ``key``."""
    generator = torch.Generator().manual_seed(11)
    model = nn.Sequential(nn.Conv1d(channels, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * length, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    x = torch.rand(n, channels, length, generator=generator)
    x[0], x[1] = 0.0, 1.0
    return model.eval(), x, model(x).argmax(1), rng.example_seeds(0, key, torch.arange(n))


def fragile_sequences(norm: str, distance: float, n: int = 12, length: int = 40):
    """Two classes from N x 1 x L by the sign of w . (x - 0.5), |w_i| = 10 (a large weight), and
    inputs near 0.5 at exactly ``distance`` (in ``norm``) from the boundary, labelled correctly."""
    generator = torch.Generator().manual_seed(5)
    w = 10 * (torch.randint(0, 2, (length,), generator=generator) * 2 - 1).float()
    model = nn.Sequential(nn.Flatten(), nn.Linear(length, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w, -w]) / 2)
        model[1].bias.copy_(torch.stack([-w.sum(), w.sum()]) / 4)
    x = 0.5 + (torch.rand(n, length, generator=generator) - 0.5) * 0.02
    score = (x - 0.5) @ w
    dual = w.abs().sum() if norm == "linf" else w.norm()
    x = x + (torch.where(score >= 0, 1.0, -1.0) * distance * dual - score).unsqueeze(1) / w.dot(w) * w
    y = ((x - 0.5) @ w < 0).long()  # class 0 where w . (x - 0.5) > 0
    return model.eval(), x.view(n, 1, length), y


def test_sequence_windows_are_intervals_of_p_times_L_steps_and_images_keep_their_squares():
    assert _window_shape(0.05, 1, 40, l2=False) == (1, 2)  # an interval of round(p * L) steps
    assert _window_shape(0.05 / 512, 1, 40, l2=False) == (1, 1)  # at least one step
    assert _window_shape(1.0, 1, 40, l2=False) == (1, 39)  # at most L - 1
    assert _window_shape(0.1, 1, 40, l2=True) == (1, 5)  # L2: at least 3 and odd, as for images
    assert _window_shape(0.05, 28, 28, l2=False) == (6, 6) and _window_shape(0.1, 28, 28, l2=True) == (9, 9)


def test_1d_l2_pattern_has_unit_norm_and_opposite_halves():
    for length in (1, 2, 3, 5, 8, 40):
        pattern = meta_pseudo_gaussian_1d(length)
        assert pattern.shape == (length,)
        assert torch.isclose(pattern.norm(), torch.tensor(1.0, dtype=torch.float64))
    pattern = meta_pseudo_gaussian_1d(9)
    assert (pattern[:4] > 0).all() and (pattern[4:] < 0).all()
    first, second = pattern[:4], -pattern[4:]
    assert first.argmax() == 2 and second.argmax() == 2  # each half a bump peaking at its centre
    assert torch.allclose(first.norm(), second.norm(), rtol=0.3)  # halves of comparable mass


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 2.0), ("linf", 0.02), ("l2", 0.1)])
def test_sequence_proposals_stay_in_the_ball_and_bounds(norm, eps):
    model, x, y, seeds = sequence_problem("square-seq")
    threat = ThreatModel(norm, eps)
    result = Square(queries=60, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all()
    assert not torch.equal(result.x_adv, x)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_sequence_query_counts_are_exact_and_never_exceed_the_budget(norm, eps):
    model, x, y, seeds = sequence_problem("square-seq", 16)
    threat = ThreatModel(norm, eps)
    attack = Square(queries=80, max_batch=5)
    counter = QueryCounter(model)
    result = attack.run(counter, x, y, threat, seeds=seeds)
    assert counter.rows == int(result.queries.sum())
    assert (result.queries >= 1).all() and (result.queries <= attack.budget(threat)).all()
    broken = verify(model, x, result.x_adv, y, threat).broken
    assert broken.any() and (result.queries[broken] < 80).all()
    assert (result.queries[~broken] == 80).all()


# as for images: L-inf reaches the optimal vertex, L2's interval patterns a good part of the
# optimal linear decrease, so the L2 break is asked at 2x the distance to the boundary
@pytest.mark.parametrize("norm, enough", [("linf", 1.25), ("l2", 2.0)])
def test_square_breaks_a_fragile_sequence_model_exactly_where_the_analytic_answer_says(norm, enough):
    model, x, y = fragile_sequences(norm, 0.02)
    assert (model(x).argmax(1) == y).all(), "the model must be correct on clean inputs"
    seeds = rng.example_seeds(0, "square-fragile", torch.arange(len(x)))
    for factor, expected in ((enough, True), (0.8, False)):
        threat = ThreatModel(norm, 0.02 * factor)
        result = Square(queries=300, max_batch=64).run(model, x, y, threat, seeds=seeds)
        assert threat.contains(result.x_adv, x, tolerance=1e-6).all()
        broken = verify(model, x, result.x_adv, y, threat).broken
        assert (broken == expected).all(), (norm, factor, broken)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_a_sequence_example_gets_the_same_result_alone_in_a_batch_or_in_chunks(norm, eps):
    model, x, y, seeds = sequence_problem("square-seq")
    threat = ThreatModel(norm, eps)
    batched = Square(queries=50, max_batch=64).run(model, x, y, threat, seeds=seeds)
    chunked = Square(queries=50, max_batch=3).run(model, x, y, threat, seeds=seeds)
    assert torch.allclose(chunked.x_adv, batched.x_adv, atol=1e-6)
    assert torch.equal(chunked.queries, batched.queries)
    for i in (0, 4, 9):
        single = Square(queries=50, max_batch=64).run(model, x[i : i + 1], y[i : i + 1], threat, seeds=seeds[i : i + 1])
        assert torch.allclose(single.x_adv, batched.x_adv[i : i + 1], atol=1e-6)
        assert single.queries.item() == batched.queries[i].item()
    again = Square(queries=50, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert torch.equal(again.x_adv, batched.x_adv)


def test_sequence_starts_are_per_step_vertices_and_a_row_of_bumps():
    seeds = rng.example_seeds(0, "square-start", torch.arange(6))
    x = torch.full((6, 2, 1, 40), 0.5)  # a sequence as run() sees it: an image of height 1
    linf = Square._start(seeds, x, 0.1, "linf")
    assert torch.allclose(linf.abs(), torch.full_like(linf, 0.1))
    assert (linf[:, :, 0, 1:] != linf[:, :, 0, :-1]).any()  # signs change along time, not constant stripes
    l2 = Square._start(seeds, x, 0.5, "l2")
    assert torch.allclose(l2.flatten(1).norm(dim=1), torch.full((6,), 0.5))
    bumps = l2.view(6, 2, 5, 8) / l2.view(6, 2, 5, 8)[..., :1].sign()  # five bumps of width 40 // 5 = 8
    assert torch.allclose(bumps, bumps[:1, :1, :1].expand_as(bumps), atol=1e-6)


def test_p_schedule_matches_the_reference_with_and_without_rescaling():
    """The reference's p_selection: halvings at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000,
    8000 of a 10,000-query schedule; AutoAttack's standard run (5,000 queries, resc_schedule=False)
    cuts it at 5,000 instead of stretching it."""
    from robench.attacks.square import p_schedule

    assert p_schedule(0.8, 10, 5000, rescale=False) == 0.8 and p_schedule(0.8, 11, 5000, rescale=False) == 0.4
    assert p_schedule(0.8, 4999, 5000, rescale=False) == 0.8 / 128
    assert p_schedule(0.8, 9000, 20000, rescale=False) == 0.8 / 512
    assert p_schedule(0.8, 4999, 5000) == 0.8 / 512  # stretched: 4999 / 5000 of the way is 9998 > 8000
    assert p_schedule(0.8, 5, 5000) == 0.8 and p_schedule(0.8, 6, 5000) == p_schedule(0.8, 12, 10000) == 0.4

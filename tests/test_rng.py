import pytest
import torch

from robench import rng


def test_streams_do_not_depend_on_batch_composition_or_offset():
    seeds = rng.example_seeds(7, "spsa", torch.arange(10))
    whole = rng.rademacher(seeds, 3, (6, 5))
    assert torch.equal(rng.rademacher(seeds[4:6], 3, (6, 5)), whole[4:6])
    # drawing pairs 2..3 alone gives the same numbers as the same block of the full draw
    assert torch.equal(rng.rademacher(seeds, 3, (2, 5), offset=2 * 5), whole[:, 2:4])


def test_rademacher_is_balanced_and_uncorrelated():
    seeds = rng.example_seeds(0, "k", torch.arange(64))
    v = rng.rademacher(seeds, 0, (4096,))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert v.mean().abs() < 0.01
    correlation = (v[:, :-1] * v[:, 1:]).mean()
    assert correlation.abs() < 0.01
    assert (v[0] * v[1]).mean().abs() < 0.05


def test_different_keys_seeds_and_counters_give_different_streams():
    ids = torch.arange(4)
    a = rng.uniform(rng.example_seeds(0, "a", ids), 0, (100,))
    assert not torch.equal(a, rng.uniform(rng.example_seeds(0, "b", ids), 0, (100,)))
    assert not torch.equal(a, rng.uniform(rng.example_seeds(1, "a", ids), 0, (100,)))
    assert not torch.equal(a, rng.uniform(rng.example_seeds(0, "a", ids), 1, (100,)))


def test_uniform_and_normal_moments():
    seeds = rng.example_seeds(0, "m", torch.arange(16))
    u = rng.uniform(seeds, 0, (4096,))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    z = rng.normal(seeds, 0, (4096,))
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02


def test_two_restarts_streams_are_independent():
    """Stream r and stream r + 1 (a restart each) never share draws and are uncorrelated, under
    both layouts attacks declare, for uniform and normal draws."""
    seeds = rng.example_seeds(0, "restarts", torch.arange(32))
    for layout in (rng.Layout(), rng.Layout(stride=4, unit="counter")):
        for draw in ("uniform", "normal"):
            a = getattr(layout.stream(seeds, 0), draw)((2048,))
            b = getattr(layout.stream(seeds, 1), draw)((2048,))
            assert (a == b).float().mean() < 1e-3, (layout, draw)  # 24-bit uniforms: a chance tie is rare
            corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
            assert corr.abs() < 0.02, (layout, draw, corr)


def test_successive_draws_of_a_stream_are_independent():
    stream = rng.stream(rng.example_seeds(0, "draws", torch.arange(32)), 3)
    first, second = stream.uniform((2048,)), stream.uniform((2048,))
    assert (first == second).float().mean() < 1e-3
    assert torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1].abs() < 0.02


def test_a_streams_draws_depend_only_on_the_example_seed():
    seeds = rng.example_seeds(5, "only-seed", torch.arange(10))
    layout = rng.Layout(stride=4, unit="counter")
    whole = layout.stream(seeds, 2)
    normal, radius = whole.normal((7,)), whole.uniform((1,))
    alone = layout.stream(seeds[[6, 3]], 2)
    assert torch.equal(alone.normal((7,)), normal[[6, 3]]) and torch.equal(alone.uniform((1,)), radius[[6, 3]])
    subset = layout.stream(seeds, 2).subset(torch.tensor([1, 8]))
    assert torch.equal(subset.normal((7,)), normal[[1, 8]])


def test_layouts_address_the_counters_attacks_have_always_used():
    """Numbers must not change: a stream in draw units is rng's counter per kind; in counter units a
    normal takes an aligned pair and the next draw the counter after it."""
    seeds = rng.example_seeds(1, "layout", torch.arange(4))
    s = rng.Layout(stride=2).stream(seeds, 3)
    assert torch.equal(s.normal((5,)), rng.normal(seeds, 6, (5,))) and torch.equal(s.uniform((1,)), rng.uniform(seeds, 7, (1,)))
    s = rng.Layout(stride=4, unit="counter").stream(seeds, 3)
    assert torch.equal(s.normal((5,)), rng.normal(seeds, 6, (5,))) and torch.equal(s.uniform((1,)), rng.uniform(seeds, 14, (1,)))
    s = rng.Layout(stride=4, unit="counter").stream(seeds, 3)
    assert torch.equal(s.uniform((5,)), rng.uniform(seeds, 12, (5,)))
    s = rng.Layout(stride=1, unit="counter").stream(seeds, 0)
    s.uniform((1,))
    with pytest.raises(ValueError):
        s.uniform((1,))  # a stream never reads its neighbour's counters

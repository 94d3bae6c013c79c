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

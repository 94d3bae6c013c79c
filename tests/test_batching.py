"""Chunk-size probe (robench/batching.py): picks the cheapest size per row, respects limits, caches."""
import torch
from torch import nn

from robench import batching


class CostModel(nn.Module):
    """A fake target whose forward 'takes' size * cost_per_row(size) seconds on a fake clock."""

    def __init__(self, clock: list, best: int, seconds_per_row: float = 1e-6) -> None:
        super().__init__()
        self.clock, self.best, self.sizes, self.scale = clock, best, [], seconds_per_row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = len(x)
        self.sizes.append(size)
        ratio = size / self.best
        per_row = 1.0 + 0.5 * abs(torch.log2(torch.tensor(ratio)).item())  # cheapest at ``best``
        self.clock[0] += size * per_row * self.scale
        return torch.zeros(size, 2)


def _probe(monkeypatch, best, **kwargs):
    clock = [0.0]
    monkeypatch.setattr(batching.time, "perf_counter", lambda: clock[0])
    model = CostModel(clock, best)
    return batching.fastest_batch_size(model, torch.zeros(3, 1, 2, 2), **kwargs), model


def test_picks_the_size_with_the_lowest_cost_per_row(monkeypatch):
    for best in (256, 1024, 4096):
        size, model = _probe(monkeypatch, best)
        assert size == best
        assert max(model.sizes) <= 4 * best  # stops once the cost per row has turned up


def test_never_tries_sizes_above_the_limit(monkeypatch):
    size, model = _probe(monkeypatch, 4096, limit=1000)
    assert size == 512 and max(model.sizes) <= 1000


def test_the_answer_is_cached_per_target_and_input_shape(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(batching.time, "perf_counter", lambda: clock[0])
    model = CostModel(clock, 512)
    first = batching.fastest_batch_size(model, torch.zeros(1, 1, 2, 2))
    calls = len(model.sizes)
    assert batching.fastest_batch_size(model, torch.zeros(7, 1, 2, 2)) == first
    assert len(model.sizes) == calls  # no second probe
    batching.fastest_batch_size(model, torch.zeros(1, 1, 3, 3))
    assert len(model.sizes) > calls  # another input shape is probed again


def test_a_single_unbatched_example_is_accepted(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(batching.time, "perf_counter", lambda: clock[0])
    model = CostModel(clock, 128)
    assert batching.fastest_batch_size(model, torch.zeros(1, 2, 2)) in batching.CANDIDATES


def test_a_slow_model_stops_probing_once_one_forward_is_slow(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(batching.time, "perf_counter", lambda: clock[0])
    # per-row cost keeps falling up to 2**20 rows, so only the time cap can stop the probe
    model = CostModel(clock, 1 << 20, seconds_per_row=1e-5)
    size = batching.fastest_batch_size(model, torch.zeros(1, 1, 2, 2))
    assert max(model.sizes) < batching.CANDIDATES[-1]
    assert size == max(model.sizes)
    tried = sorted(set(model.sizes))

    def seconds(size):
        return size * (1.0 + 0.5 * abs(torch.log2(torch.tensor(size / model.best)).item())) * 1e-5

    assert seconds(tried[-1]) > batching.SLOW_FORWARD_S >= seconds(tried[-2])  # stopped at the first slow size


def test_randomized_targets_get_a_fixed_size_not_a_timed_one():
    """A randomized defense's draws depend on its batch: timing must not choose it (reproducibility)."""
    from robench.batching import RANDOMIZED_BATCH, fastest_batch_size

    class Noisy(torch.nn.Module):
        randomized = True

        def forward(self, x):
            raise AssertionError("a randomized target must not be probed")

    assert fastest_batch_size(Noisy(), torch.zeros(1, 1, 4, 4)) == RANDOMIZED_BATCH
    assert fastest_batch_size(Noisy(), torch.zeros(1, 1, 4, 4), limit=64) == 64


def test_a_bpda_wrapper_is_probed_as_its_target():
    """A fresh BPDA wrapper per work unit must not pay for a new timed probe each time."""
    from robench.attacks.adaptive import adaptive_target
    from robench.batching import _cache, fastest_batch_size
    from robench.defenses.preprocessing import bit_depth

    target = bit_depth(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), bits=3)
    size = fastest_batch_size(target, torch.rand(1, 1, 4, 4), candidates=(8, 16))
    wrapper = adaptive_target(target, eot_samples=1)
    assert wrapper is not target and wrapper.probe_as is target
    assert fastest_batch_size(wrapper, torch.rand(1, 1, 4, 4), candidates=(8, 16)) == size
    assert wrapper not in _cache and target in _cache
    assert list(wrapper.children()) == [target]  # probe_as is not a second registration of the target

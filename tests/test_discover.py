"""robench.discover: randomness and gradient-cutting layers found by running a model that declares
nothing, on the shapes users hand over (a layer, functional code, no_grad, a NumPy round trip)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robench.discover import BEFORE, MODULE, discover, finds_randomness, straight_through_at, vanishing_share
from robench.target import loss_and_gradient


def small_cnn() -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return net


class Quantize(nn.Module):
    def forward(self, x):
        return torch.round(x * 4) / 4


class Wrapped(nn.Module):
    """``net(quantize(x))`` with the quantization written in the wrapper's own forward."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.net = how, small_cnn()

    def forward(self, x):
        if self.how == "round":
            q = torch.round(x * 4) / 4
        elif self.how == "no_grad":
            with torch.no_grad():
                q = torch.round(x * 4) / 4
        else:
            q = torch.from_numpy(np.round(x.detach().cpu().numpy() * 4) / 4).to(x.dtype)
        return self.net(q)


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        return self.net(x + 0.05 * torch.randn_like(x))


class NoisyNearBoundaryOnly(nn.Module):
    """Randomness only where the margin is small: clean, confident inputs look deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        logits = self.net(x)
        top = logits.topk(2, dim=1).values
        close = (top[:, 0] - top[:, 1] < 0.05).float().unsqueeze(1)
        return logits + close * torch.randn_like(logits)


@pytest.fixture
def inputs():
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _grad_rows(model, x, y):
    _, grad, _ = loss_and_gradient(model, x, y, max_batch=64)
    return float((grad.flatten(1).abs().amax(1) > 0).float().mean())


@pytest.mark.parametrize("model, kind, where", [
    (nn.Sequential(Quantize(), small_cnn()), MODULE, "0"),
    (Wrapped("round"), BEFORE, "net"),
    (Wrapped("no_grad"), BEFORE, "net"),
    (Wrapped("numpy"), BEFORE, "net"),
], ids=["layer", "functional", "no_grad", "numpy"])
def test_a_cut_is_located_and_straight_through_brings_the_gradient_back(model, kind, where, inputs):
    model.eval()
    with torch.no_grad():
        y = model(inputs).argmax(1)
        clean = model(inputs)
    assert vanishing_share(model, inputs, y, max_batch=64) == 1.0
    findings = discover(model, inputs, y, max_batch=64)
    assert not findings.randomized
    assert [(c.kind, c.module) for c in findings.gradient_cuts] == [(kind, where)]
    with straight_through_at(model, findings.gradient_cuts):
        assert _grad_rows(model, inputs, y) == 1.0
        with torch.no_grad():
            assert torch.equal(model(inputs), clean), "forward values must not change"
    assert _grad_rows_or_zero(model, inputs, y) == 0.0, "the hooks are gone after the block"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _grad_rows_or_zero(model, x, y):
    try:
        return _grad_rows(model, x, y)
    except Exception:  # noqa: BLE001 - no autograd path at all counts as zero
        return 0.0


def test_a_plain_model_has_nothing_to_find(inputs):
    model = small_cnn().eval()
    y = model(inputs).argmax(1)
    findings = discover(model, inputs, y, max_batch=64)
    assert findings.randomized is False and findings.gradient_cuts == () and findings.describe() == []


def test_a_saturated_model_is_not_mistaken_for_a_cut(inputs):
    class Saturated(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn()

        def forward(self, x):
            return self.net(x) * 1e4

    model = Saturated().eval()
    y = model(inputs).argmax(1)
    assert vanishing_share(model, inputs, y, max_batch=64) >= 0.5  # the softmax underflows
    assert discover(model, inputs, y, max_batch=64).gradient_cuts == ()


@pytest.mark.parametrize("model", [Noisy(), NoisyNearBoundaryOnly()], ids=["input-noise", "near-boundary-only"])
def test_undeclared_randomness_is_found(model, inputs):
    model.eval()
    state = torch.random.get_rng_state()
    assert finds_randomness(model, inputs, max_batch=64)
    assert torch.equal(torch.random.get_rng_state(), state), "the caller's RNG state is left as it was"
    y = model(inputs).argmax(1)
    findings = discover(model, inputs, y, max_batch=64)
    assert findings.randomized and "randomized" in findings.describe()[0]


def test_discovery_is_deterministic(inputs):
    model = Wrapped("round").eval()
    y = model(inputs).argmax(1)
    assert discover(model, inputs, y, max_batch=64) == discover(model, inputs, y, max_batch=4)


def test_a_run_finds_what_a_plain_callable_hides_and_handles_it(tmp_path):
    """End to end: robench.evaluate on models that declare nothing. The noisy one is verified by
    the 15-draw majority and its gradient attacks use EOT; the rounded one gets BPDA at the cut;
    run.json says both; a plain model gets neither."""
    import robench
    from robench_testing import TINY_SUITE, write_suite

    suite = write_suite(tmp_path, TINY_SUITE)
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    plain = small_cnn().eval()
    with torch.no_grad():
        y = plain(x).argmax(1)
    cases = {"noisy": Noisy(), "rounded": Wrapped("round"), "plain": plain}
    for name, model in cases.items():
        model.eval()
        evaluation = robench.evaluate(model, x, y, suite=suite, epsilons=(0.1,), diagnostics=False, progress=False)
        found = evaluation.run["defenses"][0]["discovered"]
        examples = evaluation.examples
        if name == "noisy":
            assert found and "randomized" in found[0]
            assert set(examples["draws"]) == {15}, "a found randomized target is judged by the majority vote"
            pgd = examples[(examples["attack"] == "pgd") & examples["attacked"]]
            assert (pgd["queries"] >= 10).all(), "EOT: each gradient costs 10 draws (and a vote 15 more)"
        elif name == "rounded":
            assert found and "input gradient cut" in found[0]
            assert set(examples["draws"]) == {1}
        else:
            assert found == [] and set(examples["draws"]) == {1}

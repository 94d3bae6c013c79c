"""Properties of the variational MI bounds (Poole et al. 2019) on hand-made and Gaussian score matrices."""
from __future__ import annotations

import math

import pytest
import torch

from robench.errors import RobenchError
from robench.zoo import bounds


def random_scores(k: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(k, k, generator=torch.Generator().manual_seed(seed))


def test_constant_critic_carries_no_information():
    scores = torch.full((8, 8), 0.7)
    assert bounds.infonce(scores).item() == pytest.approx(0.0, abs=1e-6)
    assert bounds.dv(scores).item() == pytest.approx(0.0, abs=1e-6)
    assert bounds.nwj(torch.ones(8, 8)).item() == pytest.approx(0.0, abs=1e-6)  # NWJ's optimum shifts by 1
    assert bounds.tuba(scores, 0.7).item() == pytest.approx(0.0, abs=1e-6)
    assert bounds.js(torch.ones(8, 8)).item() == pytest.approx(0.0, abs=1e-6)  # js reads NWJ at f
    assert bounds.js_shifted(torch.zeros(8, 8)).item() == pytest.approx(0.0, abs=1e-6)  # ... js-shifted at f + 1


@pytest.mark.parametrize("seed", range(5))
def test_infonce_never_exceeds_log_batch_size(seed):
    for k in (4, 16, 64):
        assert bounds.infonce(random_scores(k, seed, scale=20.0)).item() <= math.log(k) + 1e-5
    # a critic that perfectly separates positives reaches the cap
    assert bounds.infonce(50.0 * torch.eye(16)).item() == pytest.approx(math.log(16), abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_bound_identities(seed):
    scores = random_scores(12, seed)
    baseline = torch.randn(12, generator=torch.Generator().manual_seed(100 + seed))
    # NWJ is TUBA with log-baseline 1; DV is at least NWJ for the same critic (log m <= m/e)
    assert bounds.nwj(scores).item() == pytest.approx(bounds.tuba(scores, 1.0).item(), abs=1e-5)
    assert bounds.dv(scores).item() >= bounds.nwj(scores).item() - 1e-5
    # the interpolated bound is TUBA at alpha = 0 and capped at 1 + log((K - 1) / alpha) otherwise
    assert bounds.interpolated(scores, baseline, 0.0).item() == pytest.approx(bounds.tuba(scores, baseline).item(), abs=1e-4)
    big = 40.0 * torch.eye(12) + scores
    for alpha in (0.01, 0.5, 1.0):
        assert bounds.interpolated(big, baseline, alpha).item() <= 1 + math.log(11 / alpha) + 1e-4


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5])
def test_interpolated_cap_is_one_plus_log_k_over_alpha(alpha):
    k = 64
    for seed in range(5):  # random critics and baselines stay under the cap
        scores = random_scores(k, seed, scale=15.0) + 30.0 * torch.eye(k)
        baseline = 5.0 * torch.randn(k, generator=torch.Generator().manual_seed(50 + seed))
        assert bounds.interpolated(scores, baseline, alpha).item() <= 1 + math.log(k / alpha)
    # a separating critic under a learned baseline that swamps the negatives reaches 1 + log((K-1)/alpha),
    # above log(K / alpha): the cap the docstring used to claim does not hold
    separating = torch.full((k, k), -40.0).fill_diagonal_(40.0)
    value = bounds.interpolated(separating, torch.zeros(k), alpha).item()
    assert value == pytest.approx(1 + math.log((k - 1) / alpha), abs=1e-3)
    assert value > math.log(k / alpha) + 0.9


def test_leave_one_out_baseline_matches_brute_force():
    k = 7
    scores = random_scores(k, 0)
    scores[2, 4] = 80.0  # one dominant entry: the case where naive subtraction cancels
    eye = torch.eye(k, dtype=torch.bool)
    brute = torch.logsumexp(scores[:, None, :].expand(k, k, k).masked_fill(eye[None], float("-inf")), dim=2) - math.log(k - 1)
    torch.testing.assert_close(bounds._leave_one_out_logmeanexp(scores), brute, atol=1e-4, rtol=1e-5)
    # a row whose maximum dwarfs the rest still has finite gradients
    scores = torch.zeros(k, k)
    scores[0, 0] = 200.0
    scores.requires_grad_(True)
    bounds.interpolated(scores, torch.zeros(k), 0.01).backward()
    assert torch.isfinite(scores.grad).all()


def test_js_has_nwj_value_and_js_gradient():
    scores = random_scores(10, 3).requires_grad_(True)
    (expected,) = torch.autograd.grad(bounds.js_fgan(scores), scores)
    for bound, shift in ((bounds.js, 0.0), (bounds.js_shifted, 1.0)):
        value = bound(scores)
        assert value.item() == pytest.approx(bounds.nwj(scores.detach() + shift).item(), abs=1e-5)
        (grad,) = torch.autograd.grad(value, scores)
        torch.testing.assert_close(grad, expected)
    assert bounds.estimate("js-shifted", scores).item() == pytest.approx(bounds.js_shifted(scores).item())


@pytest.mark.parametrize("mi", [2.0, 4.0])
def test_js_at_the_optimal_critic_is_the_truth_less_one_over_e(mi):
    """At the JS optimum f* = log ratio, js = NWJ(f*) = I - 1/e and js-shifted = NWJ(f* + 1) = I."""
    js = bounds.gaussian_estimates("js", None, mi, batches=200, batch_size=64, seed=0)
    shifted = bounds.gaussian_estimates("js-shifted", None, mi, batches=200, batch_size=64, seed=0)
    assert js.mean().item() == pytest.approx(mi - math.exp(-1), abs=0.1)
    assert shifted.mean().item() == pytest.approx(mi, abs=0.1)
    assert abs(js.mean().item() - mi) <= math.exp(-1) + 0.1


def test_js_spreads_less_than_js_shifted_at_8_nats():
    js = bounds.gaussian_estimates("js", None, 8.0, batches=200, batch_size=64, seed=0)
    shifted = bounds.gaussian_estimates("js-shifted", None, 8.0, batches=200, batch_size=64, seed=0)
    assert js.std().item() < 0.7 * shifted.std().item()


@pytest.mark.parametrize("bad", [torch.zeros(3, 4), torch.zeros(1, 1), torch.zeros(4)])
def test_non_square_scores_are_rejected(bad):
    with pytest.raises(RobenchError, match="square"):
        bounds.infonce(bad)
    with pytest.raises(RobenchError, match="alpha"):
        bounds.interpolated(torch.zeros(4, 4), 0.0, 1.5)


def test_critics_score_every_pair():
    torch.manual_seed(0)
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    g, h = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    torch.testing.assert_close(bounds.SeparableCritic(g, h)(x, y), g(x) @ h(y).T)
    f = bounds.mlp(6, 1, hidden=8)
    concat = bounds.ConcatCritic(f)(x, y)
    assert concat.shape == (5, 5)
    assert concat[1, 3].item() == pytest.approx(f(torch.cat([x[1], y[3]])).item(), abs=1e-6)


def test_gaussian_ground_truth():
    assert bounds.rho_for_mi(2.0) == pytest.approx(math.sqrt(1 - math.exp(-0.2)))
    generator = torch.Generator().manual_seed(0)
    x, y = bounds.correlated_gaussian(4.0, 20000, generator=generator)
    rho = bounds.rho_for_mi(4.0)
    assert torch.corrcoef(torch.stack([x[:, 0], y[:, 0]]))[0, 1].item() == pytest.approx(rho, abs=0.02)
    # the optimal critic's DV estimate on a big batch is close to the true MI
    assert bounds.dv(bounds.gaussian_log_ratio(x[:2000], y[:2000], 4.0)).item() == pytest.approx(4.0, abs=0.3)


def test_nwj_variance_exceeds_infonce_at_8_nats():
    infonce = bounds.gaussian_estimates("infonce", None, 8.0, batches=60, batch_size=64)
    nwj = bounds.gaussian_estimates("nwj", None, 8.0, batches=60, batch_size=64)
    assert infonce.max().item() <= math.log(64) + 1e-5
    assert nwj.var().item() > 10 * infonce.var().item()


def test_gaussian_critic_follows_the_paper_and_the_staircase_resumes():
    separable = bounds.GaussianCritic(kind="separable")
    widths = [m.out_features for m in separable.critic.g if isinstance(m, torch.nn.Linear)]
    assert widths == [256, 256, 32] and separable.baseline is None
    concat = bounds.GaussianCritic(kind="concat", baseline=True)
    assert [m.out_features for m in concat.critic.f if isinstance(m, torch.nn.Linear)] == [256, 256, 1]
    assert [m.out_features for m in concat.baseline if isinstance(m, torch.nn.Linear)] == [512, 512, 1]
    # one critic across stages: stage 1 of a staircase is train_gaussian_critic; stage 2 continues from it
    stages = bounds.staircase("tuba", (2.0, 4.0), steps_per_stage=3, seed=0)
    mi, critic, history = next(stages)
    first = {k: v.clone() for k, v in critic.state_dict().items()}
    alone = bounds.train_gaussian_critic("tuba", 2.0, steps=3, seed=0)
    assert mi == 2.0 and len(history) == 3 and critic.baseline is not None
    for key, value in alone.state_dict().items():
        assert torch.equal(value, first[key]), key
    mi, later, _ = next(stages)
    assert mi == 4.0 and later is critic and not torch.equal(later.state_dict()["baseline.0.weight"], first["baseline.0.weight"])
    with pytest.raises(RobenchError, match="unknown MI bound"):
        bounds.train_gaussian_critic("nce", 2.0, steps=1)


@pytest.mark.slow
def test_trained_infonce_critic_is_within_a_third_of_a_nat_at_2_nats():
    critic = bounds.train_gaussian_critic("infonce", 2.0, steps=400, batch_size=128, seed=0)
    estimate = bounds.gaussian_estimates("infonce", critic, 2.0, batches=20, batch_size=128, seed=1).mean().item()
    assert abs(estimate - 2.0) < 0.3

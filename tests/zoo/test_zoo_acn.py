"""ACN: the KL is to the neighbour's prior, neighbours exclude the example, training is seeded, and the
kNN target is piecewise constant with a soft-kNN BPDA stand-in."""
from __future__ import annotations

import pytest
import torch

from robench.registry import models
from robench.target import is_differentiable
from robench.zoo import acn
from robench.zoo.training import seeded_init


def tiny_acn(seed: int = 0) -> acn.ACN:
    return seeded_init(seed, lambda: acn.ACN(1, 8, 8, code_dim=4, hidden=32, prior_hidden=16))


def test_kl_is_to_the_prior_given_the_neighbour(tiny_digits):
    model = tiny_acn()
    x = tiny_digits.x_train[:6]
    generator = torch.Generator().manual_seed(0)
    c1, c2 = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    kl1, kl2 = model.kl(x, c1), model.kl(x, c2)
    assert kl1.shape == (6,) and (kl1 >= 0).all()
    assert (kl1 - kl2).abs().min() > 1e-4  # another neighbour, another prior, another coding cost
    torch.testing.assert_close(kl1, acn.gaussian_kl(*model.posterior(x), *model.prior_given(c1)))
    # the loss's KL term is the same quantity
    _, kl_term = model.loss_terms(x, c1, torch.Generator().manual_seed(1))
    torch.testing.assert_close(kl_term, kl1)
    # KL of a Gaussian to itself is zero; to a shifted copy, |shift|^2 / (2 var)
    mu, logvar = torch.zeros(1, 3), torch.zeros(1, 3)
    assert acn.gaussian_kl(mu, logvar, mu, logvar).item() == pytest.approx(0.0, abs=1e-7)
    assert acn.gaussian_kl(mu, logvar, mu + 2.0, logvar).item() == pytest.approx(3 * 2.0, abs=1e-6)


def test_neighbour_table_is_the_k_nearest_other_codes():
    codes = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    table = acn.neighbour_table(codes, 5)
    distances = torch.cdist(codes, codes)
    for i in range(30):
        assert i not in table[i].tolist()
        others = distances[i].clone()
        others[i] = float("inf")
        assert set(table[i].tolist()) == set(others.argsort()[:5].tolist())
    with pytest.raises(Exception, match="neighbours"):
        acn.neighbour_table(codes[:4], 5)


def test_training_is_seeded_and_lowers_the_loss(tiny_digits):
    x = tiny_digits.x_train

    def train(seed: int) -> tuple[acn.ACN, dict]:
        model = tiny_acn(seed)
        return model, acn.train_acn(model, x, steps=60, batch_size=32, seed=seed, lr=3e-3, refresh=20)

    (a, meta), (b, _), (c, _) = train(0), train(0), train(1)
    codes = acn.code_means(a, tiny_digits.x_test)
    assert torch.equal(codes, acn.code_means(b, tiny_digits.x_test))  # deterministic given the seed
    assert not torch.equal(codes, acn.code_means(c, tiny_digits.x_test))
    untrained = tiny_acn(0)
    before = untrained.reconstruction_nll(x, acn.code_means(untrained, x)).mean().item()
    after = a.reconstruction_nll(x, acn.code_means(a, x)).mean().item()
    assert after < before - 5.0 and meta["final_kl_nats"] >= 0
    cost = acn.coding_cost(a, tiny_digits)
    assert cost["test_kl_bits"] == pytest.approx(cost["test_kl_nats"] / torch.log(torch.tensor(2.0)).item())


def test_knn_target_is_piecewise_constant_with_a_soft_knn_stand_in(tiny_digits):
    encoder = tiny_acn()
    knn = acn.CodeKNN(encoder, len(tiny_digits.x_train), 10, k=5)
    knn.fit(tiny_digits.x_train, tiny_digits.y_train)
    assert knn.differentiable is False and not is_differentiable(knn)
    x = tiny_digits.x_test
    logits = knn(x)
    # the vote: 5 nearest training codes, plus 0.5 for the nearest one's class
    nearest = torch.cdist(encoder(x), knn.codes).topk(5, largest=False).indices
    labels = tiny_digits.y_train[nearest]
    for row in range(len(x)):
        expected = torch.bincount(labels[row], minlength=10).float()
        expected[labels[row, 0]] += 0.5
        torch.testing.assert_close(logits[row], expected)
    # small perturbations leave the logits exactly as they were (away from the decision boundaries)
    moved = knn(x + 1e-4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    assert (moved == logits).all(1).float().mean() >= 0.95
    # its exact gradient is zero; the BPDA stand-in has a useful one and mostly agrees with the vote
    xg = x[:8].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(knn(xg)[:, 0].sum(), xg)
    assert torch.equal(grad, torch.zeros_like(grad))
    (soft_grad,) = torch.autograd.grad(knn.bpda_forward(xg)[:, 0].sum(), xg)
    assert soft_grad.abs().sum() > 0
    agree = (knn.bpda_forward(x).argmax(1) == logits.argmax(1)).float().mean().item()
    assert agree >= 0.7


def test_acn_targets_are_registered():
    assert models.entry("acn").extra["role"] == "encoder"
    for name in ("acn-probe", "acn-knn"):
        assert models.entry(name).extra["role"] == "classifier"

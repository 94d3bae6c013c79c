"""APGD-CE / APGD-DLR (robench/attacks/apgd.py): strength, ball, budget, determinism, schedule."""
import pytest
import torch

from robench import rng
from robench.attacks.apgd import APGDCE, APGDDLR, checkpoints, dlr_loss
from robench.attacks.gradient import FOOLBOX_PGD, FoolboxAttack
from robench.errors import RobenchError
from robench.target import QueryCounter
from robench.threat import ThreatModel
from robench.verify import verify
from robench_testing import at_distance, conv_problem


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 0.8)])
@pytest.mark.parametrize("attack_class", [APGDCE, APGDDLR])
def test_apgd_is_at_least_as_strong_as_foolbox_pgd_with_the_same_budget(digits_mlp, attack_class, norm, eps):
    model, x, y = digits_mlp
    threat = ThreatModel(norm, eps)
    seeds = rng.example_seeds(0, "apgd-vs-pgd", torch.arange(len(x)))
    pgd = FoolboxAttack("foolbox-pgd", FOOLBOX_PGD, steps=20).run(model, x, y, threat, seeds=seeds)
    apgd = attack_class(steps=20, max_batch=256).run(model, x, y, threat, seeds=seeds)
    broken_pgd = verify(model, x, pgd.x_adv, y, threat).broken
    broken_apgd = verify(model, x, apgd.x_adv, y, threat).broken
    assert broken_pgd.float().mean() < 1.0  # the comparison means something
    assert broken_apgd.sum() >= broken_pgd.sum()
    assert (apgd.queries <= pgd.queries.max()).all()  # within the same budget


@pytest.mark.parametrize("attack_class", [APGDCE, APGDDLR])
def test_apgd_breaks_a_linear_model_exactly_where_the_analytic_answer_says(linear_binary, attack_class):
    x = at_distance(linear_binary, 0.1)
    y = linear_binary(x).argmax(1)
    seeds = rng.example_seeds(0, "apgd-linear", torch.arange(len(x)))
    for factor, expected in ((1.05, True), (0.95, False)):
        threat = ThreatModel("linf", 0.1 * factor, (-100.0, 100.0))
        result = attack_class(steps=20, max_batch=64).run(linear_binary, x, y, threat, seeds=seeds)
        assert (verify(linear_binary, x, result.x_adv, y, threat).broken == expected).all(), factor


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 3.0), ("linf", 0.01), ("l2", 0.05)])
@pytest.mark.parametrize("attack_class", [APGDCE, APGDDLR])
def test_proposals_stay_in_the_ball_and_bounds(attack_class, norm, eps):
    model, x, y, seeds = conv_problem("apgd")
    threat = ThreatModel(norm, eps)
    result = attack_class(steps=10, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all()


@pytest.mark.parametrize("restarts", [1, 3])
def test_query_counts_are_exact_and_broken_examples_stop_spending(restarts):
    model, x, y, seeds = conv_problem("apgd", 16)
    threat = ThreatModel("linf", 0.01)
    counter = QueryCounter(model)
    attack = APGDCE(steps=12, restarts=restarts, max_batch=5)
    result = attack.run(counter, x, y, threat, seeds=seeds)
    assert counter.rows == int(result.queries.sum())  # one row per forward+backward pass
    broken = verify(model, x, result.x_adv, y, threat).broken
    full = restarts * (attack.steps + 1)
    assert broken.any() and (~broken).any()
    assert (result.queries[broken] < full).all()
    assert (result.queries[~broken] == full).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.3)])
def test_an_example_gets_the_same_result_alone_in_a_batch_or_in_chunks(norm, eps):
    model, x, y, seeds = conv_problem("apgd")
    threat = ThreatModel(norm, eps)
    attack = APGDDLR(steps=15, restarts=2, max_batch=64)
    batched = attack.run(model, x, y, threat, seeds=seeds)
    chunked = APGDDLR(steps=15, restarts=2, max_batch=3).run(model, x, y, threat, seeds=seeds)
    assert torch.allclose(chunked.x_adv, batched.x_adv, atol=1e-5)
    for i in (0, 5, 9):
        single = attack.run(model, x[i : i + 1], y[i : i + 1], threat, seeds=seeds[i : i + 1])
        assert torch.allclose(single.x_adv, batched.x_adv[i : i + 1], atol=1e-5)
        assert single.queries.item() == batched.queries[i].item()
    other = attack.run(model, x, y, threat, seeds=seeds + 1)
    assert torch.equal(attack.run(model, x, y, threat, seeds=seeds).x_adv, batched.x_adv)
    assert not torch.equal(other.x_adv, batched.x_adv)


def test_checkpoints_follow_the_papers_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]


def test_dlr_is_invariant_to_shifting_and_rescaling_the_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 10, generator=generator)
    labels = torch.randint(0, 10, (20,), generator=generator)
    loss = dlr_loss(logits, labels)
    assert torch.allclose(dlr_loss(3.0 * logits + 5.0, labels), loss, atol=1e-5)
    assert ((loss > 0) == (logits.argmax(1) != labels)).all()  # positive exactly when misclassified


@pytest.mark.parametrize("params", [{"steps": 0}, {"restarts": 0}, {"rho": 0.0}, {"max_batch": 0}])
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(RobenchError):
        APGDCE(**params)


def test_registered_with_the_papers_defaults():
    from robench.registry import attacks

    attack = attacks.get("apgd-dlr")()
    assert (attack.steps, attack.restarts, attack.rho) == (100, 1, 0.75)
    assert not attack.gradient_free and "steps=100" in repr(attack)
    assert attacks.get("square")().gradient_free

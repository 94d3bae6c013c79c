"""APGD-T (robench/attacks/apgd.py): targets, targeted DLR, strength, ball, exact budget, determinism."""
import pytest
import torch
from torch import nn

from robench import rng
from robench.attacks.apgd import APGDDLR, APGDT, target_classes, targeted_dlr_loss
from robench.errors import RobenchError
from robench.target import QueryCounter
from robench.threat import ThreatModel
from robench.verify import verify
from robench_testing import assert_batch_independent, conv_problem


class HiddenClass(nn.Module):
    """Five classes, linear, on 1 x 8 x 8 inputs: class 0 leads, class 1 is next but out of reach,
    class 2 is further behind yet within reach. At x0 the logits are the biases [0, -1, -2.5, -5,
    -5]; moving the first coordinate by d raises z_1 by d, moving the other 63 raises z_2 by 0.5
    per unit of their sum. Under L-inf eps = 0.1, z_1 gains at most 0.1 (gap 1) and z_2 up to 3.15
    (gap 2.5), while a random start moves z_2 by about 0.23 (one standard deviation): class 2 does
    not overtake class 1 (a gain of 1.5) by chance."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(5, 64)
        w[1, 0] = 1.0
        w[2, 1:] = 0.5
        self.register_buffer("w", w)
        self.register_buffer("b", torch.tensor([0.0, -1.0, -2.5, -5.0, -5.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - 0.5) @ self.w.T + self.b


class TwoDraws(nn.Module):
    """A stand-in for an EOT wrapper: each row costs two rows of the wrapped target."""

    queries_per_row = 2

    def __init__(self, target: nn.Module) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.target(x) + self.target(x)) / 2


def hidden_class_problem(n: int = 12):
    generator = torch.Generator().manual_seed(0)
    x = 0.5 + 0.002 * (2 * torch.rand(n, 1, 8, 8, generator=generator) - 1)
    model = HiddenClass()
    y = torch.zeros(n, dtype=torch.long)
    assert (model(x).argmax(1) == y).all()
    return model, x, y, rng.example_seeds(0, "apgd-t-hidden", torch.arange(n))


def test_targets_are_the_2nd_to_10th_largest_clean_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 12, generator=generator)
    y = logits.argmax(1)  # correctly classified: the top class is the label
    classes = target_classes(logits, y, 9)
    assert torch.equal(classes, logits.argsort(dim=1, descending=True)[:, 1:10])
    assert target_classes(logits, y, 3).shape == (50, 3)
    assert target_classes(logits[:, :4], logits[:, :4].argmax(1), 9).shape == (50, 3)  # min(9, classes - 1)


def test_an_example_misclassified_at_clean_targets_its_wrong_top_class_first_and_never_its_label():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    y = torch.tensor([3])  # top clean class is 1, not y
    assert target_classes(logits, y, 9).tolist() == [[1, 2, 4, 0]]


def test_targeted_dlr_on_hand_made_logits():
    logits = torch.tensor([[4.0, 3.0, 1.0, 0.0, -2.0], [4.0, 3.0, 1.0, 0.0, -2.0]])
    labels, classes = torch.tensor([0, 1]), torch.tensor([2, 0])
    # sorted 4 > 3 > 1 > 0: denominator z_pi1 - (z_pi3 + z_pi4) / 2 = 4 - 0.5 = 3.5
    expected = torch.tensor([-(4.0 - 1.0) / 3.5, -(3.0 - 4.0) / 3.5])
    assert torch.allclose(targeted_dlr_loss(logits, labels, classes), expected)
    assert torch.allclose(targeted_dlr_loss(2.5 * logits - 7.0, labels, classes), expected, atol=1e-6)
    # fewer than four classes: z_pi1 - z_pi3 with three, the plain margin z_t - z_y with two
    three = torch.tensor([[2.0, 1.0, -1.0]])
    assert torch.allclose(targeted_dlr_loss(three, torch.tensor([0]), torch.tensor([1])), torch.tensor([-1.0 / 3.0]))
    two = torch.tensor([[1.0, 3.0]])
    assert torch.allclose(targeted_dlr_loss(two, torch.tensor([0]), torch.tensor([1])), torch.tensor([2.0]))


def test_targeting_the_third_class_breaks_what_untargeted_dlr_cannot_with_more_budget():
    """Untargeted DLR follows the runner-up (out of reach) and pushes class 2 down, since its
    logit sits in the denominator; APGD-T's second target, class 2, is within reach."""
    model, x, y, seeds = hidden_class_problem()
    threat = ThreatModel("linf", 0.1)
    dlr = APGDDLR(steps=20, restarts=3, max_batch=64).run(model, x, y, threat, seeds=seeds)
    first_only = APGDT(steps=20, n_target_classes=1, max_batch=64).run(model, x, y, threat, seeds=seeds)
    apgd_t = APGDT(steps=20, n_target_classes=2, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert (apgd_t.queries.sum() < dlr.queries.sum()) and (dlr.queries == 3 * 21).all()  # less budget
    assert not verify(model, x, dlr.x_adv, y, threat).broken.any()
    assert not verify(model, x, first_only.x_adv, y, threat).broken.any()  # target 1 = class 1: out of reach
    assert verify(model, x, apgd_t.x_adv, y, threat).broken.all()
    assert (model(apgd_t.x_adv).argmax(1) == 2).all()
    assert (apgd_t.queries > 1 + 21).all()  # each spent the first target's whole run before the second


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 0.5)])
def test_apgd_t_breaks_at_least_what_apgd_dlr_breaks_with_the_same_budget(digits_mlp, norm, eps):
    model, x, y = digits_mlp
    threat = ThreatModel(norm, eps)
    seeds = rng.example_seeds(0, "apgd-t-vs-dlr", torch.arange(len(x)))
    dlr = APGDDLR(steps=10, restarts=3, max_batch=256).run(model, x, y, threat, seeds=seeds)
    apgd_t = APGDT(steps=10, n_target_classes=3, max_batch=256).run(model, x, y, threat, seeds=seeds)
    broken_dlr = verify(model, x, dlr.x_adv, y, threat).broken
    broken_t = verify(model, x, apgd_t.x_adv, y, threat).broken
    assert 0 < broken_dlr.float().mean() < 1.0  # the comparison means something
    assert broken_t.sum() >= broken_dlr.sum()
    assert (apgd_t.queries <= dlr.queries.max() + 1).all()  # the same budget, plus the clean forward


@pytest.mark.parametrize("norm, eps", [("linf", 0.5), ("l2", 3.0), ("linf", 0.01), ("l2", 0.05)])
def test_proposals_stay_in_the_ball_and_bounds(norm, eps):
    model, x, y, seeds = conv_problem("apgd-t", pin_bounds=True)
    threat = ThreatModel(norm, eps)
    result = APGDT(steps=8, n_target_classes=3, max_batch=64).run(model, x, y, threat, seeds=seeds)
    assert threat.contains(result.x_adv, x, tolerance=1e-6).all()


@pytest.mark.parametrize("restarts", [1, 2])
def test_query_counts_are_exact_when_nothing_breaks(restarts):
    model, x, y, seeds = conv_problem("apgd-t", 8)
    threat = ThreatModel("linf", 1e-5)  # far too small to break anything
    counter = QueryCounter(model)
    result = APGDT(steps=3, n_target_classes=2, restarts=restarts, max_batch=3).run(counter, x, y, threat, seeds=seeds)
    assert not verify(model, x, result.x_adv, y, threat).broken.any()
    # one clean forward to pick the targets, then 1 + steps passes per target class and restart
    assert (result.queries == 1 + 2 * restarts * (1 + 3)).all()
    assert counter.rows == int(result.queries.sum())


def test_query_counts_are_exact_and_broken_examples_stop_spending():
    model, x, y, seeds = conv_problem("apgd-t", 16)
    threat = ThreatModel("linf", 0.01)
    counter = QueryCounter(model)
    result = APGDT(steps=12, n_target_classes=3, max_batch=5).run(counter, x, y, threat, seeds=seeds)
    assert counter.rows == int(result.queries.sum())
    broken = verify(model, x, result.x_adv, y, threat).broken
    full = 1 + 3 * (12 + 1)
    assert broken.any() and (~broken).any()
    assert (result.queries[broken] < full).all()
    assert (result.queries[~broken] == full).all()


def test_an_eot_wrapper_costs_its_draws_per_row():
    model, x, y, seeds = conv_problem("apgd-t", 6)
    threat = ThreatModel("linf", 1e-5)
    counter = QueryCounter(model)
    result = APGDT(steps=3, n_target_classes=2, max_batch=64).run(TwoDraws(counter), x, y, threat, seeds=seeds)
    assert (result.queries == 2 * (1 + 2 * (1 + 3))).all()
    assert counter.rows == int(result.queries.sum())


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.3)])
def test_an_example_gets_the_same_result_alone_in_a_batch_or_in_chunks(norm, eps):
    model, x, y, seeds = conv_problem("apgd-t")
    threat = ThreatModel(norm, eps)
    attack = APGDT(steps=10, n_target_classes=3, restarts=2, max_batch=64)
    batched = assert_batch_independent(attack, APGDT(steps=10, n_target_classes=3, restarts=2, max_batch=3),
                                       model, x, y, threat, seeds)
    assert not torch.equal(attack.run(model, x, y, threat, seeds=seeds + 1).x_adv, batched.x_adv)


def test_each_target_class_starts_from_its_own_random_stream():
    model, x, y, seeds = conv_problem("apgd-t", 4)
    threat = ThreatModel("linf", 1e-5)
    attack = APGDT(steps=1, n_target_classes=2, max_batch=64)
    first, second = (threat.random_start(x, stream=attack.streams.stream(seeds, run), surface=True) for run in (0, 1))
    assert not torch.equal(first, second)


def test_an_empty_batch_costs_nothing():
    model, x, y, seeds = conv_problem("apgd-t", 2)
    result = APGDT(steps=3, max_batch=8).run(model, x[:0], y[:0], ThreatModel("linf", 0.1), seeds=seeds[:0])
    assert result.x_adv.shape == x[:0].shape and result.queries.shape == (0,)


@pytest.mark.parametrize("params", [{"steps": 0}, {"restarts": 0}, {"rho": 0.0}, {"max_batch": 0}, {"n_target_classes": 0},
                                    {"n_target_classes": 1.5}])
def test_bad_hyperparameters_are_user_errors(params):
    with pytest.raises(RobenchError):
        APGDT(**params)


def test_registered_with_autoattacks_standard_defaults():
    from robench.registry import attacks

    attack = attacks.get("apgd-t")()
    assert (attack.steps, attack.n_target_classes, attack.restarts, attack.rho, attack.max_batch) == (100, 9, 1, 0.75, None)
    assert not attack.gradient_free and "n_target_classes=9" in repr(attack) and "steps=100" in repr(attack)

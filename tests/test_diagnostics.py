"""Gradient-masking diagnostics (robench/diagnostics/): each check fires on a target or frame built to
trigger it and stays quiet on one built not to."""
import copy

import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from robench import diagnostics
from robench.diagnostics import (
    CHECKS, COLUMNS, PROBE_CHECKS, TABLE_CHECKS, Diagnostic, accuracy_not_decreasing, diagnostics_frame,
    gradient_free_beats_gradient, table_checks, input_gradient_norms, probe_checks, sign_test,
)
from robench.errors import RobenchError
from robench.threat import ThreatModel

# ---------------------------------------------------------------------------------------------
# toy targets


class Linear(nn.Module):
    """A fixed linear classifier on 1x4x4 inputs: honest, smooth, trivially attackable."""

    def __init__(self, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.layer = nn.Linear(16, classes)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(classes, 16, generator=generator))
            self.layer.bias.zero_()

    def forward(self, x):
        return self.layer(x.flatten(1))


class Saturated(nn.Module):
    """Logits times a huge temperature: softmax saturates in float32, CE gradients are exactly 0."""

    def __init__(self, model: nn.Module, temperature: float = 1e4) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x):
        return self.model(x) * self.temperature


class Quantized(nn.Module):
    """Bit-depth reduction in front of the model: zero gradient almost everywhere."""

    def __init__(self, model: nn.Module, levels: int = 3) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


class Detached(nn.Module):
    """Runs the model without autograd, as a NumPy-backed defense would."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.no_grad():
            return self.model(x)


class Noisy(nn.Module):
    """Gaussian input noise on every forward pass; ``randomized`` is set per test."""

    def __init__(self, model: nn.Module, sigma: float = 0.3, randomized: bool = False) -> None:
        super().__init__()
        self.model, self.sigma, self.randomized = model, sigma, randomized

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


class Bowl(nn.Module):
    """Wrong class only inside an L2 ball of radius 0.8 eps around a point 0.5 eps from the clean input
    (per coordinate), away from every corner of the L-inf ball: PGD with steps of 1.25 eps jumps over
    it to the corners, PGD with steps of 0.3 eps settles inside it."""

    def __init__(self, centre: torch.Tensor, radius: float) -> None:
        super().__init__()
        self.register_buffer("centre", centre.flatten())
        self.radius = radius

    def forward(self, x):
        inside = self.radius**2 - (x.flatten(1) - self.centre).pow(2).sum(1)
        return torch.stack([torch.zeros_like(inside), inside / self.radius**2], dim=1)


def labelled_inputs(model: nn.Module, n: int = 24, seed: int = 0):
    """Inputs in [0.2, 0.8] labelled by the model itself, so every example is clean-correct."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, 1, 4, 4, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def run_probes(target, *, attack_target=None, undefended=None, x, y, epsilon=0.1, **kwargs):
    rows = probe_checks(defense="toy", target=target, attack_target=attack_target or target, undefended=undefended,
                        x=x, y=y, threat=ThreatModel("linf", epsilon), seed=0, max_batch=4096, **kwargs)
    assert [r.check for r in rows] == list(PROBE_CHECKS)
    return {r.check: r for r in rows}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The probes run many tiny forward/backward passes: with several OpenMP threads on a busy machine
    each op waits for the pool (30x slower measured on 2 shared cores); one thread changes no result."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def linear():
    return Linear().eval()


@pytest.fixture(scope="module")
def linear_probes(linear):
    x, y = labelled_inputs(linear)
    return run_probes(linear, undefended=copy.deepcopy(linear), x=x, y=y, epsilon=0.05)


@pytest.fixture(scope="module")
def saturated_probes(linear):
    x, y = labelled_inputs(linear)
    return run_probes(Saturated(linear), undefended=linear, x=x, y=y, epsilon=0.05)


# ---------------------------------------------------------------------------------------------
# the table


def test_every_check_has_a_report_sentence_and_the_frame_has_exactly_the_columns():
    assert set(CHECKS) == set(TABLE_CHECKS) | set(PROBE_CHECKS)
    assert all(len(text.split()) >= 20 for text in CHECKS.values())
    empty = diagnostics_frame([])
    assert list(empty.columns) == COLUMNS == ["defense", "epsilon", "check", "fired", "detail"] and len(empty) == 0
    frame = diagnostics_frame([Diagnostic("d", 0.1, "vanishing_gradients", True, "x"),
                               Diagnostic("d", 0.1, "attack_not_converged", False, "y")])
    assert list(frame.columns) == COLUMNS and frame["fired"].dtype == bool and frame["epsilon"].dtype == float
    assert frame["fired"].tolist() == [True, False]


@pytest.mark.parametrize("wins,losses", [(0, 0), (0, 5), (5, 0), (6, 3), (20, 30)])
def test_sign_test_is_the_exact_one_sided_binomial_test(wins, losses):
    expected = 1.0 if wins == 0 else stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue
    assert sign_test(wins, losses) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# frame checks


def examples_frame(broken: dict[tuple[float, str], list[bool]], *, clean: list[bool] | None = None) -> pd.DataFrame:
    """An examples frame as the runner writes it (seconds already dropped): (epsilon, attack) -> broken."""
    rows = []
    for (epsilon, attack), flags in broken.items():
        for i, b in enumerate(flags):
            correct = True if clean is None else clean[i]
            rows.append(dict(defense="d", model="m", dataset="s", norm="linf", epsilon=epsilon, attack=attack, example=i,
                             label=0, clean_correct=correct, broken=b or not correct, rejected=False, queries=1,
                             distance=0.0, margin=0.0))
    return pd.DataFrame(rows)


def test_gradient_free_beats_gradient_fires_when_spsa_breaks_30_percent_that_pgd_does_not():
    pgd = [i < 20 for i in range(100)]
    spsa = [i < 50 for i in range(100)]  # 30 more than PGD, a superset
    (row,) = gradient_free_beats_gradient(examples_frame({(0.1, "pgd"): pgd, (0.1, "spsa"): spsa}), gradient_free={"spsa"})
    assert row.fired and row.check == "gradient_free_beats_gradient" and (row.defense, row.epsilon) == ("d", 0.1)
    assert "30 of 100" in row.detail


@pytest.mark.parametrize(
    "spsa_extra,pgd_extra",
    [(0, 0), (4, 0), (10, 10)],  # SPSA a subset of PGD; a gap below 5%; a gap that goes both ways
)
def test_gradient_free_beats_gradient_stays_quiet_without_a_real_gap(spsa_extra, pgd_extra):
    pgd = [i < 40 or 40 <= i < 40 + pgd_extra for i in range(100)]
    spsa = [i < 30 or 60 <= i < 60 + spsa_extra for i in range(100)]
    (row,) = gradient_free_beats_gradient(examples_frame({(0.1, "pgd"): pgd, (0.1, "spsa"): spsa}), gradient_free={"spsa"})
    assert not row.fired


def test_gradient_free_beats_gradient_counts_only_clean_correct_examples_and_any_gradient_attack():
    clean = [i >= 50 for i in range(100)]  # half misclassified already: they count as broken everywhere
    pgd = [False] * 100
    bpda = [i >= 90 for i in range(100)]
    spsa = [i >= 85 for i in range(100)]  # beyond both gradient attacks: 5 of the 50 clean-correct (10%)
    frame = examples_frame({(0.1, "pgd"): pgd, (0.1, "bpda-pgd"): bpda, (0.1, "spsa"): spsa}, clean=clean)
    (row,) = gradient_free_beats_gradient(frame, gradient_free=["spsa"])
    assert "5 of 50" in row.detail and row.fired


def test_gradient_free_beats_gradient_is_not_run_without_both_kinds_of_attack():
    (row,) = gradient_free_beats_gradient(examples_frame({(0.1, "pgd"): [True, False]}), gradient_free={"spsa"})
    assert not row.fired and row.detail.startswith("not run")


def test_accuracy_not_decreasing_is_quiet_on_equal_accuracy_and_on_one_example():
    """Issue 23's false alarms: two balls that leave the same examples robust are no evidence of a
    failing attack, and neither is one example robust only at the larger epsilon (sign-test p 0.5)."""
    robust_at_both = [i < 60 for i in range(100)]
    frame = examples_frame({(0.1, "pgd"): [not r for r in robust_at_both], (0.3, "pgd"): [not r for r in robust_at_both]})
    (row,) = accuracy_not_decreasing(frame)
    assert not row.fired and row.epsilon == 0.3 and "0.600 at eps 0.1 -> 0.600 at eps 0.3" in row.detail
    one_more = examples_frame({(0.1, "pgd"): [i >= 60 for i in range(100)], (0.3, "pgd"): [i >= 61 for i in range(100)]})
    assert not accuracy_not_decreasing(one_more)[0].fired


def test_accuracy_not_decreasing_fires_when_accuracy_rises_from_zero():
    frame = examples_frame({(0.1, "pgd"): [True] * 100, (0.2, "pgd"): [i >= 30 for i in range(100)]})
    (row,) = accuracy_not_decreasing(frame)
    assert row.fired


def test_accuracy_not_decreasing_stays_quiet_when_accuracy_falls_or_is_already_zero():
    falling = examples_frame({
        (0.1, "pgd"): [i >= 60 for i in range(100)], (0.1, "spsa"): [False] * 100,
        (0.2, "pgd"): [i >= 20 for i in range(100)], (0.2, "spsa"): [i < 5 for i in range(100)],
        (0.3, "pgd"): [True] * 100, (0.3, "spsa"): [True] * 100,
    })
    rows = accuracy_not_decreasing(falling)
    assert [r.epsilon for r in rows] == [0.2, 0.3] and not any(r.fired for r in rows)
    at_zero = examples_frame({(0.1, "pgd"): [True] * 50, (0.2, "pgd"): [True] * 50})
    assert not accuracy_not_decreasing(at_zero)[0].fired


def test_accuracy_not_decreasing_needs_two_epsilons():
    (row,) = accuracy_not_decreasing(examples_frame({(0.1, "pgd"): [False, True]}))
    assert row.detail == "not run: needs two or more epsilons" and not row.fired and row.epsilon == 0.1


def test_table_checks_give_one_row_per_check_and_defense_epsilon():
    frame = pd.concat([
        examples_frame({(0.1, "pgd"): [False] * 10, (0.1, "spsa"): [False] * 10}),
        examples_frame({(0.1, "pgd"): [True] * 10, (0.1, "spsa"): [True] * 10}).assign(defense="e"),
    ])
    table = diagnostics_frame(table_checks(frame, gradient_free={"spsa"}))
    assert sorted(map(tuple, table[["defense", "check"]].to_numpy().tolist())) == [
        ("d", "accuracy_not_decreasing"), ("d", "gradient_free_beats_gradient"),
        ("e", "accuracy_not_decreasing"), ("e", "gradient_free_beats_gradient"),
    ]


# ---------------------------------------------------------------------------------------------
# probe checks: an honest linear model raises nothing; a saturated softmax raises the gradient flags


def test_an_honest_linear_model_fires_no_probe_check(linear_probes):
    fired = {name: row.detail for name, row in linear_probes.items() if row.fired}
    assert not fired
    assert not linear_probes["transfer_beats_whitebox"].detail.startswith("not run")


def test_a_saturated_softmax_fires_vanishing_gradients_unbounded_and_transfer(saturated_probes):
    for check in ("vanishing_gradients", "unbounded_attack_fails", "transfer_beats_whitebox"):
        assert saturated_probes[check].fired, saturated_probes[check].detail
    assert "failing: PGD" in saturated_probes["unbounded_attack_fails"].detail  # SPSA's margin loss does not saturate
    assert not saturated_probes["randomized_predictions"].fired


@pytest.mark.parametrize("wrap", [Quantized, Detached], ids=["quantized", "no-autograd"])
def test_quantized_or_detached_targets_have_vanishing_gradients(linear, wrap):
    x, y = labelled_inputs(linear)
    norms, reason = input_gradient_norms(wrap(linear), x, y)
    assert (norms == 0).all() and (reason != "") == (wrap is Detached)
    honest, _ = input_gradient_norms(linear, x, y)
    assert (honest > diagnostics.VANISHING_NORM).all()


def test_attack_not_converged_fires_when_longer_pgd_finds_what_big_steps_jump_over():
    eps = 0.1
    clean = torch.full((1, 1, 2, 2), 0.5)
    target = Bowl(clean + 0.5 * eps, radius=0.8 * eps).eval()
    x, y = clean.repeat(16, 1, 1, 1), torch.zeros(16, dtype=torch.long)
    rows = run_probes(target, x=x, y=y, epsilon=eps, pgd_steps=2)
    assert rows["attack_not_converged"].fired, rows["attack_not_converged"].detail


def test_attack_not_converged_stays_quiet_on_a_linear_model_even_with_few_steps(linear):
    x, y = labelled_inputs(linear)
    rows = run_probes(linear, x=x, y=y, epsilon=0.05, pgd_steps=2)
    assert not rows["attack_not_converged"].fired, rows["attack_not_converged"].detail


def test_randomized_predictions_fire_only_for_undeclared_randomness(linear):
    x, y = labelled_inputs(linear, n=8)
    undeclared = run_probes(Noisy(linear), x=x, y=y, n_examples=8)["randomized_predictions"]
    declared = run_probes(Noisy(linear, randomized=True), x=x, y=y, n_examples=8)["randomized_predictions"]
    assert undeclared.fired and not declared.fired
    assert "declares randomized=True" in declared.detail and "predictions differ on 0" not in declared.detail


def test_transfer_is_not_run_without_a_distinct_undefended_model(linear):
    x, y = labelled_inputs(linear, n=4)
    for undefended in (None, linear):
        row = run_probes(linear, undefended=undefended, x=x, y=y)["transfer_beats_whitebox"]
        assert not row.fired and row.detail.startswith("not run")


def test_probes_are_deterministic_and_sample_at_most_n_examples(linear):
    x, y = labelled_inputs(linear, n=40)
    first = run_probes(Noisy(linear, randomized=True), undefended=linear, x=x, y=y, n_examples=10)
    second = run_probes(Noisy(linear, randomized=True), undefended=linear, x=x, y=y, n_examples=10)
    assert first == second
    assert "on 10 probe examples" in first["attack_not_converged"].detail


def test_probes_are_not_run_without_clean_correct_examples(linear):
    x, y = labelled_inputs(linear, n=4)
    rows = run_probes(linear, x=x, y=(y + 1) % 3)
    assert all(not r.fired and r.detail == "not run: no clean-correct examples" for r in rows.values())


def test_probe_arguments_are_checked(linear):
    x, y = labelled_inputs(linear, n=6)
    with pytest.raises(RobenchError, match="same length"):
        run_probes(linear, x=x, y=y, ids=torch.arange(5))
    with pytest.raises(RobenchError, match="n_examples"):
        run_probes(linear, x=x, y=y, n_examples=0)

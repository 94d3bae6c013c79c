"""Gradient-masking diagnostics: named checks that say, in words, why a robustness number is suspect.

A defense that only hides its gradients looks robust to gradient attacks and to nothing else
(Uesato et al. 2018, the "obscurity" of a defense; Athalye, Carlini, Wagner 2018, obfuscated
gradients). The checks below are the symptoms those papers, and the checklist of Carlini et al.
2019 ("On Evaluating Adversarial Robustness"), list for it:

* frame checks read the examples frame of a finished run (pure pandas):
  ``gradient_free_beats_gradient`` and ``accuracy_not_decreasing``;
* probe checks run small extra attacks on a sample of ``PROBE_EXAMPLES`` clean-correct examples:
  ``unbounded_attack_fails``, ``attack_not_converged``, ``vanishing_gradients``,
  ``randomized_predictions`` and ``transfer_beats_whitebox``.

Every check yields one :class:`Diagnostic` per (defense, epsilon) it ran on, fired or not; a check
that cannot run says why in its detail ("not run: ...") and does not fire. Every proposal of a
probe attack is re-checked by :func:`robench.verify.verify` before it counts.

Thresholds are module constants, documented where they are defined. Paired comparisons (the same
examples under two attacks, or under two epsilons) use the exact one-sided sign test on the
discordant examples (McNemar's exact test): under "neither side is stronger" each discordant
example falls on either side with probability 1/2.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack
from robench.errors import RobenchError
from robench.registry import attacks
from robench.risk import KEYS, WORST_CASE
from robench.target import is_differentiable, is_randomized, logits_in_chunks
from robench.threat import ThreatModel
from robench.verify import predict_correct, verify

log = logging.getLogger(__name__)

#: What a report shows for each check: what it means, why it suggests masking, what to do.
CHECKS: dict[str, str] = {
    "gradient_free_beats_gradient": (
        "A gradient-free attack (SPSA) broke examples that no gradient attack broke: the gradients the "
        "attacks followed do not point where the loss really goes, the 'obscurity' gap of Uesato et al. "
        "(2018). Trust the worst case over all attacks, not the gradient attacks alone, and adapt the "
        "gradient attack (BPDA for non-differentiable steps, EOT for randomness)."
    ),
    "accuracy_not_decreasing": (
        "Robust accuracy did not fall as epsilon grew, although every larger ball contains the smaller "
        "one: the attacks are failing rather than the model resisting. Check the attacks (steps, step "
        "size, BPDA/EOT) before reading the numbers; if the epsilons are very close, widen the grid."
    ),
    "unbounded_attack_fails": (
        "With an epsilon covering the whole data range any input can be turned into any other, so a "
        "working attack must reach ~0% robust accuracy; it did not, so the attack is blocked by the "
        "defense's gradients (or is broken). Use BPDA/EOT or a gradient-free attack, and check the "
        "attack's step size."
    ),
    "attack_not_converged": (
        "PGD with four times the steps, from a fresh random start, broke materially more examples than the base "
        "budget: the base attack had not converged, so its robust accuracy is an overestimate. Raise "
        "the steps and restarts of the suite's gradient attack until the number stops falling."
    ),
    "vanishing_gradients": (
        "The cross-entropy loss has zero, non-finite or vanishingly small input gradients on many "
        "sampled inputs (quantisation, saturated softmax as in defensive distillation): gradient "
        "attacks get no direction. Attack through BPDA, use a margin (logit) loss, or rely on SPSA."
    ),
    "randomized_predictions": (
        "Identical inputs got different predictions across forward passes, but the target does not "
        "declare randomized=True: verification and gradients then see one random draw. Declare the "
        "target randomized so that predictions use a majority over draws and gradients use EOT."
    ),
    "transfer_beats_whitebox": (
        "PGD examples crafted on the undefended model, without any knowledge of the defense, broke "
        "more examples than the white-box attack on the defended target: the white-box gradients are "
        "less useful than a surrogate's, a sign of masking. Attack through BPDA/EOT or a surrogate."
    ),
}

#: Examples the probe checks attack: enough to see a gap of ~10 points, cheap enough to cost about a
#: second per (defense, epsilon) on the digits CNN.
PROBE_EXAMPLES = 32

#: Significance level of every one-sided paired test (sign test on discordant examples).
ALPHA = 0.05

#: gradient_free_beats_gradient fires when the examples broken only by gradient-free attacks are
#: more than this fraction of the clean-correct examples AND outnumber the examples broken only by
#: gradient attacks beyond chance (one-sided sign test, p < ALPHA). Five percent is our judgment,
#: not the paper's: a smaller gap barely moves a robust-accuracy table. The test keeps two attacks
#: that merely break different borderline examples (as happens on honest models) from firing it.
#: At 100 examples with no gradient-only breaks, it takes at least 6 gradient-free-only examples.
GRADIENT_FREE_GAP = 0.05

#: accuracy_not_decreasing: for consecutive epsilons, fires when the larger ball leaves at least as
#: many examples robust as the smaller one while the smaller one's robust accuracy is above this
#: floor (nothing left to fall below it), or when robust accuracy rises significantly (sign test on
#: examples robust only at the larger epsilon versus only at the smaller one, p < ALPHA).
ACCURACY_FLOOR = 0.05

#: unbounded_attack_fails fires when the gradient attack or SPSA at an epsilon covering the whole
#: data range leaves more than this fraction of the probe examples robust (1 of 32 passes).
UNBOUNDED_MAX_ROBUST = 0.05
#: The unbounded gradient attack starts at the clean input (no random start), so that what it
#: achieves comes from the gradients and not from a random image at distance 1.
UNBOUNDED_PGD_STEPS = 20
UNBOUNDED_PGD_REL_STEPSIZE = 0.1
#: A cheap SPSA: large steps (the ball is the whole box), a finite-difference step above the
#: quantisation of 8-bit or 17-level images. On a randomized target it runs every step instead of
#: stopping at the first lucky draw that misclassifies, which the majority vote then overturns
#: (measured on digits, random-resize-pad, 32 examples: robust 0.56 with early stop, 0.03 without).
UNBOUNDED_SPSA = {"steps": 10, "samples": 32, "learning_rate": 0.2, "delta": 0.1}

#: The base PGD budget (the quick suite's: 40 steps, step size 2.5 epsilon / steps as in Madry et
#: al. 2018); attack_not_converged runs PGD with CONVERGENCE_FACTOR times the steps from a fresh
#: random start on the same examples, and fires when the longer attack breaks more than
#: CONVERGENCE_DROP of the probe examples beyond the base AND the examples only it broke outnumber
#: those only the base broke beyond chance (p < ALPHA). The paired test matters for randomized
#: targets, whose majority-vote verification flips borderline examples both ways; on 32 examples
#: it takes at least 5 more broken examples (16 points) to fire.
PGD_STEPS = 40
CONVERGENCE_FACTOR = 4
CONVERGENCE_DROP = 0.05

#: transfer_beats_whitebox fires when PGD on the undefended model (same budget as the base PGD)
#: breaks more than TRANSFER_EXCESS of the probe examples beyond what white-box PGD broke, and the
#: examples only transfer broke outnumber those only white-box broke beyond chance (p < ALPHA).
TRANSFER_EXCESS = 0.05

#: vanishing_gradients: an input-gradient norm below VANISHING_NORM counts as vanished. An honest
#: digits CNN has CE gradient norms of 1e-6 and more on confident clean examples; a softmax that
#: saturates in float32 (distillation-style temperature) or a quantiser gives exactly 0 or a
#: denormal, so 1e-20 separates the two by many orders of magnitude. Fires when more than
#: VANISHING_FRACTION of the sampled inputs (the clean probe examples and one random point in the
#: ball around each, where PGD starts) have vanished or non-finite gradients.
VANISHING_NORM = 1e-20
VANISHING_FRACTION = 0.1

#: randomized_predictions: forward passes per input (the clean probe examples and the base PGD's
#: proposals, which sit near the decision boundary where randomness flips predictions); logits
#: that differ by less than RANDOMNESS_LOGIT_TOLERANCE count as identical (GPU nondeterminism).
RANDOMNESS_PASSES = 8
RANDOMNESS_LOGIT_TOLERANCE = 1e-4

FRAME_CHECKS = ("gradient_free_beats_gradient", "accuracy_not_decreasing")
PROBE_CHECKS = (
    "unbounded_attack_fails", "attack_not_converged", "vanishing_gradients",
    "randomized_predictions", "transfer_beats_whitebox",
)
COLUMNS = ["defense", "epsilon", "check", "fired", "detail"]


@dataclass(frozen=True)
class Diagnostic:
    """One check run on one (defense, epsilon): whether it fired and the numbers behind it."""

    defense: str
    epsilon: float
    check: str
    fired: bool
    detail: str


def diagnostics_frame(diagnostics: Iterable[Diagnostic]) -> pd.DataFrame:
    """One row per check run, columns exactly ``defense, epsilon, check, fired, detail``."""
    rows = [(d.defense, float(d.epsilon), d.check, bool(d.fired), d.detail) for d in diagnostics]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"defense": str, "epsilon": float, "check": str, "fired": bool, "detail": str})


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(X >= wins) for X ~ Binomial(wins + losses, 1/2).

    McNemar's exact test on paired outcomes: only the discordant examples carry information.
    """
    if wins <= 0:
        return 1.0
    return float(stats.binom.sf(wins - 1, wins + losses, 0.5))


def paired(first, second) -> tuple[int, int, float]:
    """Paired comparison of two boolean outcomes on the same examples: how many only ``first``
    has, how many only ``second`` has, and the one-sided sign test that ``first`` has more."""
    first_only = int((first & ~second).sum())
    second_only = int((second & ~first).sum())
    return first_only, second_only, sign_test(first_only, second_only)


# --------------------------------------------------------------------------------------------
# Frame checks


def _group_keys(examples: pd.DataFrame) -> list[str]:
    return [k for k in KEYS if k in examples.columns]


def _label(keys: list[str], values: tuple, varying: set[str]) -> str:
    """Prefix naming model/dataset/norm where the frame holds more than one of them."""
    parts = [f"{k}={v}" for k, v in zip(keys, values) if k in varying]
    return f"[{', '.join(parts)}] " if parts else ""


def _varying(examples: pd.DataFrame) -> set[str]:
    return {k for k in ("model", "dataset", "norm") if k in examples.columns and examples[k].nunique() > 1}


def gradient_free_beats_gradient(examples: pd.DataFrame, *, gradient_free: Collection[str]) -> list[Diagnostic]:
    """Per (defense, epsilon): clean-correct examples broken by a gradient-free attack and by no gradient attack.

    ``gradient_free`` holds the attack labels that use no gradients (SPSA). The gap is the
    "obscurity" of Uesato et al. (2018); see ``GRADIENT_FREE_GAP`` for when it fires.
    """
    _require_columns(examples, ["defense", "epsilon", "attack", "example", "clean_correct", "broken"])
    attacked = examples[examples["attack"] != WORST_CASE]
    keys, varying, free = _group_keys(attacked), _varying(attacked), set(gradient_free)
    found: list[Diagnostic] = []
    for values, group in attacked.groupby(keys, sort=True, dropna=False):
        defense, epsilon = _defense_epsilon(keys, values)
        prefix = _label(keys, values, varying)
        labels = sorted(group["attack"].unique())
        free_labels = [a for a in labels if a in free]
        gradient_labels = [a for a in labels if a not in free]
        if not free_labels or not gradient_labels:
            missing = "gradient-free" if not free_labels else "gradient"
            found.append(Diagnostic(defense, epsilon, "gradient_free_beats_gradient", False,
                                    f"{prefix}not run: needs a {missing} attack in the suite (attacks: {', '.join(labels)})"))
            continue
        correct = group[group["clean_correct"].astype(bool)]
        broken = correct.pivot_table(index="example", columns="attack", values="broken", aggfunc="max").fillna(False).astype(bool)
        n = len(broken)
        if n == 0:
            found.append(Diagnostic(defense, epsilon, "gradient_free_beats_gradient", False,
                                    f"{prefix}not run: no clean-correct examples"))
            continue
        by_free = broken[free_labels].any(axis=1)
        by_gradient = broken[gradient_labels].any(axis=1)
        free_only, gradient_only, p = paired(by_free, by_gradient)
        fired = free_only / n > GRADIENT_FREE_GAP and p < ALPHA
        detail = (
            f"{prefix}{'/'.join(free_labels)} broke {free_only} of {n} clean-correct examples "
            f"({free_only / n:.1%}) that {'/'.join(gradient_labels)} did not; the reverse: {gradient_only}; "
            f"one-sided sign test p={p:.2g}; fires above {GRADIENT_FREE_GAP:.0%} with p < {ALPHA}"
        )
        found.append(Diagnostic(defense, epsilon, "gradient_free_beats_gradient", bool(fired), detail))
    return found


def accuracy_not_decreasing(examples: pd.DataFrame) -> list[Diagnostic]:
    """Per defense and consecutive epsilons: worst-case robust accuracy must fall as the ball grows.

    The balls are nested, so an exact worst case can only lose robust examples as epsilon grows
    (Carlini et al. 2019's checklist). One row per epsilon after the smallest, comparing it with the
    next smaller one on the examples both evaluated; see ``ACCURACY_FLOOR`` for when it fires.
    """
    _require_columns(examples, ["defense", "epsilon", "attack", "example", "clean_correct", "broken"])
    attacked = examples[examples["attack"] != WORST_CASE]
    # the per-example worst case over attacks (risk.worst_case needs columns a saved frame may lack)
    worst = attacked.groupby([*_group_keys(attacked), "example"], sort=False, dropna=False).agg(
        clean_correct=("clean_correct", "first"), broken=("broken", "max")).reset_index()
    keys = [k for k in _group_keys(worst) if k != "epsilon"]
    varying = _varying(worst)
    found: list[Diagnostic] = []
    for values, group in worst.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        defense = str(values[keys.index("defense")])
        prefix = _label(keys, values, varying)
        robust = group.assign(robust=group["clean_correct"].astype(bool) & ~group["broken"].astype(bool))
        by_epsilon = robust.pivot_table(index="example", columns="epsilon", values="robust", aggfunc="max")
        epsilons = sorted(float(e) for e in by_epsilon.columns)
        if len(epsilons) < 2:
            found.append(Diagnostic(defense, epsilons[0], "accuracy_not_decreasing", False,
                                    f"{prefix}not run: needs two or more epsilons"))
            continue
        for small, large in zip(epsilons, epsilons[1:]):
            pair = by_epsilon[[small, large]].dropna().astype(bool)
            n = len(pair)
            if n == 0:
                found.append(Diagnostic(defense, large, "accuracy_not_decreasing", False,
                                        f"{prefix}not run: no examples evaluated at both eps {small:g} and {large:g}"))
                continue
            robust_small, robust_large = int(pair[small].sum()), int(pair[large].sum())
            gained, lost, p = paired(pair[large], pair[small])
            rises = gained > lost and p < ALPHA
            level = robust_large >= robust_small and robust_small / n > ACCURACY_FLOOR
            detail = (
                f"{prefix}worst-case robust accuracy {robust_small / n:.3f} at eps {small:g} -> "
                f"{robust_large / n:.3f} at eps {large:g} ({n} examples; robust only at the larger: {gained}, "
                f"only at the smaller: {lost}; sign test for a rise p={p:.2g})"
            )
            found.append(Diagnostic(defense, large, "accuracy_not_decreasing", bool(rises or level), detail))
    return found


def frame_checks(examples: pd.DataFrame, *, gradient_free: Collection[str]) -> list[Diagnostic]:
    """Both frame checks on a run's examples frame (one row per (defense, ..., attack, example))."""
    return [*gradient_free_beats_gradient(examples, gradient_free=gradient_free), *accuracy_not_decreasing(examples)]


def _require_columns(examples: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in examples.columns]
    if missing:
        raise RobenchError(f"the examples frame lacks column(s) {', '.join(missing)}; pass the examples frame of an evaluation")


def _defense_epsilon(keys: list[str], values: object) -> tuple[str, float]:
    values = values if isinstance(values, tuple) else (values,)
    return str(values[keys.index("defense")]), float(values[keys.index("epsilon")])


# --------------------------------------------------------------------------------------------
# Probe checks


@dataclass
class _Probe:
    """What the probe checks share: the sample, its seeds, and the base white-box attack's result."""

    defense: str
    threat: ThreatModel
    target: nn.Module
    attack_target: nn.Module
    x: Tensor
    y: Tensor
    ids: Tensor
    seed: int
    draws: int
    max_batch: int
    pgd_steps: int
    _base: tuple[Tensor, Tensor] | None = None

    def seeds(self, name: str) -> Tensor:
        key = f"diagnostics|{self.defense}|{float(self.threat.epsilon)!r}|{name}"
        return rng.example_seeds(self.seed, key, self.ids).to(self.x.device)

    def attack(self, name: str, attack: Attack, run_on: nn.Module, threat: ThreatModel) -> tuple[Tensor, Tensor]:
        """Run ``attack`` on ``run_on``; verify the proposals on the real target. Returns (x_adv, broken)."""
        result = attack.run(run_on, self.x, self.y, threat, seeds=self.seeds(name))
        check = verify(self.target, self.x, result.x_adv, self.y, threat, draws=self.draws, max_batch=self.max_batch)
        return result.x_adv.detach(), check.broken

    def pgd(self, *, steps: int, rel_stepsize: float | None = None, **params: object) -> Attack:
        """Foolbox PGD; step size 2.5 epsilon / steps unless given (Madry et al. 2018)."""
        rel_stepsize = 2.5 / steps if rel_stepsize is None else rel_stepsize
        return attacks.get("pgd")(steps=steps, rel_stepsize=rel_stepsize, max_batch=self.max_batch, **params)

    def base(self) -> tuple[Tensor, Tensor]:
        """The base white-box PGD on the (BPDA/EOT-adapted) attack target, computed once."""
        if self._base is None:
            self._base = self.attack("pgd", self.pgd(steps=self.pgd_steps), self.attack_target, self.threat)
        return self._base

    def row(self, check: str, fired: bool, detail: str) -> Diagnostic:
        return Diagnostic(self.defense, float(self.threat.epsilon), check, bool(fired), detail)


def probe_checks(
    *,
    defense: str,
    target: nn.Module,
    attack_target: nn.Module,
    undefended: nn.Module | None,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    seed: int,
    max_batch: int = 4096,
    whitebox_robust: float | None = None,
    clean_correct: Tensor | None = None,
    ids: Tensor | None = None,
    n_examples: int = PROBE_EXAMPLES,
    pgd_steps: int = PGD_STEPS,
) -> list[Diagnostic]:
    """Run the five probe checks for one (defense, epsilon) on up to ``n_examples`` clean-correct examples.

    ``target`` is the defended model as evaluated (it decides every prediction); ``attack_target``
    is what gradient attacks differentiate (the BPDA/EOT-adapted target, or ``target`` itself);
    ``undefended`` is the model without the defense, the surrogate of the transfer check (None, or
    ``target`` itself, skips that check). ``whitebox_robust``, the main run's white-box robust
    accuracy, is only quoted in the transfer detail: the comparison itself is paired, on the probe
    sample. ``clean_correct`` (per row of ``x``) saves a forward pass when the caller has it;
    ``ids`` (per row, default the row positions) key the per-example seeds. The sample is a seeded
    choice that does not depend on ``threat``, so every epsilon probes the same examples.
    """
    if n_examples < 1 or pgd_steps < 1:
        raise RobenchError(f"diagnostics: n_examples and pgd_steps must be >= 1, got {n_examples} and {pgd_steps}")
    from robench.runner import PREDICTION_DRAWS  # here, not at the top: the runner imports this module

    device = next((p.device for p in target.parameters()), x.device)
    draws = PREDICTION_DRAWS if is_randomized(target) else 1
    x, y = x.to(device), y.to(device)
    ids = torch.arange(len(x)) if ids is None else ids.detach().cpu().long()
    if len(ids) != len(x) or len(y) != len(x):
        raise RobenchError(f"diagnostics: x, y and ids must have the same length, got {len(x)}, {len(y)} and {len(ids)}")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(rng.derive_seed(seed, "diagnostics", defense, float(threat.epsilon)))
        if clean_correct is None:
            clean_correct, _ = predict_correct(target, x, y, draws=draws, max_batch=max_batch)
        candidates = clean_correct.to(device).nonzero().flatten()
        if len(candidates) == 0:
            return [Diagnostic(defense, float(threat.epsilon), check, False, "not run: no clean-correct examples")
                    for check in PROBE_CHECKS]
        if len(candidates) > n_examples:
            order = torch.randperm(len(candidates), generator=rng.torch_generator(rng.derive_seed(seed, "diagnostics", defense)))
            candidates = candidates[order[:n_examples].to(device)].sort().values
        probe = _Probe(defense, threat, target, attack_target, x[candidates], y[candidates], ids[candidates.cpu()],
                       seed, draws, max_batch, pgd_steps)
        checks: list[tuple[str, Callable[[_Probe], Diagnostic]]] = [
            ("unbounded_attack_fails", _unbounded_attack_fails),
            ("attack_not_converged", _attack_not_converged),
            ("vanishing_gradients", _vanishing_gradients),
            ("randomized_predictions", _randomized_predictions),
            ("transfer_beats_whitebox", lambda p: _transfer_beats_whitebox(p, undefended, whitebox_robust)),
        ]
        found = []
        for name, check in checks:
            start = time.perf_counter()
            found.append(check(probe))
            log.debug("%s eps=%g %s: %.2fs", defense, threat.epsilon, name, time.perf_counter() - start)
    return found


def unbounded_threat(threat: ThreatModel, shape: tuple[int, ...]) -> ThreatModel:
    """The same norm with a ball that covers the whole data box (L-inf: the range; L2: the diagonal)."""
    lo, hi = threat.bounds
    size = math.prod(shape)
    epsilon = (hi - lo) if threat.norm == "linf" else (hi - lo) * math.sqrt(size)
    return ThreatModel(threat.norm, epsilon, threat.bounds)


def _unbounded_attack_fails(probe: _Probe) -> Diagnostic:
    """Carlini et al. 2019's checklist: unbounded attacks must reach 100% success."""
    big = unbounded_threat(probe.threat, tuple(probe.x.shape[1:]))
    n = len(probe.x)
    pgd = probe.pgd(steps=UNBOUNDED_PGD_STEPS, rel_stepsize=UNBOUNDED_PGD_REL_STEPSIZE, random_start=False)
    _, pgd_broken = probe.attack("unbounded-pgd", pgd, probe.attack_target, big)
    early_stop = not is_randomized(probe.target)
    spsa = attacks.get("spsa")(**UNBOUNDED_SPSA, early_stop=early_stop, max_batch=probe.max_batch)
    _, spsa_broken = probe.attack("unbounded-spsa", spsa, probe.target, big)
    pgd_robust = 1 - pgd_broken.float().mean().item()
    spsa_robust = 1 - spsa_broken.float().mean().item()
    failing = [name for name, r in (("PGD", pgd_robust), ("SPSA", spsa_robust)) if r > UNBOUNDED_MAX_ROBUST]
    detail = (
        f"at {big.norm} eps {big.epsilon:g} (the whole data range) on {n} probe examples: robust accuracy "
        f"{pgd_robust:.3f} under PGD ({UNBOUNDED_PGD_STEPS} steps from the clean input), {spsa_robust:.3f} under SPSA "
        f"({UNBOUNDED_SPSA['steps']} steps); fires above {UNBOUNDED_MAX_ROBUST:.0%}"
        + (f"; failing: {', '.join(failing)}" if failing else "")
    )
    return probe.row("unbounded_attack_fails", bool(failing), detail)


def _attack_not_converged(probe: _Probe) -> Diagnostic:
    """Carlini et al. 2019's checklist: more iterations and restarts must not keep lowering accuracy."""
    _, base_broken = probe.base()
    steps = probe.pgd_steps * CONVERGENCE_FACTOR
    strong = probe.pgd(steps=steps)
    _, strong_broken = probe.attack("pgd-strong", strong, probe.attack_target, probe.threat)
    n = len(probe.x)
    strong_only, base_only, p = paired(strong_broken, base_broken)
    fired = (strong_only - base_only) / n > CONVERGENCE_DROP and p < ALPHA
    detail = (
        f"robust accuracy on {n} probe examples: {1 - base_broken.float().mean().item():.3f} under PGD "
        f"({probe.pgd_steps} steps), {1 - strong_broken.float().mean().item():.3f} under PGD ({steps} steps, "
        f"fresh random start); broken only by the longer: {strong_only}, only by the base: {base_only} "
        f"(sign test p={p:.2g}); fires when the longer breaks more than {CONVERGENCE_DROP:.0%} more with p < {ALPHA}"
    )
    return probe.row("attack_not_converged", fired, detail)


def random_in_ball(threat: ThreatModel, x: Tensor, seeds: Tensor) -> Tensor:
    """One random point of the threat model's ball around each row (PGD's random start), in bounds."""
    shape = tuple(x.shape[1:])
    if threat.norm == "linf":
        u = rng.uniform(seeds, 0, shape, x.dtype)
        return threat.project(x + (2 * u - 1) * threat.epsilon, x)
    g = rng.normal(seeds, 0, shape, x.dtype).flatten(1)
    direction = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    radius = rng.uniform(seeds, 1, (1,), x.dtype) ** (1.0 / g.shape[1])
    return threat.project(x + (threat.epsilon * radius * direction).view_as(x), x)


def input_gradient_norms(target: nn.Module, x: Tensor, y: Tensor, *, max_batch: int = 4096) -> tuple[Tensor, str]:
    """Per-row L2 norm of the cross-entropy loss's input gradient (NaN where it is not finite).

    Returns zeros, with the reason, when the output does not depend on the input through autograd
    (a ``no_grad`` or NumPy step inside the target) or autograd fails.
    """
    norms = []
    for start in range(0, len(x), max_batch):
        rows = x[start : start + max_batch].detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                logits = target(rows)
                if not logits.requires_grad:
                    return torch.zeros(len(x), device=x.device), "the output does not depend on the input through autograd"
                loss = nn.functional.cross_entropy(logits.float(), y[start : start + max_batch], reduction="sum")
                (grad,) = torch.autograd.grad(loss, rows, allow_unused=True)
        except RuntimeError as exc:
            return torch.zeros(len(x), device=x.device), f"autograd failed ({str(exc).splitlines()[0][:80]})"
        if grad is None:
            return torch.zeros(len(x), device=x.device), "the loss does not depend on the input through autograd"
        flat = grad.detach().flatten(1).double()
        norm = flat.norm(dim=1)
        norms.append(torch.where(torch.isfinite(flat).all(dim=1), norm, torch.full_like(norm, math.nan)))
    return torch.cat(norms), ""


def _vanishing_gradients(probe: _Probe) -> Diagnostic:
    """Athalye et al. 2018 (shattered gradients); Carlini & Wagner 2016 (distillation's saturated softmax)."""
    inputs = torch.cat([probe.x, random_in_ball(probe.threat, probe.x, probe.seeds("gradient-start"))])
    labels = torch.cat([probe.y, probe.y])
    norms, reason = input_gradient_norms(probe.target, inputs, labels, max_batch=probe.max_batch)
    bad = ~torch.isfinite(norms)
    vanished = ~bad & (norms < VANISHING_NORM)
    n = len(inputs)
    fraction = (vanished | bad).float().mean().item()
    finite = norms[~bad]
    median = f"{finite.median().item():.2g}" if len(finite) else "n/a"
    detail = (
        f"CE input gradients of the raw target on {n} inputs (probe examples and random points in the ball): "
        f"{int(vanished.sum())} below {VANISHING_NORM:g}, {int(bad.sum())} non-finite, median norm {median}"
        + (f" ({reason})" if reason else "")
        + f"; fires above {VANISHING_FRACTION:.0%}"
        + ("" if is_differentiable(probe.target) else "; the target declares differentiable=False, so gradient attacks use BPDA")
    )
    return probe.row("vanishing_gradients", fraction > VANISHING_FRACTION, detail)


@torch.no_grad()
def _randomized_predictions(probe: _Probe) -> Diagnostic:
    """Athalye et al. 2018 (stochastic gradients, EOT): randomness must be declared to be handled."""
    x_adv, _ = probe.base()
    inputs = torch.cat([probe.x, x_adv])
    logits = torch.stack([logits_in_chunks(probe.target, inputs, probe.max_batch).float() for _ in range(RANDOMNESS_PASSES)])
    spread = (logits - logits[0]).abs().flatten(2).amax(dim=2)  # (passes, inputs)
    differs = (spread > RANDOMNESS_LOGIT_TOLERANCE).any(dim=0)
    predictions = logits.argmax(dim=2)
    flips = ((predictions != predictions[0]).any(dim=0) & differs)
    n, n_flips = len(inputs), int(flips.sum())
    declared = is_randomized(probe.target)
    detail = (
        f"{RANDOMNESS_PASSES} forward passes of {n} inputs (probe examples and base PGD proposals): "
        f"predictions differ on {n_flips}, logits on {int(differs.sum())} (largest difference {spread.max().item():.3g}); "
        + ("the target declares randomized=True, so predictions are majority votes and gradients use EOT"
           if declared else "the target does not declare randomized")
    )
    if declared and not bool(differs.any()):
        detail += "; but its passes were identical: is its randomness active?"
    return probe.row("randomized_predictions", n_flips > 0 and not declared, detail)


def _transfer_beats_whitebox(probe: _Probe, undefended: nn.Module | None, whitebox_robust: float | None) -> Diagnostic:
    """Athalye et al. 2018; Carlini et al. 2019's checklist: a transfer attack must not beat white-box."""
    if undefended is None or undefended is probe.target:
        return probe.row("transfer_beats_whitebox", False, "not run: no undefended model distinct from the target")
    _, base_broken = probe.base()
    _, transfer_broken = probe.attack("transfer-pgd", probe.pgd(steps=probe.pgd_steps), undefended, probe.threat)
    n = len(probe.x)
    transfer_only, whitebox_only, p = paired(transfer_broken, base_broken)
    excess = int(transfer_broken.sum()) - int(base_broken.sum())
    fired = excess / n > TRANSFER_EXCESS and p < ALPHA
    detail = (
        f"on {n} probe examples: PGD ({probe.pgd_steps} steps) on the undefended model broke {int(transfer_broken.sum())}, "
        f"white-box PGD on the target broke {int(base_broken.sum())} (transfer only: {transfer_only}, white-box only: "
        f"{whitebox_only}; sign test p={p:.2g}); fires when transfer breaks more than {TRANSFER_EXCESS:.0%} more "
        f"with p < {ALPHA}"
    )
    if whitebox_robust is not None:
        detail += f"; the main run's white-box robust accuracy: {whitebox_robust:.3f}"
    return probe.row("transfer_beats_whitebox", fired, detail)

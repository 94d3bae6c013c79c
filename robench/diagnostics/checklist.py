"""The rest of the automatable checklist (Carlini et al. 2019, Sec. 5; Athalye et al. 2018, Sec. 3).

Each check pits one more attack, or the same attack with other settings, against the base white-box
PGD of the probe (:mod:`.probes`), on the same probe examples, every proposal verified on the real
target. "Beats" means a paired comparison: the examples only the challenger broke outnumber those
only the base broke by more than ``BEAT_EXCESS`` of the sample AND beyond chance (one-sided sign
test, p < ALPHA), so two attacks that merely break different borderline examples stay quiet.
The random and decision-based searches run only on the examples the base PGD left robust (the
only ones where they can beat it; the searches cost thousands of queries per example) and fire
when they break more than ``BEAT_EXCESS`` of the probe sample there. The sensitivity checks instead ask whether another setting moves robust accuracy outside the base's
Clopper-Pearson interval, which is what the checklist means by "the number is not stable".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from robench import rng
from robench.attacks.base import Attack
from robench.diagnostics.probes import Probe
from robench.diagnostics.registry import ALPHA, Finding, check
from robench.registry import attacks
from robench.stats import clopper_pearson, paired
from robench.target import NoGradient, logits_in_chunks, loss_and_gradient

#: A challenger "beats" the base when it breaks more than this fraction of the probe examples
#: beyond what the base broke, with p < ALPHA (on 32 examples: at least 5 more, none the other way).
BEAT_EXCESS = 0.05

#: random_search_beats_attacks: points per probe example (Carlini et al. 2019 suggest ~10^4)
RANDOM_SEARCH_SAMPLES = 10_000

#: hard_label_beats_gradient: a small HopSkipJump budget (foolbox's defaults are 64 steps and up
#: to 10,000 gradient-estimation queries per step, minutes per example)
HSJ = {"steps": 10, "initial_gradient_eval_steps": 50, "max_gradient_eval_steps": 200}

#: gradient_mismatch: antithetic Rademacher pairs of the finite-difference estimate per input, its
#: step (a fraction of the ball's L-inf radius: wide enough to cross the quantisation of a
#: piecewise-constant defense, so the estimate sees the slope an attack inside the ball sees), and
#: the median cosine below which the attack's gradient is taken to point nowhere near the loss's
#: slope. For a linear loss the estimate's cosine with the truth is about sqrt(K / (K + d)): 0.82 on
#: 8 x 8 inputs, 0.37 on 28 x 28, far above 0.1; unrelated directions give a median near 0.
FD_PAIRS = 128
FD_STEP = 0.5
MIN_COSINE = 0.1

#: restart_sensitivity: fresh random starts of the base PGD
RESTARTS = 4
#: step_size_sensitivity: multiples of the base PGD's step size
STEP_FACTORS = (0.25, 4.0)
#: targeted_beats_untargeted: target classes of APGD-T (AutoAttack uses 9; 3 keeps the probe cheap)
TARGET_CLASSES = 3


def _beats(probe: Probe, challenger: Tensor, base: Tensor) -> tuple[bool, str]:
    """The paired rule of this module, and its numbers for the detail."""
    n = len(probe.x)
    only, base_only, p = paired(challenger, base)
    fired = (only - base_only) / n > BEAT_EXCESS and p < ALPHA
    return fired, (f"broken only by it: {only}, only by the base PGD ({probe.pgd_steps} steps): {base_only} "
                   f"(sign test p={p:.2g}); fires when it breaks more than {BEAT_EXCESS:.0%} more with p < {ALPHA}")


def _robust(broken: Tensor) -> float:
    return 1 - broken.float().mean().item()


def _interval(broken: Tensor) -> tuple[float, float]:
    """The 95% Clopper-Pearson interval of the robust accuracy ``broken`` leaves."""
    low, high = clopper_pearson(int((~broken).sum()), len(broken))
    return float(low), float(high)


@check("single_step_beats_iterative", kind="probe", sentence=(
    "A single gradient step (FGSM) broke examples that 40 steps of PGD did not: an iterative attack "
    "must be at least as strong as its first step, so the iterations are being misled (a noisy or "
    "masked loss surface). Trust the worst case, and check the attack's gradients and step size."
))
def _single_step_beats_iterative(probe: Probe) -> Finding:
    """Carlini et al. 2019, Sec. 5.2: iterative attacks should be strictly stronger than single-step ones."""
    _, base = probe.base()
    fgsm = probe.pgd(steps=1, rel_stepsize=1.0, random_start=False)
    _, broken = probe.attack("fgsm", fgsm, probe.attack_target, probe.threat)
    fired, rule = _beats(probe, broken, base)
    detail = f"on {len(probe.x)} probe examples FGSM (one step of epsilon) left robust accuracy {_robust(broken):.3f}, " \
             f"the base PGD {_robust(base):.3f}; {rule}"
    return probe.finding(fired, detail)


@check("random_search_beats_attacks", kind="probe", sentence=(
    "Random points of the ball, drawn with no knowledge of the model, broke examples that the "
    "gradient attack did not: the attack is being misled, since blind sampling cannot be stronger "
    "than a working search. Use gradient-free attacks and BPDA/EOT, and report the worst case."
))
def _random_search_beats_attacks(probe: Probe) -> Finding:
    """Carlini et al. 2019, Sec. 5.2: random sampling must not find adversarial examples the attacks missed.

    The search runs only on the probe examples the base PGD left robust (on the others it cannot
    beat the attack), so it costs ``RANDOM_SEARCH_SAMPLES`` forward rows per such example. It fires
    when it breaks more than ``BEAT_EXCESS`` of the probe examples there: on a deterministic target
    every such break is a verified point the gradient attack walked past.
    """
    where = probe.threat.ball.extreme_points_are
    search = attacks.get("random-search")(samples=RANDOM_SEARCH_SAMPLES, max_batch=probe.max_batch)
    return _where_base_failed(probe, "random-search", search, f"{RANDOM_SEARCH_SAMPLES:,} random points on the ball's {where}")


@check("hard_label_beats_gradient", kind="probe", sentence=(
    "A decision-based attack, which sees only the predicted class, broke examples that the gradient "
    "attack did not: the decisions are not robust, the gradients are hiding it. Add a gradient-free "
    "or decision-based attack to the suite and adapt the gradient attack (BPDA, EOT)."
))
def _hard_label_beats_gradient(probe: Probe) -> Finding:
    """Carlini et al. 2019, Sec. 5.2 (try gradient-free and hard-label attacks); Brendel et al. 2018.

    Like the random search, it runs only where the base PGD failed and fires above ``BEAT_EXCESS``.
    Not on a randomized target: its binary search on the decision boundary needs decisions that do
    not change between two looks at the same point.
    """
    if probe.tags.randomized:
        return probe.finding(False, "not run: the target is randomized, and a decision-based attack's boundary search "
                                    "needs deterministic decisions")
    return _where_base_failed(probe, "hop-skip-jump", attacks.get("hop-skip-jump")(**HSJ, max_batch=probe.max_batch),
                              "HopSkipJump (" + ", ".join(f"{k}={v}" for k, v in HSJ.items()) + ")")


def _where_base_failed(probe: Probe, name: str, attack: Attack, described: str) -> Finding:
    """Run ``attack`` on the real target, on the probe examples the base PGD left robust; fire
    when it breaks more than ``BEAT_EXCESS`` of the probe examples there."""
    _, base = probe.base()
    n = len(probe.x)
    robust = (~base).nonzero().flatten()
    if len(robust) == 0:
        return probe.finding(False, f"not run: the base PGD broke all {n} probe examples")
    _, broken = probe.attack(name, attack, probe.declared_target, probe.threat, rows=robust)
    found = int(broken.sum())
    detail = (f"{described} on the {len(robust)} of {n} probe examples the base PGD ({probe.pgd_steps} steps) left "
              f"robust: {found} broken; fires above {BEAT_EXCESS:.0%} of the probe examples")
    return probe.finding(found / n > BEAT_EXCESS, detail)


@torch.no_grad()
def finite_difference_gradient(probe: Probe, x: Tensor, y: Tensor, seeds: Tensor) -> Tensor:
    """Antithetic Rademacher estimate of the real target's cross-entropy gradient at each row of ``x``
    (float64 loss; step ``FD_STEP`` times the ball's L-inf radius, or its L2 radius per coordinate)."""
    shape, d = tuple(x.shape[1:]), math.prod(x.shape[1:])
    step = FD_STEP * probe.threat.step_scale(d)
    u = rng.stream(seeds).rademacher((FD_PAIRS, *shape), x.dtype)  # (n, K, *shape)
    plus = (x[:, None] + step * u).reshape(-1, *shape)
    minus = (x[:, None] - step * u).reshape(-1, *shape)
    labels = y.repeat_interleave(FD_PAIRS)

    def loss(points: Tensor) -> Tensor:
        logits = logits_in_chunks(probe.target, points, probe.max_batch).double()
        return F.cross_entropy(logits, labels, reduction="none").view(len(x), FD_PAIRS)

    difference = (loss(plus) - loss(minus)) / (2 * step)  # (n, K)
    return (difference.view(len(x), FD_PAIRS, *[1] * len(shape)) * u.double()).mean(dim=1)


@check("gradient_mismatch", kind="probe", sentence=(
    "The gradient the attack follows (through BPDA, EOT or as it is) points nowhere near the slope "
    "of the real model's loss, measured by finite differences: a wrong BPDA approximation or a "
    "masked gradient. Fix the backward pass (a better BPDA stand-in) or rely on gradient-free attacks."
))
def _gradient_mismatch(probe: Probe) -> Finding:
    """Athalye et al. 2018, Sec. 4.1 (BPDA must approximate the true gradient); Carlini et al. 2019, Sec. 5.2."""
    inputs, labels = probe.with_random_starts()
    try:
        _, grad, _ = loss_and_gradient(probe.attack_target, inputs, labels, max_batch=probe.max_batch)
    except NoGradient as exc:
        return probe.finding(False, f"not run: the attack target has no gradient ({exc})")
    seeds = torch.cat([probe.seeds("fd-clean"), probe.seeds("fd-start")])
    estimate = finite_difference_gradient(probe, inputs, labels, seeds).flatten(1)
    attack = grad.detach().double().flatten(1)
    sloped = estimate.norm(dim=1) > 0
    n, n_sloped = len(inputs), int(sloped.sum())
    if n_sloped == 0:
        return probe.finding(False, f"not run: the loss did not change under any of the {FD_PAIRS} finite-difference "
                                    f"pairs of the {n} inputs (flat at this scale)")
    a, e = attack[sloped], estimate[sloped]
    cosine = torch.nan_to_num((a * e).sum(1) / (a.norm(dim=1) * e.norm(dim=1)).clamp_min(1e-300), nan=0.0)
    median = cosine.median().item()
    detail = (
        f"cosine between the attack's gradient and a finite-difference estimate of the real loss's gradient "
        f"({FD_PAIRS} antithetic pairs, step {FD_STEP:g} x the ball's radius) on {n_sloped} of {n} inputs with a "
        f"measurable slope: median {median:.3f}, {int((cosine <= 0).sum())} at or below 0; fires below {MIN_COSINE:g}"
        + (" (the target is randomized: the estimate averages single draws)" if probe.tags.randomized else "")
    )
    return probe.finding(median < MIN_COSINE, detail)


@check("restart_sensitivity", kind="probe", sentence=(
    "PGD with more random restarts (each verified) broke significantly more examples than the base "
    "attack: the number depends on where the attack starts, so the base attack is not finding "
    "the worst case. Use several restarts (and more steps) until the number stops falling."
))
def _restart_sensitivity(probe: Probe) -> Finding:
    """Carlini et al. 2019, Sec. 5.2: robustness should not change materially with random restarts.

    The paired rule of this module (``_beats``: the restarts break more than ``BEAT_EXCESS`` more of
    the probe examples than the base PGD, sign test p < ALPHA), not "below the base's interval": with
    one robust example of 32 the interval's lower end is 0.0008, so a single extra break fired
    although one example is no evidence (its sign-test p is 0.5)."""
    _, base = probe.base()
    low, high = _interval(base)
    # independent runs, each verified on the real target: PGD's own restarts skip the examples its
    # (BPDA/EOT) attack target already calls broken, which the real target may not
    broken = base.clone()
    for restart in range(RESTARTS):
        _, again = probe.attack(f"pgd-restart-{restart}", probe.pgd(steps=probe.pgd_steps), probe.attack_target, probe.threat)
        broken |= again
    robust = _robust(broken)
    fired, rule = _beats(probe, broken, base)
    detail = (f"on {len(probe.x)} probe examples the base PGD and {RESTARTS} more runs from fresh random starts left robust "
              f"accuracy {robust:.3f}; the base PGD {_robust(base):.3f}, 95% interval [{low:.3f}, {high:.3f}]; {rule}")
    return probe.finding(fired, detail)


@check("step_size_sensitivity", kind="probe", sentence=(
    "PGD with another step size broke significantly more examples than the base attack: the base "
    "step size was poorly chosen for this model, so its number overstates robustness. Tune the "
    "step size (or use APGD, which adapts it)."
))
def _step_size_sensitivity(probe: Probe) -> Finding:
    """Carlini et al. 2019, Sec. 5.2: try several step sizes (the hyperparameters of the attack).

    Fires when some step size beats the base by the paired rule (``_beats``), as restarts do."""
    _, base = probe.base()
    low, high = _interval(base)
    base_rel = 2.5 / probe.pgd_steps
    results, fired, rules = [], False, []
    for factor in STEP_FACTORS:
        pgd = probe.pgd(steps=probe.pgd_steps, rel_stepsize=base_rel * factor)
        _, broken = probe.attack(f"pgd-step-{factor:g}", pgd, probe.attack_target, probe.threat)
        results.append((factor, _robust(broken)))
        beats, rule = _beats(probe, broken, base)
        fired, rules = fired or beats, [*rules, f"at {factor:g}x: {rule}"]
    shown = ", ".join(f"{r:.3f} at {f:g}x" for f, r in results)
    detail = (f"on {len(probe.x)} probe examples PGD ({probe.pgd_steps} steps) left robust accuracy {shown} the base step "
              f"size; the base {_robust(base):.3f}, 95% interval [{low:.3f}, {high:.3f}]; " + "; ".join(rules))
    return probe.finding(fired, detail)


@check("targeted_beats_untargeted", kind="probe", sentence=(
    "A targeted attack, which must reach one chosen class, broke examples that the untargeted attack "
    "(free to reach any class) did not: the untargeted attack's loss is misleading it (often a "
    "saturated cross-entropy). Add a margin-loss or targeted attack (APGD-T) to the suite."
))
def _targeted_beats_untargeted(probe: Probe) -> Finding:
    """Carlini et al. 2019, Sec. 5.2: untargeted attacks should be at least as strong as targeted ones."""
    _, base = probe.base()
    targeted = attacks.get("apgd-t")(steps=probe.pgd_steps, n_target_classes=TARGET_CLASSES, max_batch=probe.max_batch)
    _, broken = probe.attack("apgd-t", targeted, probe.attack_target, probe.threat)
    fired, rule = _beats(probe, broken, base)
    detail = f"APGD-T ({probe.pgd_steps} steps, the top {TARGET_CLASSES} other classes as targets) on {len(probe.x)} probe examples left robust " \
             f"accuracy {_robust(broken):.3f}, the untargeted base PGD {_robust(base):.3f}; {rule}"
    return probe.finding(fired, detail)

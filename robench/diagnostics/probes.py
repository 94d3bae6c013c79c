"""Probe checks: small extra attacks on a sample of clean-correct examples that expose masking.

Every probe attack goes through :func:`robench.verify.attack_and_verify`: it runs on the attack
target (BPDA/EOT-adapted, or a transfer surrogate) and every proposal is re-checked on the real
target before it counts.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack
from robench.batching import chunk_rows
from robench.diagnostics.registry import ALPHA, Diagnostic, Finding, check, registered
from robench.errors import RobenchError
from robench.registry import attacks
from robench.stats import paired
from robench.tags import Declared, TargetTags, target_tags
from robench.target import NoGradient, logits_in_chunks, loss_and_gradient
from robench.threat import ThreatModel
from robench.verify import PREDICTION_DRAWS, attack_and_verify, predict_correct

log = logging.getLogger(__name__)

#: begins the part of a fired check's detail that says the harness already handles the symptom
#: (a report shows such a row as a note, not as a question about the number)
HANDLED = "handled:"

#: Examples the probe checks attack: enough to see a gap of ~10 points, cheap enough to cost about a
#: second per (defense, epsilon) on the digits CNN.
PROBE_EXAMPLES = 32
#: on a randomized defense, where every probe prediction is a vote over draws and gradients are EOT
#: averages: half as many examples
RANDOMIZED_PROBE_EXAMPLES = 16
#: EOT draws per gradient in the probes of a randomized defense: fewer than a suite's (the probes
#: ask "is something off?", cheaply)
PROBE_EOT_SAMPLES = 4


def probe_examples(randomized: bool) -> int:
    """How many clean-correct examples a probe unit samples."""
    return RANDOMIZED_PROBE_EXAMPLES if randomized else PROBE_EXAMPLES

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


@dataclass
class Probe:
    """What the probe checks share: the sample, its seeds, the models, and the base white-box attack's result."""

    defense: str
    threat: ThreatModel
    target: nn.Module
    attack_target: nn.Module
    undefended: nn.Module | None
    x: Tensor
    y: Tensor
    ids: Tensor
    seed: int
    draws: int
    max_batch: int
    pgd_steps: int
    #: the target's tags, as the run computed them (card flags included)
    tags: TargetTags = field(default_factory=TargetTags)
    _base: tuple[Tensor, Tensor] | None = None

    @property
    def declared_target(self) -> nn.Module:
        """The target with its tags declared, for attacks that read them (no walk of its tree)."""
        return Declared(self.target, self.tags).eval()

    def seeds(self, name: str) -> Tensor:
        key = f"diagnostics|{self.defense}|{float(self.threat.epsilon)!r}|{name}"
        return rng.example_seeds(self.seed, key, self.ids).to(self.x.device)

    def attack(self, name: str, attack: Attack, run_on: nn.Module, threat: ThreatModel,
               rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run ``attack`` on ``run_on`` (on the probe examples ``rows``, default all); verify the
        proposals on the real target. Returns (x_adv, broken) for those rows."""
        x, y, seeds = self.x, self.y, self.seeds(name)
        if rows is not None:
            x, y, seeds = x[rows], y[rows], seeds[rows]
        result, verified = attack_and_verify(attack, self.target, x, y, threat, seeds=seeds,
                                             attack_target=run_on, draws=self.draws, max_batch=self.max_batch,
                                             tags=self.tags)
        return result.x_adv.detach(), verified.broken

    def pgd(self, *, steps: int, rel_stepsize: float | None = None, **params: object) -> Attack:
        """Foolbox PGD; step size 2.5 epsilon / steps unless given (Madry et al. 2018)."""
        rel_stepsize = 2.5 / steps if rel_stepsize is None else rel_stepsize
        return attacks.get("pgd")(steps=steps, rel_stepsize=rel_stepsize, max_batch=self.max_batch, **params)

    def base(self) -> tuple[Tensor, Tensor]:
        """The base white-box PGD on the (BPDA/EOT-adapted) attack target, computed once."""
        if self._base is None:
            self._base = self.attack("pgd", self.pgd(steps=self.pgd_steps), self.attack_target, self.threat)
        return self._base

    def with_random_starts(self) -> tuple[Tensor, Tensor]:
        """The probe examples and, after them, one PGD random start around each (from the probe's own
        seeds), with their labels: where the gradient checks look."""
        start = self.threat.random_start(self.x, stream=rng.stream(self.seeds("gradient-start")))
        return torch.cat([self.x, start]), torch.cat([self.y, self.y])

    def finding(self, fired: bool, detail: str) -> Finding:
        return Finding(self.defense, float(self.threat.epsilon), fired, detail)


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
    max_batch: int | None = None,
    clean_correct: Tensor | None = None,
    ids: Tensor | None = None,
    n_examples: int = PROBE_EXAMPLES,
    pgd_steps: int = PGD_STEPS,
    tags: TargetTags | None = None,
) -> list[Diagnostic]:
    """Run every registered probe check for one (defense, epsilon) on up to ``n_examples`` clean-correct examples.

    ``target`` is the defended model as evaluated (it decides every prediction); ``attack_target``
    is what gradient attacks differentiate (the BPDA/EOT-adapted target, or ``target`` itself);
    ``undefended`` is the model without the defense, the surrogate of the transfer check (None, or
    ``target`` itself, skips that check). ``clean_correct`` (per row of ``x``) saves a forward pass when the caller has it;
    ``ids`` (per row, default the row positions) key the per-example seeds. The sample is a seeded
    choice that does not depend on ``threat``, so every epsilon probes the same examples.
    """
    if n_examples < 1 or pgd_steps < 1:
        raise RobenchError(f"diagnostics: n_examples and pgd_steps must be >= 1, got {n_examples} and {pgd_steps}")
    device = next((p.device for p in target.parameters()), x.device)
    tags = target_tags(target) if tags is None else tags
    draws = PREDICTION_DRAWS if tags.randomized else 1
    max_batch = chunk_rows(x) if max_batch is None else max_batch
    x, y = x.to(device), y.to(device)
    ids = torch.arange(len(x)) if ids is None else ids.detach().cpu().long()
    if len(ids) != len(x) or len(y) != len(x):
        raise RobenchError(f"diagnostics: x, y and ids must have the same length, got {len(x)}, {len(y)} and {len(ids)}")
    max_batch = max_batch or chunk_rows(x)
    checks = registered("probe")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(rng.derive_seed(seed, "diagnostics", defense, float(threat.epsilon)))
        if clean_correct is None:
            clean_correct, _ = predict_correct(target, x, y, draws=draws, max_batch=max_batch, tags=tags)
        candidates = clean_correct.to(device).nonzero().flatten()
        if len(candidates) == 0:
            return [Diagnostic(defense, float(threat.epsilon), c.name, False, "not run: no clean-correct examples")
                    for c in checks]
        if len(candidates) > n_examples:
            order = torch.randperm(len(candidates), generator=rng.torch_generator(rng.derive_seed(seed, "diagnostics", defense)))
            candidates = candidates[order[:n_examples].to(device)].sort().values
        probe = Probe(defense, threat, target, attack_target, undefended, x[candidates], y[candidates],
                       ids[candidates.cpu()], seed, draws, max_batch, pgd_steps, tags)
        found: list[Diagnostic] = []
        for c in checks:
            start = time.perf_counter()
            found.extend(c.run(probe))
            log.debug("%s eps=%g %s: %.2fs", defense, threat.epsilon, c.name, time.perf_counter() - start)
    return found


def unbounded_threat(threat: ThreatModel, shape: tuple[int, ...]) -> ThreatModel:
    """The same norm with a ball that covers the whole data box (L-inf: the range; L2: the diagonal)."""
    lo, hi = threat.bounds
    size = math.prod(shape)
    epsilon = threat.ball.covering_radius(hi - lo, size)
    return ThreatModel(threat.norm, epsilon, threat.bounds)


def input_gradient_norms(target: nn.Module, x: Tensor, y: Tensor, *, max_batch: int | None = None) -> tuple[Tensor, str]:
    """Per-row L2 norm of the cross-entropy loss's input gradient (NaN where it is not finite).

    Returns zeros, with the reason, when the output does not depend on the input through autograd
    (a ``no_grad`` or NumPy step inside the target) or autograd fails.
    """
    try:
        _, grad, _ = loss_and_gradient(target, x, y, max_batch=chunk_rows(x) if max_batch is None else max_batch)
    except NoGradient as exc:
        return torch.zeros(len(x), device=x.device), str(exc)
    except RuntimeError as exc:
        return torch.zeros(len(x), device=x.device), f"autograd failed ({str(exc).splitlines()[0][:80]})"
    flat = grad.detach().flatten(1).double()
    norm = flat.norm(dim=1)
    return torch.where(torch.isfinite(flat).all(dim=1), norm, torch.full_like(norm, math.nan)), ""


# The checks run in the order they are declared here.


@check("unbounded_attack_fails", kind="probe", sentence=(
    "With an epsilon covering the whole data range any input can be turned into any other, so a "
    "working attack must reach ~0% robust accuracy; it did not, so the attack is blocked by the "
    "defense's gradients (or is broken). Use BPDA/EOT or a gradient-free attack, and check the "
    "attack's step size."
))
def _unbounded_attack_fails(probe: Probe) -> Finding:
    """Carlini et al. 2019's checklist: unbounded attacks must reach 100% success."""
    big = unbounded_threat(probe.threat, tuple(probe.x.shape[1:]))
    n = len(probe.x)
    pgd = probe.pgd(steps=UNBOUNDED_PGD_STEPS, rel_stepsize=UNBOUNDED_PGD_REL_STEPSIZE, random_start=False)
    _, pgd_broken = probe.attack("unbounded-pgd", pgd, probe.attack_target, big)
    early_stop = not probe.tags.randomized
    spsa = attacks.get("spsa")(**UNBOUNDED_SPSA, early_stop=early_stop, max_batch=probe.max_batch)
    _, spsa_broken = probe.attack("unbounded-spsa", spsa, probe.declared_target, big)
    pgd_robust = 1 - pgd_broken.float().mean().item()
    spsa_robust = 1 - spsa_broken.float().mean().item()
    failing = [name for name, r in (("PGD", pgd_robust), ("SPSA", spsa_robust)) if r > UNBOUNDED_MAX_ROBUST]
    detail = (
        f"at {big.norm} eps {big.epsilon:g} (the whole data range) on {n} probe examples: robust accuracy "
        f"{pgd_robust:.3f} under PGD ({UNBOUNDED_PGD_STEPS} steps from the clean input), {spsa_robust:.3f} under SPSA "
        f"({UNBOUNDED_SPSA['steps']} steps); fires above {UNBOUNDED_MAX_ROBUST:.0%}"
        + (f"; failing: {', '.join(failing)}" if failing else "")
    )
    return probe.finding(bool(failing), detail)


@check("attack_not_converged", kind="probe", sentence=(
    "PGD with four times the steps, from a fresh random start, broke materially more examples than the base "
    "budget: the base attack had not converged, so its robust accuracy is an overestimate. Raise "
    "the steps and restarts of the suite's gradient attack until the number stops falling."
))
def _attack_not_converged(probe: Probe) -> Finding:
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
    return probe.finding(fired, detail)


@check("vanishing_gradients", kind="probe", sentence=(
    "The cross-entropy loss has zero, non-finite or vanishingly small input gradients on many "
    "sampled inputs (quantisation, saturated softmax as in defensive distillation): gradient "
    "attacks get no direction. Attack through BPDA, use a margin (logit) loss, or rely on SPSA."
))
def _vanishing_gradients(probe: Probe) -> Finding:
    """Athalye et al. 2018 (shattered gradients); Carlini & Wagner 2016 (distillation's saturated softmax)."""
    inputs, labels = probe.with_random_starts()
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
        + ("" if probe.tags.differentiable else f"; {HANDLED} the target declares differentiable=False, so gradient attacks use BPDA")
    )
    return probe.finding(fraction > VANISHING_FRACTION, detail)


@check("randomized_predictions", kind="probe", sentence=(
    "Identical inputs got different predictions across forward passes, but the target does not "
    "declare randomized=True: verification and gradients then see one random draw. Declare the "
    "target randomized so that predictions use a majority over draws and gradients use EOT."
))
@torch.no_grad()
def _randomized_predictions(probe: Probe) -> Finding:
    """Athalye et al. 2018 (stochastic gradients, EOT): randomness must be declared to be handled."""
    x_adv, _ = probe.base()
    inputs = torch.cat([probe.x, x_adv])
    logits = torch.stack([logits_in_chunks(probe.target, inputs, probe.max_batch).float() for _ in range(RANDOMNESS_PASSES)])
    spread = (logits - logits[0]).abs().flatten(2).amax(dim=2)  # (passes, inputs)
    differs = (spread > RANDOMNESS_LOGIT_TOLERANCE).any(dim=0)
    predictions = logits.argmax(dim=2)
    flips = ((predictions != predictions[0]).any(dim=0) & differs)
    n, n_flips = len(inputs), int(flips.sum())
    declared = probe.tags.randomized
    detail = (
        f"{RANDOMNESS_PASSES} forward passes of {n} inputs (probe examples and base PGD proposals): "
        f"predictions differ on {n_flips}, logits on {int(differs.sum())} (largest difference {spread.max().item():.3g}); "
        + ("the target declares randomized=True, so predictions are majority votes and gradients use EOT"
           if declared else "the target does not declare randomized")
    )
    if declared and not bool(differs.any()):
        detail += "; but its passes were identical: is its randomness active?"
    return probe.finding(n_flips > 0 and not declared, detail)


@check("transfer_beats_whitebox", kind="probe", sentence=(
    "PGD examples crafted on the undefended model, without any knowledge of the defense, broke "
    "more examples than the white-box attack on the defended target: the white-box gradients are "
    "less useful than a surrogate's, a sign of masking. Attack through BPDA/EOT or a surrogate."
))
def _transfer_beats_whitebox(probe: Probe) -> Finding:
    """Athalye et al. 2018; Carlini et al. 2019's checklist: a transfer attack must not beat white-box."""
    if probe.undefended is None or probe.undefended is probe.target:
        return probe.finding(False, "not run: no undefended model distinct from the target")
    _, base_broken = probe.base()
    _, transfer_broken = probe.attack("transfer-pgd", probe.pgd(steps=probe.pgd_steps), probe.undefended, probe.threat)
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
    return probe.finding(fired, detail)

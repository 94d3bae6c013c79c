"""One work unit, start to finish: clean predictions, attack or certify, verify, one row per example.

A unit's kind (``robench.plan.UnitKind``) says what runs; attack, cascade and certify units write
their rows through one builder (:func:`example_rows`, robench.schema's columns). Each attack unit
attacks only the examples its defense classifies correctly (AutoAttack's
convention: an example already misclassified is already broken) and counts a break only through
``verify.attack_and_verify``. A probe unit runs the diagnostics' small extra attacks the same way.
Randomness comes from per-example seeds derived from the run seed and the unit's seed key, and a
randomized defense's draws are restarted per unit and shard (``target.reseed``) inside a forked
RNG state, so a unit's rows do not depend on what else runs, in which order, or where.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from robench import rng
from robench import schema
from robench.attacks.adaptive import adaptive_target, eot_draws, needs_adaptation
from robench.attacks.base import Attack
from robench.cards import AttackSpec
from robench.plan import Unit, UnitKind
from robench.console import one_line
from robench.resolve import Context, build_context
from robench.schema import EXAMPLE_COLUMNS
from robench.spec import EvalConfig
from robench.target import reseed
from robench.verify import PREDICTION_DRAWS, attack_and_verify, predict_correct, verify

log = logging.getLogger(__name__)

#: adversarial examples kept per unit for the report's image grid
ADVERSARIAL_SAMPLES = 4


@dataclass
class UnitResult:
    unit: Unit
    rows: pd.DataFrame | None = None
    adversarial: dict[str, np.ndarray] | None = None
    error: str | None = None
    seconds: float = 0.0
    queries: int = 0


def _reseed(ctx: Context, unit: Unit, purpose: str, target: nn.Module) -> None:
    reseed(target, rng.derive_seed(ctx.config.seed, purpose, unit.defense, unit.start, unit.stop))


def clean_predictions(ctx: Context, unit: Unit) -> tuple[Tensor, Tensor, int]:
    """Clean correctness and margin of a shard (majority over draws for randomized targets).

    Seeded by (defense, shard) alone, so every attack and epsilon of a shard agrees on which
    examples were correct to begin with.
    """
    target, tags = ctx.target(unit.defense), ctx.tags(unit.defense)
    _reseed(ctx, unit, "clean", target)
    draws = PREDICTION_DRAWS if tags.randomized else 1
    x = ctx.x[unit.start:unit.stop].to(ctx.device)
    y = ctx.y[unit.start:unit.stop].to(ctx.device)
    correct, margin = predict_correct(target, x, y, draws=draws, max_batch=ctx.max_batch, tags=tags)
    return correct.cpu(), margin.cpu(), draws


def gradient_view(ctx: Context, defense: str, attack: Attack, spec: AttackSpec) -> nn.Module:
    """Gradient attacks see BPDA/EOT gradients where the target's tags say it masks or randomizes
    them; every attack sees the target's tags (``Context.attack_target``)."""
    tags = ctx.tags(defense)
    if attack.gradient_free or not spec.adaptive or not needs_adaptation(ctx.target(defense), tags):
        return ctx.attack_target(defense)
    return adaptive_target(ctx.target(defense), eot_samples=eot_draws(spec.eot_samples), tags=tags, vote=ctx.vote(defense))


def example_rows(ctx: Context, unit: Unit, label: str, columns: dict[str, object], seconds: float) -> pd.DataFrame:
    """The one writer of a unit's rows (``schema.EXAMPLE_COLUMNS``): the cell's keys, then
    ``columns`` (one value per example of the shard, or one for all), and the seconds per example."""
    threat = ctx.threats[unit.epsilon]
    ids, y = ctx.ids[unit.start:unit.stop], ctx.y[unit.start:unit.stop]
    return pd.DataFrame({
        "defense": unit.defense, "model": ctx.models.get(unit.defense, ctx.config.model), "dataset": ctx.data.name,
        "norm": threat.norm, "epsilon": threat.epsilon, "attack": label, "example": ids.numpy(), "label": y.numpy(),
        **columns, "seconds": seconds / max(len(ids), 1),
    }, columns=list(EXAMPLE_COLUMNS))


def _attack_rows(ctx: Context, unit: Unit, label: str, given: Tensor, clean_correct: Tensor, clean_margin: Tensor,
                 draws: int) -> tuple[pd.DataFrame, dict[str, np.ndarray] | None, Tensor]:
    """Attack ``label`` on the examples of the shard marked ``given``, verify every proposal; one
    row per example of the shard. Returns the rows, a sample of verified adversarial examples and
    the verified breaks (per example of the shard)."""
    started = time.perf_counter()
    spec, attack = ctx.attacks[label]
    target = ctx.target(unit.defense)
    threat = ctx.threats[unit.epsilon]
    x, y, ids = ctx.x[unit.start:unit.stop], ctx.y[unit.start:unit.stop], ctx.ids[unit.start:unit.stop]
    n = len(x)
    broken = ~clean_correct.clone()
    found = torch.zeros(n, dtype=torch.bool)
    rejected = torch.zeros(n, dtype=torch.bool)
    queries = torch.zeros(n, dtype=torch.long)
    distance = torch.zeros(n)
    margins = clean_margin.detach().float().clone()
    adversarial = None
    todo = given.nonzero().flatten()
    if len(todo):
        seed_key = unit.seed_key_for(label)
        _reseed(ctx, unit, f"attack|{seed_key}", target)
        xs, ys = x[todo].to(ctx.device), y[todo].to(ctx.device)
        seeds = rng.example_seeds(ctx.config.seed, seed_key, ids[todo]).to(ctx.device)
        result, check = attack_and_verify(attack, target, xs, ys, threat, seeds=seeds,
                                          attack_target=gradient_view(ctx, unit.defense, attack, spec), draws=draws,
                                          max_batch=ctx.max_batch, tags=ctx.tags(unit.defense))
        broken[todo] = check.broken.cpu()
        found[todo] = check.broken.cpu()
        rejected[todo] = check.rejected.cpu()
        queries[todo] = result.queries.cpu()
        distance[todo] = check.distance.float().cpu()
        margins[todo] = check.margin.float().cpu()
        keep = check.broken.nonzero().flatten()[:ADVERSARIAL_SAMPLES].cpu()
        if len(keep):
            adversarial = {
                "example": ids[todo][keep].numpy(),
                "x": xs[keep.to(xs.device)].float().cpu().numpy(),
                "x_adv": result.x_adv[keep.to(xs.device)].detach().float().cpu().numpy(),
            }
    rows = example_rows(ctx, unit, label, {
        "clean_correct": clean_correct.numpy(), "broken": broken.numpy(), "rejected": rejected.numpy(),
        "queries": queries.numpy(), "distance": distance.numpy(), "margin": margins.numpy(), "draws": draws,
        "attacked": given.numpy(), "certified": False, "certify_status": schema.NOT_CERTIFIED,
    }, time.perf_counter() - started)
    return rows, adversarial, found


def run_attack_unit(ctx: Context, unit: Unit) -> UnitResult:
    """Attack the clean-correct examples of a shard, verify every proposal, one row per example."""
    started = time.perf_counter()
    clean_correct, clean_margin, draws = clean_predictions(ctx, unit)
    rows, adversarial, _ = _attack_rows(ctx, unit, unit.method, clean_correct, clean_correct, clean_margin, draws)
    return UnitResult(unit, rows, adversarial, seconds=time.perf_counter() - started, queries=int(rows["queries"].sum()))


def run_cascade_unit(ctx: Context, unit: Unit) -> UnitResult:
    """Every attack of the suite in turn on a shard, each given only the clean-correct examples no
    earlier attack broke (AutoAttack's cascade): the suite costs less with every success, and an
    attack's row says how many examples it was given (``attacked``)."""
    started = time.perf_counter()
    clean_correct, clean_margin, draws = clean_predictions(ctx, unit)
    standing = clean_correct.clone()
    frames, samples = [], []
    for label in ctx.attacks:
        rows, adversarial, found = _attack_rows(ctx, unit, label, standing, clean_correct, clean_margin, draws)
        standing &= ~found
        frames.append(rows)
        if adversarial:
            samples.append({**adversarial, "attack": np.full(len(adversarial["example"]), label)})
    merged = None
    if samples:
        merged = {key: np.concatenate([sample[key] for sample in samples]) for key in samples[0]}
    rows = pd.concat(frames, ignore_index=True)
    return UnitResult(unit, rows, merged, seconds=time.perf_counter() - started, queries=int(rows["queries"].sum()))


def run_certify_unit(ctx: Context, unit: Unit) -> UnitResult:
    """A certifier on the clean-correct examples of a shard: per example certified, counterexample
    (which counts as broken only once ``verify`` confirms it, like any attack's proposal) or unknown."""
    from robench.certify import COUNTEREXAMPLE, STATUS_NAMES

    started = time.perf_counter()
    _, certifier = ctx.certifiers[unit.method]
    target = ctx.target(unit.defense)
    threat = ctx.threats[unit.epsilon]
    clean_correct, clean_margin, draws = clean_predictions(ctx, unit)
    x, y, ids = ctx.x[unit.start:unit.stop], ctx.y[unit.start:unit.stop], ctx.ids[unit.start:unit.stop]
    n = len(x)
    broken, rejected = ~clean_correct.clone(), torch.zeros(n, dtype=torch.bool)
    distance, margins = torch.zeros(n), clean_margin.detach().float().clone()
    status = [schema.NOT_CERTIFIED] * n
    adversarial = None
    todo = clean_correct.nonzero().flatten()
    if len(todo):
        _reseed(ctx, unit, f"certify|{unit.seed_key}", target)
        xs, ys = x[todo].to(ctx.device), y[todo].to(ctx.device)
        seeds = rng.example_seeds(ctx.config.seed, unit.seed_key, ids[todo]).to(ctx.device)
        result = certifier.certify(target, xs, ys, threat, seeds=seeds)
        check = verify(target, xs, result.counterexample, ys, threat, draws=draws, max_batch=ctx.max_batch,
                       tags=ctx.tags(unit.defense))
        proposed = (result.status == COUNTEREXAMPLE).cpu()
        confirmed = proposed & check.broken.cpu()
        broken[todo] = confirmed
        rejected[todo] = proposed & ~confirmed
        distance[todo] = torch.where(proposed, check.distance.float().cpu(), torch.zeros(len(todo)))
        margins[todo] = torch.where(proposed, check.margin.float().cpu(), margins[todo])
        codes = result.status.cpu().tolist()
        for row, code, ok, was_proposed in zip(todo.tolist(), codes, confirmed.tolist(), proposed.tolist()):
            # a counterexample that does not verify is no answer: unknown
            status[row] = STATUS_NAMES[int(code)] if ok or not was_proposed else schema.UNKNOWN
        keep = confirmed.nonzero().flatten()[:ADVERSARIAL_SAMPLES]
        if len(keep):
            adversarial = {"example": ids[todo][keep].numpy(), "x": xs[keep.to(xs.device)].float().cpu().numpy(),
                           "x_adv": result.counterexample[keep.to(xs.device)].detach().float().cpu().numpy()}
    seconds = time.perf_counter() - started
    rows = example_rows(ctx, unit, unit.method, {
        "clean_correct": clean_correct.numpy(), "broken": broken.numpy(), "rejected": rejected.numpy(), "queries": 0,
        "distance": distance.numpy(), "margin": margins.numpy(), "draws": draws, "attacked": clean_correct.numpy(),
        "certified": [s == schema.CERTIFIED for s in status], "certify_status": status,
    }, seconds)
    return UnitResult(unit, rows, adversarial, seconds=seconds)


def run_probe_unit(ctx: Context, unit: Unit) -> UnitResult:
    """The diagnostic probes of one (defense, epsilon): small extra attacks that expose masking."""
    from robench.diagnostics import PROBE_EOT_SAMPLES, diagnostics_frame, probe_checks, probe_examples

    started = time.perf_counter()
    target = ctx.target(unit.defense)
    threat = ctx.threats[unit.epsilon]
    clean_correct, _, _ = clean_predictions(ctx, unit)
    _reseed(ctx, unit, f"probe|{unit.seed_key}", target)
    tags = ctx.tags(unit.defense)
    randomized = tags.randomized
    attack_target = ctx.attack_target(unit.defense)
    if needs_adaptation(target, tags):
        # EOT with fewer draws than the suite's: the probes ask "is something off?", cheaply
        attack_target = adaptive_target(target, eot_samples=PROBE_EOT_SAMPLES if randomized else 1, tags=tags)
    found = probe_checks(
        defense=unit.defense, target=target, tags=tags, attack_target=attack_target, undefended=ctx.model,
        x=ctx.x[clean_correct].to(ctx.device), y=ctx.y[clean_correct].to(ctx.device), threat=threat,
        ids=ctx.ids[clean_correct], clean_correct=torch.ones(int(clean_correct.sum()), dtype=torch.bool),
        seed=rng.derive_seed(ctx.config.seed, unit.seed_key), max_batch=ctx.max_batch,
        n_examples=probe_examples(randomized),
    )
    return UnitResult(unit, diagnostics_frame(found), seconds=time.perf_counter() - started)


def execute_unit(ctx: Context, unit: Unit) -> UnitResult:
    """Run one unit in this process, leaving the caller's global RNG state as it was. A unit that
    raises is returned as failed, with its error: the rest of the run goes on, and the report
    says which units failed."""
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            return RUNNERS[unit.kind](ctx, unit)
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # a defense or attack that raises (or exits) mid-run: record it, go on
        log.debug("unit %s failed", unit.store_key, exc_info=True)
        return UnitResult(unit, error=one_line(exc))


#: what runs a unit of each kind
RUNNERS: dict[UnitKind, Callable[[Context, Unit], UnitResult]] = {
    UnitKind.ATTACK: run_attack_unit, UnitKind.CASCADE: run_cascade_unit,
    UnitKind.CERTIFY: run_certify_unit, UnitKind.PROBES: run_probe_unit,
}


#: a worker process's context, rebuilt only when a task of another configuration arrives
_WORKER_CONTEXT: dict[EvalConfig, Context] = {}


def _worker_context(config: EvalConfig) -> Context:
    if config not in _WORKER_CONTEXT:
        _WORKER_CONTEXT.clear()
        _WORKER_CONTEXT[config] = build_context(config)
    return _WORKER_CONTEXT[config]


def warm_worker(config: EvalConfig) -> None:
    """Build a worker's context before its first unit arrives, while the caller builds its own
    (imports, data, models: seconds a worker would otherwise spend after the plan is made). A
    failure here is left for the units, which record it."""
    try:
        _worker_context(config)
    except Exception:  # noqa: BLE001 - reported by the first unit that needs the context
        log.debug("warming a worker failed", exc_info=True)


def execute_in_worker(config: EvalConfig, unit: Unit) -> UnitResult:
    """``execute_unit`` in a worker process (Ray) that has only the configuration: the context is
    built once per worker and kept for its next units. Never called in the caller's process."""
    try:
        ctx = _worker_context(config)
    except Exception as exc:
        return UnitResult(unit, error=one_line(exc))
    return execute_unit(ctx, unit)

"""Plans an evaluation as work units and runs them: (defense, epsilon, attack) over the examples.

Each unit attacks only the examples its defense classifies correctly (AutoAttack's convention:
an example already misclassified is already broken), verifies every proposal, and yields one row
per example. Randomness comes from per-example seeds derived from the run seed and the unit's
key, so a unit's rows do not depend on what else runs, or in which order.
"""
from __future__ import annotations

import inspect
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack
from robench.cards import AttackSpec, DefenseCard, SuiteCard, all_defense_cards, load_defense_card, load_suite_card
from robench.data import Dataset, load_dataset, n_features, select_examples
from robench.errors import RobenchError
from robench.registry import attacks as attack_registry
from robench.registry import defenses as defense_registry
from robench.registry import models as model_registry
from robench.risk import summarize
from robench.store import RunStore, config_dict, normalize_rows
from robench.target import is_randomized
from robench.threat import ThreatModel
from robench.verify import predict_correct, verify

log = logging.getLogger(__name__)

#: forward passes that decide a randomized target's prediction (majority vote)
PREDICTION_DRAWS = 15


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines an evaluation's numbers (and nothing that does not)."""

    dataset: str = "digits"
    model: str = "cnn"
    defenses: tuple[str, ...] = ()  # empty: every registered defense card
    suite: str = "quick"
    norm: str = "linf"
    epsilons: tuple[float, ...] = (0.1,)
    n_examples: int = 100
    seed: int = 0
    device: str = "auto"
    max_batch: int | None = None
    #: examples per work unit; results do not depend on it (randomized defenses: for a fixed value)
    shard_size: int = 256
    #: run the gradient-masking probes (robench.diagnostics) for every (defense, epsilon)
    diagnostics: bool = True


@dataclass
class Evaluation:
    results: pd.DataFrame
    examples: pd.DataFrame
    run: dict[str, Any] = field(default_factory=dict)
    diagnostics: pd.DataFrame = field(default_factory=pd.DataFrame)
    adversarial: dict[str, np.ndarray] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RobenchError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise RobenchError(f"unknown device {name!r}; valid choices: auto, cpu, cuda")
    return torch.device(name)


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _call_with_params(fn: Any, what: str, *args: Any, **params: Any) -> Any:
    """Call a factory, turning a bad keyword into an error that lists the valid ones."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        valid = [n for n, p in signature.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)][len(args):]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise RobenchError(f"{what}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}")
    try:
        return fn(*args, **params)
    except RobenchError:
        raise
    except TypeError as exc:
        raise RobenchError(f"{what}: bad parameters ({exc})") from None
    except Exception as exc:  # user code that fails while building: a bad input, said in one line
        raise RobenchError(f"{what} raised {_one_line(exc)}; fix it or check its parameters") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def load_model(spec: str, data: Dataset) -> nn.Module:
    """A registered zoo model, or ``package.module:callable`` returning a trained ``nn.Module``."""
    factory = model_registry.get(spec)
    if ":" not in spec:
        role = model_registry.entry(spec).extra.get("role", "classifier")
        if role != "classifier":
            hint = "use it through --defense pixeldefend" if role == "density" else f"attack {spec}-probe, a linear probe on it"
            raise RobenchError(f"model {spec!r} is {'an' if role[0] in 'aeiou' else 'a'} {role}, not a classifier; {hint}")
    try:
        model = factory() if ":" in spec and not _accepts(factory, "data") else factory(data)
    except RobenchError:
        raise
    except Exception as exc:
        raise RobenchError(f"model {spec!r} raised {_one_line(exc)} while loading; fix the callable or its data") from None
    if not isinstance(model, nn.Module):
        raise RobenchError(f"model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def build_attack(spec: AttackSpec, max_batch: int | None = None) -> Attack:
    factory = attack_registry.get(spec.attack)
    params = dict(spec.params)
    if max_batch is not None and "max_batch" not in params and _accepts(factory, "max_batch"):
        params["max_batch"] = max_batch
    return _call_with_params(factory, f"attack {spec.label!r} ({spec.attack})", **params)


def build_defense(card: DefenseCard, model: nn.Module, data: Dataset) -> nn.Module:
    """``factory(model, **params)``; a factory that takes ``data`` also gets the data set."""
    factory = defense_registry.get(card.factory)
    params = dict(card.params)
    if _accepts(factory, "data") and "data" not in params:
        params["data"] = data
    target = _call_with_params(factory, f"defense {card.name!r} ({card.factory})", model, **params)
    if not isinstance(target, nn.Module):
        raise RobenchError(f"defense {card.name!r}: factory {card.factory!r} returned {type(target).__name__}, not an nn.Module")
    if card.differentiable is not None:
        target.differentiable = card.differentiable
    if card.randomized is not None:
        target.randomized = card.randomized
    return target.eval()


@dataclass(frozen=True)
class Unit:
    """One piece of work: an attack (or the diagnostic probes) on a defense at one epsilon, on a
    shard ``[start, stop)`` of the selected examples.

    ``key`` seeds the unit's randomness without the shard, so an example's attack does not depend
    on the shard size; ``id`` names the stored result and includes the shard.
    """

    defense: str
    epsilon: float
    attack: str  # an attack label, or PROBES
    start: int
    stop: int

    @property
    def key(self) -> str:
        return f"{self.defense}|{float(self.epsilon)!r}|{self.attack}"

    @property
    def id(self) -> str:
        return f"{self.key}|{self.start}:{self.stop}"

    @property
    def is_probe(self) -> bool:
        return self.attack == PROBES


#: the pseudo-attack label of diagnostic-probe units
PROBES = "(diagnostics)"
#: gradient draws averaged by EOT for randomized targets, unless a suite entry says otherwise
DEFAULT_EOT_SAMPLES = 10
#: EOT draws in the diagnostic probes of randomized targets
PROBE_EOT_SAMPLES = 4
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


@dataclass
class Context:
    """What every unit of a run needs, built once per process from the configuration alone."""

    config: EvalConfig
    data: Dataset
    x: Tensor
    y: Tensor
    ids: Tensor
    device: torch.device
    model: nn.Module
    cards: dict[str, DefenseCard]
    suite: SuiteCard
    attacks: dict[str, tuple[AttackSpec, Attack]]
    threats: dict[float, ThreatModel]
    max_batch: int
    _targets: dict[str, nn.Module] = field(default_factory=dict)

    def target(self, defense: str) -> nn.Module:
        if defense not in self._targets:
            self._targets[defense] = build_defense(self.cards[defense], self.model, self.data).to(self.device)
        return self._targets[defense]


def build_context(config: EvalConfig) -> Context:
    """Resolve and validate everything, before any attack runs (bad input fails here, fast)."""
    if config.n_examples < 1:
        raise RobenchError(f"--n-examples must be >= 1, got {config.n_examples}")
    if config.shard_size < 1:
        raise RobenchError(f"--shard-size must be >= 1, got {config.shard_size}")
    data = load_dataset(config.dataset)
    cards = [load_defense_card(spec) for spec in config.defenses] if config.defenses else all_defense_cards(default_only=True)
    if not cards:
        raise RobenchError("no defense cards found; pass --defense NAME|PATH or run from a directory with defenses/")
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise RobenchError(f"defense names must be distinct, got {', '.join(names)}")
    suite = load_suite_card(config.suite)
    attacks = {spec.label: (spec, build_attack(spec, config.max_batch)) for spec in suite.attacks}
    unsupported = [label for label, (_, attack) in attacks.items() if not attack.supports(config.norm)]
    if unsupported:
        raise RobenchError(f"suite {suite.name!r}: attack(s) {', '.join(unsupported)} have no {config.norm} version; "
                           f"use --norm {'l2' if config.norm == 'linf' else 'linf'} or drop them from the suite")
    threats = {float(e): ThreatModel(config.norm, float(e), data.bounds) for e in config.epsilons}  # type: ignore[arg-type]
    for threat in threats.values():
        threat.check_input_size(n_features(data.input_shape))
    x, y, ids = select_examples(data, config.n_examples)
    device = resolve_device(config.device)
    model = load_model(config.model, data).to(device)
    return Context(config, data, x, y, ids, device, model, {c.name: c for c in cards}, suite, attacks, threats,
                   config.max_batch or 4096)


_CONTEXTS: dict[EvalConfig, Context] = {}


def context_for(config: EvalConfig) -> Context:
    """The process-wide context of a configuration (Ray workers build theirs once, then reuse it)."""
    if config not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[config] = build_context(config)
    return _CONTEXTS[config]


def validate_targets(ctx: Context) -> None:
    """Build every defense and check its outputs on two examples: wrong shapes or NaN fail now."""
    top_label = max(int(ctx.data.y_test.max()), int(ctx.data.y_train.max()) if len(ctx.data.y_train) else 0)
    for name in ctx.cards:
        target = ctx.target(name)
        try:
            n_classes = _n_classes(target, ctx.x[:2].to(ctx.device))
        except RobenchError:
            raise
        except Exception as exc:
            raise RobenchError(
                f"defense {name!r} on model {ctx.config.model!r} raised {_one_line(exc)} on two test inputs of shape "
                f"{tuple(ctx.x.shape[1:])}; check that the model fits the data set"
            ) from None
        if top_label >= n_classes:
            raise RobenchError(
                f"labels go up to {top_label} but defense {name!r} on model {ctx.config.model!r} has {n_classes} "
                "outputs; use a model trained for this data set"
            )


def plan_units(ctx: Context) -> list[Unit]:
    """Every unit of the run, in the order results are assembled (never the order they finish)."""
    n = len(ctx.x)
    shards = [(start, min(start + ctx.config.shard_size, n)) for start in range(0, n, ctx.config.shard_size)]
    units = []
    for defense in ctx.cards:
        for epsilon in ctx.threats:
            for label in ctx.attacks:
                units.extend(Unit(defense, epsilon, label, a, b) for a, b in shards)
            if ctx.config.diagnostics:
                units.append(Unit(defense, epsilon, PROBES, 0, n))
    return units


def _seed_randomness(config: EvalConfig, unit: Unit, purpose: str, target: nn.Module) -> None:
    """Randomized defenses draw from torch's global RNG or from their own seeded draws: restart
    both per unit and shard, so results do not depend on the executor or on the order units run
    in. A user's randomized module may define ``reseed(seed: int)`` to take part."""
    seed = rng.derive_seed(config.seed, purpose, unit.defense, unit.start, unit.stop)
    torch.manual_seed(seed)
    for module in target.modules():
        if hasattr(module, "reseed") and callable(module.reseed):
            module.reseed(seed)
        elif hasattr(getattr(module, "draws", None), "reseed"):
            module.draws.reseed(seed)


def clean_predictions(ctx: Context, unit: Unit) -> tuple[Tensor, Tensor, int]:
    """Clean correctness and margin of a shard (majority over draws for randomized targets).

    Seeded by (defense, shard) alone, so every attack and epsilon of a shard agrees on which
    examples were correct to begin with.
    """
    target = ctx.target(unit.defense)
    _seed_randomness(ctx.config, unit, "clean", target)
    draws = PREDICTION_DRAWS if is_randomized(target) else 1
    x = ctx.x[unit.start:unit.stop].to(ctx.device)
    y = ctx.y[unit.start:unit.stop].to(ctx.device)
    correct, margin = predict_correct(target, x, y, draws=draws, max_batch=ctx.max_batch)
    return correct.cpu(), margin.cpu(), draws


def _attack_target(target: nn.Module, attack: Attack, spec: AttackSpec) -> nn.Module:
    """Gradient attacks see BPDA/EOT gradients where the target masks or randomizes them."""
    if attack.gradient_free or not spec.adaptive:
        return target
    from robench.attacks.adaptive import adaptive_target, needs_adaptation

    if not needs_adaptation(target):
        return target
    return adaptive_target(target, eot_samples=spec.eot_samples or DEFAULT_EOT_SAMPLES)


def run_attack_unit(ctx: Context, unit: Unit) -> UnitResult:
    """Attack the clean-correct examples of a shard, verify every proposal, one row per example."""
    started = time.perf_counter()
    spec, attack = ctx.attacks[unit.attack]
    target = ctx.target(unit.defense)
    threat = ctx.threats[unit.epsilon]
    clean_correct, clean_margin, draws = clean_predictions(ctx, unit)
    x, y, ids = ctx.x[unit.start:unit.stop], ctx.y[unit.start:unit.stop], ctx.ids[unit.start:unit.stop]
    n = len(x)
    broken = ~clean_correct.clone()
    rejected = torch.zeros(n, dtype=torch.bool)
    queries = torch.zeros(n, dtype=torch.long)
    distance = torch.zeros(n)
    margins = clean_margin.detach().float().clone()
    adversarial = None
    todo = clean_correct.nonzero().flatten()
    if len(todo):
        _seed_randomness(ctx.config, unit, f"attack|{unit.key}", target)
        xs, ys = x[todo].to(ctx.device), y[todo].to(ctx.device)
        seeds = rng.example_seeds(ctx.config.seed, unit.key, ids[todo]).to(ctx.device)
        result = attack.run(_attack_target(target, attack, spec), xs, ys, threat, seeds=seeds)
        check = verify(target, xs, result.x_adv, ys, threat, draws=draws, max_batch=ctx.max_batch)
        broken[todo] = check.broken.cpu()
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
    seconds = time.perf_counter() - started
    rows = pd.DataFrame({
        "defense": unit.defense, "model": ctx.config.model, "dataset": ctx.data.name, "norm": threat.norm,
        "epsilon": threat.epsilon, "attack": unit.attack,
        "example": ids.numpy(), "label": y.numpy(), "clean_correct": clean_correct.numpy(), "broken": broken.numpy(),
        "rejected": rejected.numpy(), "queries": queries.numpy(), "distance": distance.numpy(),
        "margin": margins.numpy(), "draws": draws, "seconds": seconds / max(n, 1),
    })
    return UnitResult(unit, rows, adversarial, seconds=seconds, queries=int(queries.sum()))


def run_probe_unit(ctx: Context, unit: Unit) -> UnitResult:
    """The diagnostic probes of one (defense, epsilon): small extra attacks that expose masking."""
    from robench.attacks.adaptive import adaptive_target, needs_adaptation
    from robench.diagnostics import diagnostics_frame, probe_checks

    started = time.perf_counter()
    target = ctx.target(unit.defense)
    threat = ctx.threats[unit.epsilon]
    clean_correct, _, _ = clean_predictions(ctx, unit)
    _seed_randomness(ctx.config, unit, f"probe|{unit.key}", target)
    randomized = is_randomized(target)
    attack_target = target
    if needs_adaptation(target):
        # EOT with fewer draws than the suite's: the probes ask "is something off?", cheaply
        attack_target = adaptive_target(target, eot_samples=PROBE_EOT_SAMPLES if randomized else 1)
    found = probe_checks(
        defense=unit.defense, target=target, attack_target=attack_target, undefended=ctx.model,
        x=ctx.x[clean_correct].to(ctx.device), y=ctx.y[clean_correct].to(ctx.device), threat=threat,
        ids=ctx.ids[clean_correct], clean_correct=torch.ones(int(clean_correct.sum()), dtype=torch.bool),
        seed=rng.derive_seed(ctx.config.seed, unit.key), max_batch=ctx.max_batch,
        n_examples=16 if randomized else 32,
    )
    return UnitResult(unit, diagnostics_frame(found), seconds=time.perf_counter() - started)


def execute_unit(config: EvalConfig, unit: Unit) -> UnitResult:
    """Run one unit in this process. A unit that raises is returned as failed, with its error:
    the rest of the run goes on, and the report says which units failed."""
    try:
        ctx = context_for(config)
        return run_probe_unit(ctx, unit) if unit.is_probe else run_attack_unit(ctx, unit)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a defense or attack that raises mid-run: record, don't crash the run
        log.debug("unit %s failed", unit.id, exc_info=True)
        return UnitResult(unit, error=_one_line(exc))


def assemble(ctx: Context, results: list[UnitResult], started: float, executor: str) -> Evaluation:
    """Put finished units together, in plan order, into the output tables."""
    attack_rows = [normalize_rows(r.rows) for r in results if r.rows is not None and not r.unit.is_probe]
    probe_rows = [normalize_rows(r.rows) for r in results if r.rows is not None and r.unit.is_probe]
    failed = [
        {"defense": r.unit.defense, "epsilon": r.unit.epsilon, "attack": r.unit.attack,
         "examples": f"{r.unit.start}:{r.unit.stop}", "error": r.error}
        for r in results if r.error is not None
    ]
    if not attack_rows:
        raise RobenchError(f"every unit of the run failed; first error: {failed[0]['error'] if failed else 'none'}")
    examples = pd.concat(attack_rows, ignore_index=True)
    results_table = summarize(examples)
    diagnostics = _diagnostics(ctx, examples, probe_rows)
    adversarial = _adversarial(results)
    run = {
        "config": config_dict(ctx.config),
        "seed": ctx.config.seed,
        "device": str(ctx.device),
        "executor": executor,
        "dataset": {"name": ctx.data.name, "fingerprint": ctx.data.fingerprint, "input_shape": list(ctx.data.input_shape),
                    "n_test": len(ctx.data.x_test), "n_examples": len(ctx.x)},
        "model": {"name": ctx.config.model, "meta": getattr(ctx.model, "robench_meta", {})},
        "defenses": [asdict(c) for c in ctx.cards.values()],
        "suite": {"name": ctx.suite.name, "source": ctx.suite.source,
                  "attacks": [{"label": label, "attack": spec.attack, "repr": repr(a),
                               "gradient_free": a.gradient_free} for label, (spec, a) in ctx.attacks.items()]},
        "versions": versions(),
        "timings": {"started": started, "seconds": round(time.time() - started, 3),
                    "units": [{"defense": r.unit.defense, "epsilon": r.unit.epsilon, "attack": r.unit.attack,
                               "examples": f"{r.unit.start}:{r.unit.stop}", "seconds": round(r.seconds, 4),
                               "queries": r.queries} for r in results]},
        "rejected_proposals": int(examples["rejected"].sum()),
        "failed_units": failed,
    }
    return Evaluation(results_table, examples.drop(columns=["seconds"]), run, diagnostics, adversarial)


def _diagnostics(ctx: Context, examples: pd.DataFrame, probe_rows: list[pd.DataFrame]) -> pd.DataFrame:
    if not ctx.config.diagnostics:
        return pd.DataFrame(columns=["defense", "epsilon", "check", "fired", "detail"])
    from robench.diagnostics import diagnostics_frame, frame_checks

    gradient_free = [label for label, (_, a) in ctx.attacks.items() if a.gradient_free]
    frames = [diagnostics_frame(frame_checks(examples, gradient_free=gradient_free)), *probe_rows]
    table = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    order = {name: i for i, name in enumerate(ctx.cards)}
    return table.sort_values(["defense", "epsilon", "check"], key=lambda s: s.map(order) if s.name == "defense" else s,
                             kind="stable").reset_index(drop=True)


def _adversarial(results: list[UnitResult]) -> dict[str, np.ndarray]:
    parts = [(r.unit, r.adversarial) for r in results if r.adversarial]
    if not parts:
        return {}
    count = [len(a["example"]) for _, a in parts]
    return {
        "defense": np.array([u.defense for (u, _), k in zip(parts, count) for _ in range(k)]),
        "epsilon": np.array([u.epsilon for (u, _), k in zip(parts, count) for _ in range(k)], dtype=np.float64),
        "attack": np.array([u.attack for (u, _), k in zip(parts, count) for _ in range(k)]),
        "example": np.concatenate([a["example"] for _, a in parts]).astype(np.int64),
        "x": np.concatenate([a["x"] for _, a in parts]).astype(np.float32),
        "x_adv": np.concatenate([a["x_adv"] for _, a in parts]).astype(np.float32),
    }


ProgressHook = Callable[[UnitResult], None]


def evaluate_config(
    config: EvalConfig,
    *,
    store: RunStore | None = None,
    executor: str = "local",
    address: str | None = None,
    on_unit: ProgressHook | None = None,
    on_plan: Callable[[list[Unit], int], None] | None = None,
    resume: bool = False,
) -> Evaluation:
    """Plan the run, execute the units not already stored, and assemble the tables.

    With a ``store``, every finished unit is written at once (atomically), so an interrupted run
    resumes where it stopped (``resume=True`` refuses a store made with another configuration).
    """
    from robench.executors import make_executor

    started = time.time()
    if store is not None and resume:
        store.check_resumable(config_dict(config))
    ctx = context_for(config)
    validate_targets(ctx)
    runner = make_executor(executor, address=address, device=ctx.device)
    units = plan_units(ctx)
    if store is not None:
        if not resume:
            store.clear()  # --out starts anew; only now that the input is known to be good
        store.write_plan(config_dict(config))
    done: dict[str, UnitResult] = {}
    for unit in units:
        if store is not None and store.is_done(unit.id):
            rows, adversarial = store.load(unit.id)
            done[unit.id] = UnitResult(unit, rows, adversarial)
    if done:
        log.info("resuming: %d of %d units already done", len(done), len(units))
    todo = [u for u in units if u.id not in done]
    if on_plan is not None:
        on_plan(todo, len(done))

    def finished(result: UnitResult) -> None:
        if store is not None:
            if result.error is None:
                store.save(result.unit.id, result.rows, result.adversarial)
            else:
                store.save_failure(result.unit.id, {"unit": result.unit.id, "error": result.error})
        if result.error is not None:
            log.warning("unit %s failed: %s", result.unit.id, result.error)
        done[result.unit.id] = result
        if on_unit is not None:
            on_unit(result)

    runner.run(config, todo, finished)
    return assemble(ctx, [done[u.id] for u in units], started, executor)

@torch.no_grad()
def _n_classes(target: nn.Module, x: Tensor) -> int:
    from robench.target import check_logits

    return int(check_logits(target(x), len(x)).shape[1])


def versions() -> dict[str, str]:
    import foolbox
    import numpy
    import robench

    return {
        "robench": robench.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "pandas": pd.__version__, "foolbox": foolbox.__version__,
        "platform": platform.platform(),
    }

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
from dataclasses import asdict, dataclass, field
from typing import Any

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


@dataclass
class Evaluation:
    results: pd.DataFrame
    examples: pd.DataFrame
    run: dict[str, Any] = field(default_factory=dict)


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


def load_model(spec: str, data: Dataset) -> nn.Module:
    """A registered zoo model, or ``package.module:callable`` returning a trained ``nn.Module``."""
    factory = model_registry.get(spec)
    if ":" in spec and not _accepts(factory, "data"):
        model = factory()
    else:
        model = factory(data)
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
    """One piece of work: an attack on a defense at one epsilon."""

    defense: str
    epsilon: float
    attack: str

    @property
    def key(self) -> str:
        return f"{self.defense}|{float(self.epsilon)!r}|{self.attack}"


def run_unit(
    unit: Unit,
    target: nn.Module,
    attack: Attack,
    threat: ThreatModel,
    x: Tensor,
    y: Tensor,
    ids: Tensor,
    clean_correct: Tensor,
    clean_margin: Tensor,
    *,
    seed: int,
    max_batch: int,
) -> tuple[pd.DataFrame, float]:
    """Attack the clean-correct examples, verify, and return one row per example."""
    start = time.perf_counter()
    n = len(x)
    broken = ~clean_correct.clone()
    rejected = torch.zeros(n, dtype=torch.bool)
    queries = torch.zeros(n, dtype=torch.long)
    distance = torch.zeros(n)
    margins = clean_margin.detach().float().cpu().clone()
    todo = clean_correct.nonzero().flatten()
    if len(todo):
        device = next((p.device for p in target.parameters()), x.device)
        xs, ys = x[todo].to(device), y[todo].to(device)
        seeds = rng.example_seeds(seed, unit.key, ids[todo]).to(device)
        result = attack.run(target, xs, ys, threat, seeds=seeds)
        check = verify(target, xs, result.x_adv, ys, threat, draws=PREDICTION_DRAWS, max_batch=max_batch)
        broken[todo] = check.broken.cpu()
        rejected[todo] = check.rejected.cpu()
        queries[todo] = result.queries.cpu()
        distance[todo] = check.distance.float().cpu()
        margins[todo] = check.margin.float().cpu()
    seconds = time.perf_counter() - start
    rows = pd.DataFrame(
        {
            "example": ids.numpy(),
            "label": y.numpy(),
            "clean_correct": clean_correct.numpy(),
            "broken": broken.numpy(),
            "rejected": rejected.numpy(),
            "queries": queries.numpy(),
            "distance": distance.numpy(),
            "margin": margins.numpy(),
        }
    )
    return rows, seconds


def evaluate_config(config: EvalConfig) -> Evaluation:
    """Run the whole evaluation in this process and summarise it."""
    started = time.time()
    # Everything that can be wrong with the input is checked before any attack runs.
    data = load_dataset(config.dataset)
    cards = [load_defense_card(spec) for spec in config.defenses] if config.defenses else all_defense_cards()
    if not cards:
        raise RobenchError("no defense cards found; pass --defense NAME|PATH or run from a directory with defenses/")
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise RobenchError(f"defense names must be distinct, got {', '.join(names)}")
    suite = load_suite_card(config.suite)
    attacks = [(spec.label, build_attack(spec, config.max_batch)) for spec in suite.attacks]
    threats = [ThreatModel(config.norm, float(e), data.bounds) for e in config.epsilons]  # type: ignore[arg-type]
    for threat in threats:
        threat.check_input_size(n_features(data.input_shape))
    x, y, ids = select_examples(data, config.n_examples)
    device = resolve_device(config.device)
    max_batch = config.max_batch or 4096
    model = load_model(config.model, data).to(device)

    frames: list[pd.DataFrame] = []
    unit_log: list[dict[str, Any]] = []
    for card in cards:
        target = build_defense(card, model, data).to(device)
        draws = PREDICTION_DRAWS if is_randomized(target) else 1
        n_classes = _n_classes(target, x[:2].to(device))
        if int(y.max()) >= n_classes:
            raise RobenchError(
                f"labels go up to {int(y.max())} but defense {card.name!r} on model {config.model!r} has {n_classes} outputs; "
                "use a model trained for this data set"
            )
        correct, margin = predict_correct(target, x.to(device), y.to(device), draws=draws, max_batch=max_batch)
        correct, margin = correct.cpu(), margin.cpu()
        log.info("%s: clean accuracy %.4f", card.name, correct.float().mean().item())
        for threat in threats:
            for label, attack in attacks:
                unit = Unit(card.name, threat.epsilon, label)
                rows, seconds = run_unit(unit, target, attack, threat, x, y, ids, correct, margin, seed=config.seed, max_batch=max_batch)
                rows.insert(0, "attack", label)
                for column, value in reversed(list(zip(
                    ["defense", "model", "dataset", "norm", "epsilon"],
                    [card.name, config.model, data.name, threat.norm, threat.epsilon],
                ))):
                    rows.insert(0, column, value)
                rows["seconds"] = seconds / max(len(rows), 1)
                frames.append(rows)
                unit_log.append({"defense": card.name, "epsilon": threat.epsilon, "attack": label, "seconds": round(seconds, 4)})
                log.info("%s eps=%g %s: %d/%d broken in %.1fs", card.name, threat.epsilon, label,
                         int(rows["broken"].sum()), len(rows), seconds)

    examples = pd.concat(frames, ignore_index=True)
    results = summarize(examples)
    run = {
        "config": asdict(config),
        "seed": config.seed,
        "device": str(device),
        "dataset": {"name": data.name, "fingerprint": data.fingerprint, "input_shape": list(data.input_shape),
                    "n_test": len(data.x_test), "n_examples": len(x)},
        "model": {"name": config.model, "meta": getattr(model, "robench_meta", {})},
        "defenses": [asdict(c) for c in cards],
        "suite": {"name": suite.name, "source": suite.source,
                  "attacks": [{"label": label, "attack": spec.attack, "repr": repr(a)} for (label, a), spec in zip(attacks, suite.attacks)]},
        "versions": versions(),
        "timings": {"started": started, "seconds": round(time.time() - started, 3), "units": unit_log},
        "rejected_proposals": int(examples["rejected"].sum()),
    }
    return Evaluation(results, examples.drop(columns=["seconds"]), run)


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

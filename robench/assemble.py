"""Finished units, in plan order, into the output tables: examples, results, diagnostics, run.json."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from robench.errors import RobenchError
from robench.plan import UnitKind
from robench.resolve import Context
from robench.risk import summarize
from robench.schema import CERTIFIED, KEYS, empty_diagnostics, normalize_rows
from robench.spec import config_dict
from robench.units import UnitResult


@dataclass
class Evaluation:
    """What an evaluation returns: pandas frames, the run record, and a sample of adversarial examples."""

    results: pd.DataFrame
    examples: pd.DataFrame
    run: dict[str, Any] = field(default_factory=dict)
    diagnostics: pd.DataFrame = field(default_factory=empty_diagnostics)
    adversarial: dict[str, np.ndarray] = field(default_factory=dict)


def _discovered(ctx: Context, defense: str) -> list[str]:
    """What robench found by running the defense's target and handled (``robench.discover``; the
    same in every process: it runs on the first examples with a fixed seed). A defense that could
    not be built has its failed units to show instead."""
    try:
        return list(ctx.tags(defense).discovered)
    except Exception:  # noqa: BLE001 - recorded by the failed units of that defense
        return []


def assemble(ctx: Context, results: list[UnitResult], started: float, executor: str) -> Evaluation:
    """Put finished units together, in plan order, into the output tables."""
    attack_rows = [normalize_rows(r.rows) for r in results if r.rows is not None and r.unit.kind is not UnitKind.PROBES]
    probe_rows = [normalize_rows(r.rows) for r in results if r.rows is not None and r.unit.kind is UnitKind.PROBES]
    failed = [
        {"defense": r.unit.defense, "epsilon": r.unit.epsilon, "attack": r.unit.name,
         "examples": f"{r.unit.start}:{r.unit.stop}", "error": r.error}
        for r in results if r.error is not None
    ]
    if not attack_rows:
        raise RobenchError(f"every unit of the run failed; first error: {failed[0]['error'] if failed else 'none'}")
    examples = certified_per_example(ctx, pd.concat(attack_rows, ignore_index=True))
    run = {
        "config": config_dict(ctx.config),
        "seed": ctx.config.seed,
        "device": str(ctx.device),
        "executor": executor,
        "dataset": {"name": ctx.data.name, "fingerprint": ctx.data.fingerprint, "input_shape": list(ctx.data.input_shape),
                    "n_test": len(ctx.data.x_test), "n_examples": len(ctx.x)},
        "model": {"name": ctx.config.model, "meta": getattr(ctx.model, "robench_meta", {})},
        "defenses": [{**asdict(c), "model": ctx.models.get(c.name, ctx.config.model), "discovered": _discovered(ctx, c.name)}
                     for c in ctx.cards.values()],
        "suite": {"name": ctx.suite.name, "source": ctx.suite.source,
                  "attacks": [{"label": label, "attack": spec.attack, "repr": repr(a),
                               "gradient_free": a.gradient_free} for label, (spec, a) in ctx.attacks.items()],
                  "certifiers": [{"label": label, "method": spec.method, "repr": repr(c), "sound": c.sound}
                                 for label, (spec, c) in ctx.certifiers.items()]},
        "versions": versions(),
        "timings": {"started": started, "seconds": round(time.time() - started, 3),
                    "units": [{"defense": r.unit.defense, "epsilon": r.unit.epsilon, "attack": r.unit.name,
                               "examples": f"{r.unit.start}:{r.unit.stop}", "seconds": round(r.seconds, 4),
                               "queries": r.queries} for r in results]},
        "rejected_proposals": int(examples["rejected"].sum()),
        "failed_units": failed,
    }
    return Evaluation(summarize(examples), examples.drop(columns=["seconds"]), run,
                      _diagnostics(ctx, examples, probe_rows), _adversarial(results))


def certified_per_example(ctx: Context, examples: pd.DataFrame) -> pd.DataFrame:
    """``certified`` on every row of an example some certifier certified, after the one check a
    certificate must pass: no attack broke what a certifier that declares itself ``sound`` (ibp,
    crown, milp) certified. One that does not (smoothing certifies the smoothed classifier with
    probability 1 - alpha, not the defense's own Monte-Carlo vote) is exempt: an attack may rightly
    break what it certified."""
    if not ctx.certifiers:
        return examples
    keys = [*KEYS, "example"]
    sound = [label for label, (_, certifier) in ctx.certifiers.items() if certifier.sound]
    certified_rows = examples[examples["attack"].isin(sound) & (examples["certify_status"] == CERTIFIED)]
    broken_rows = examples[~examples["attack"].isin(list(ctx.certifiers)) & examples["broken"].astype(bool)]
    clash = certified_rows.merge(broken_rows, on=keys, suffixes=("", "_attack"))
    if len(clash):
        first = clash.iloc[0]
        raise RobenchError(
            f"soundness violation: certifier {first['attack']!r} certified example {int(first['example'])} of defense "
            f"{first['defense']!r} at eps {first['epsilon']:g}, which attack {first['attack_attack']!r} broke "
            f"({len(clash)} such case(s)); no result is reported. This is a bug in the certifier, or the model is "
            "not deterministic: report it")
    any_certified = examples.groupby(keys, sort=False, dropna=False)["certified"].transform("max").astype(bool)
    return examples.assign(certified=any_certified)


def _diagnostics(ctx: Context, examples: pd.DataFrame, probe_rows: list[pd.DataFrame]) -> pd.DataFrame:
    if not ctx.config.diagnostics:
        return empty_diagnostics()
    from robench.diagnostics import diagnostics_frame, table_checks

    frames = [diagnostics_frame(table_checks(examples, gradient_free=ctx.gradient_free)), *probe_rows]
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
        # a cascade unit names the attack of each of its examples
        "attack": np.concatenate([a["attack"] if "attack" in a else np.full(k, u.method) for (u, a), k in zip(parts, count)]),
        "example": np.concatenate([a["example"] for _, a in parts]).astype(np.int64),
        "x": np.concatenate([a["x"] for _, a in parts]).astype(np.float32),
        "x_adv": np.concatenate([a["x_adv"] for _, a in parts]).astype(np.float32),
    }


def versions() -> dict[str, str]:
    import foolbox

    import robench

    return {
        "robench": robench.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "pandas": pd.__version__, "foolbox": foolbox.__version__,
        "platform": platform.platform(),
    }

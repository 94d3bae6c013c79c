"""An evaluation, top to bottom: resolve the configuration, plan the units, run the ones not yet
stored on an executor, store each as it finishes, assemble the tables.

    config --resolve--> Context --plan--> units --executor.map(execute_unit)--> store --> assemble

The caller's global torch RNG state is the same afterwards, and nothing outlives the call: the
context (model, data, targets) is local to it.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import torch
from torch import nn

from robench.assemble import Evaluation, assemble
from robench.budget import WARN_SECONDS, budgets, estimated_seconds
from robench.data import Dataset
from robench.errors import RobenchError
from robench.executors import Executor, make_executor
from robench.plan import Unit, UnitKind, plan_units
from robench.console import one_line
from robench.resolve import Context, build_context, fingerprints, validate_targets
from robench.spec import EvalConfig, config_dict, resolve_device
from robench.store import RunStore
from robench.units import UnitResult, execute_in_worker, execute_unit, warm_worker

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "Evaluation", "evaluate_config"]


def evaluate_config(
    config: EvalConfig,
    *,
    store: RunStore | None = None,
    executor: str = "local",
    address: str | None = None,
    on_unit: Callable[[UnitResult], None] | None = None,
    on_plan: Callable[[list[Unit], int, dict[str, int]], None] | None = None,
    resume: bool = False,
    model: nn.Module | None = None,
    data: Dataset | None = None,
    force: bool = False,
) -> Evaluation:
    """Plan the run, execute the units not already stored, and assemble the tables.

    With a ``store``, every finished unit is written at once (atomically), so an interrupted run
    resumes where it stopped (``resume=True`` refuses a store made with another configuration or
    other content). The store is this process's for the call (a lock file), and a new run refuses
    a folder holding files robench did not write unless ``force``. ``model`` and ``data`` objects
    stand in for the configuration's names (``robench.evaluate``); such a run executes locally.
    """
    started = time.time()
    if store is not None and resume:
        store.check_resumable(config_dict(config))  # the names, before the slow part
    elif store is not None:
        store.check_owned(force=force)
    if (model is not None or data is not None) and executor != "local":
        raise RobenchError("model and data objects run on the local executor only (Ray workers rebuild the run from "
                           "names); name a registered model or module:callable and a data set to use Ray")
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    runner = make_executor(executor, address=address, device=resolve_device(config.device))
    if store is not None:
        store.lock()
    try:
        # remote workers build their contexts while this process builds its own
        runner.prepare(functools.partial(warm_worker, config))
        with torch.random.fork_rng(devices=cuda):
            ctx = build_context(config, model=model, data=data)
            validate_targets(ctx)
            results = _run_units(config, ctx, store, runner, executor, on_unit, on_plan, resume)
            return assemble(ctx, results, started, executor)
    finally:
        runner.close()
        if store is not None:
            store.unlock()


def _run_units(
    config: EvalConfig, ctx: Context, store: RunStore | None, runner: Executor, executor: str,
    on_unit: Callable[[UnitResult], None] | None, on_plan: Callable[[list[Unit], int, dict[str, int]], None] | None,
    resume: bool,
) -> list[UnitResult]:
    """Every unit's result in plan order: stored ones loaded, the rest run and stored as they finish.
    ``config`` is the configuration as given (what plan.json stores and a resume compares)."""
    units = plan_units(ctx.cards, ctx.threats, ctx.attacks, n_examples=len(ctx.x), shard_size=config.shard_size,
                       diagnostics=config.diagnostics, cascade=ctx.suite.cascade, certifiers=ctx.certifiers)
    if store is not None:
        contents = fingerprints(ctx)
        if resume:
            store.check_resumable(config_dict(config), contents)  # and now the content the names stand for
            store.clear_tables()
        else:
            store.clear()  # --out starts anew; only now that the input is known to be good
        store.write_plan(config_dict(config), contents)
    done: dict[str, UnitResult] = {}
    for unit in units:
        if store is not None and store.is_done(unit.store_key):
            rows, adversarial = store.load(unit.store_key)
            done[unit.store_key] = UnitResult(unit, rows, adversarial)
    if done:
        log.info("resuming: %d of %d units already done", len(done), len(units))
    todo = [u for u in units if u.store_key not in done]
    budget = budgets(ctx, todo)
    if todo and executor == "local":
        _warn_if_long(ctx, todo, budget)
    if on_plan is not None:
        on_plan(todo, len(done), budget)

    def finished(unit: Unit, result: UnitResult | BaseException) -> None:
        if isinstance(result, BaseException):  # the executor lost the unit (a worker died)
            result = UnitResult(unit, error=one_line(result))
        if store is not None:
            if result.error is None:
                store.save(unit.store_key, result.rows, result.adversarial)
            else:
                store.save_failure(unit.store_key, {"unit": unit.store_key, "error": result.error})
        if result.error is not None:
            log.warning("unit %s failed: %s", unit.store_key, result.error)
        done[unit.store_key] = result
        if on_unit is not None:
            on_unit(result)

    work = functools.partial(execute_unit, ctx) if executor == "local" else functools.partial(execute_in_worker, config)
    runner.map(work, todo, finished)
    return [done[u.store_key] for u in units]


def _warn_if_long(ctx: Context, todo: list[Unit], budget: dict[str, int]) -> None:
    """One warning before a run estimated (budget x the forward time measured now) to take long."""
    from robench.progress import count, duration

    chosen = [u for u in todo if u.kind is not UnitKind.PROBES]  # the suite's cost; the diagnostics' is the same for every run
    try:
        seconds = estimated_seconds(ctx, chosen, budget)
    except Exception:  # a target that fails here fails in its units, where the failure is recorded
        log.debug("no cost estimate", exc_info=True)
        return
    if seconds > WARN_SECONDS:
        heaviest = max(chosen, key=lambda u: budget.get(u.store_key, 0))
        log.warning("the suite's attacks may take up to about %s: %s model queries at most, at the forward speed measured just now "
                    "(the largest unit: %s eps=%g %s, %s); lower --n-examples or pick a smaller suite if that is more "
                    "than you meant", duration(seconds), count(sum(budget[u.store_key] for u in chosen)), heaviest.defense, heaviest.epsilon,
                    heaviest.name, count(budget.get(heaviest.store_key, 0)))


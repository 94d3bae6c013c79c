"""Executors run a run's units: in this process, or as tasks on a Ray cluster.

Both call ``robench.runner.execute_unit(config, unit)``; a unit's numbers depend only on the
configuration and the unit (its seeds derive from the run seed and the unit's key), so the
executor changes how fast a run goes, never what it finds. Results are handed back as each unit
finishes, and the runner stores them at once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from robench.errors import RobenchError

if TYPE_CHECKING:
    from robench.runner import EvalConfig, Unit, UnitResult

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    def run(self, config: EvalConfig, units: Sequence[Unit], finished: Callable[[UnitResult], None]) -> None: ...


class LocalExecutor:
    """Units one after another in this process (the model and defenses are built once)."""

    def run(self, config: EvalConfig, units: Sequence[Unit], finished: Callable[[UnitResult], None]) -> None:
        from robench.runner import execute_unit

        for unit in units:
            finished(execute_unit(config, unit))


def _ray_execute(config: EvalConfig, unit: Unit) -> UnitResult:
    from robench.runner import execute_unit

    torch.set_num_threads(1)  # one task per core: Ray schedules the parallelism
    return execute_unit(config, unit)


class RayExecutor:
    """Units as Ray tasks (``pip install robench[ray]``): a local instance, or a cluster at ``address``.

    A task asks for one CPU, and one GPU when the run's device is CUDA. Each worker builds the
    run's context (data, model, defenses) once from the configuration and the model cache; the
    cache directory must be shared by the workers, or the models are trained once per worker.
    """

    def __init__(self, address: str | None, device: torch.device) -> None:
        try:
            import ray
        except ImportError:
            raise RobenchError("--executor ray needs Ray; install it with: pip install 'robench[ray]'") from None
        self.ray = ray
        self.address = address
        self.gpus = 1 if device.type == "cuda" else 0

    def run(self, config: EvalConfig, units: Sequence[Unit], finished: Callable[[UnitResult], None]) -> None:
        ray = self.ray
        if not units:
            return
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, ignore_reinit_error=True)
            except Exception as exc:  # ConnectionError, a bad address, ...
                raise RobenchError(f"cannot start or reach Ray at {self.address or 'a local instance'} ({exc}); "
                                   "check --address or use --executor local") from None
        try:
            task = ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(_ray_execute)
            config_ref = ray.put(config)
            pending = {task.remote(config_ref, unit): unit for unit in units}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    unit = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # the worker died: record the unit as failed, go on
                        from robench.runner import UnitResult

                        result = UnitResult(unit, error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
                    finished(result)
        except KeyboardInterrupt:
            for ref in list(locals().get("pending", {})):
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()


def make_executor(name: str, *, address: str | None = None, device: torch.device | None = None) -> Executor:
    if name == "local":
        if address:
            raise RobenchError("--address is for --executor ray; drop it or add --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, device or torch.device("cpu"))
    raise RobenchError(f"unknown executor {name!r}; valid choices: {', '.join(EXECUTORS)}")

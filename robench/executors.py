"""Executors map a function over work items: in this process, or as tasks on a Ray cluster.

The protocol is ``map(work, items, on_result)``: call ``work(item)`` for every item and hand each
result back as it finishes, ``on_result(item, result)``; where the executor itself loses an item
(a worker process died), ``result`` is the exception. ``prepare(warm)`` may run ``warm()`` once
in every worker ahead of the items (so workers load what the items need while the caller is
still planning), and ``close()`` releases what the executor started. An executor knows nothing of robench:
the runner decides what an item is, stores each result at once, and assembles them in plan order,
so the executor changes how fast a run goes, never what it finds.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch

from robench.errors import RobenchError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
#: seconds ``RayExecutor.close`` waits for warm tasks still running
WARM_WAIT_S = 30.0
Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    def prepare(self, warm: Callable[[], Any]) -> None: ...

    def map(self, work: Callable[[Item], Result], items: Sequence[Item],
            on_result: Callable[[Item, Result | BaseException], None]) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Items one after another in this process."""

    def prepare(self, warm: Callable[[], Any]) -> None:
        """Nothing to warm: the items run here, on the caller's own context."""

    def close(self) -> None:
        pass

    def map(self, work: Callable[[Item], Result], items: Sequence[Item],
            on_result: Callable[[Item, Result | BaseException], None]) -> None:
        for item in items:
            on_result(item, work(item))


def _as_caller(workdir: str | None) -> None:
    """A worker reads relative paths (a ``file.py:callable``, an ``.npz``, a card) as the caller
    does: from the caller's working directory, where the worker's machine has it."""
    import os

    torch.set_num_threads(1)  # one task per core: Ray schedules the parallelism
    if workdir and os.path.isdir(workdir) and os.getcwd() != workdir:
        os.chdir(workdir)


def _call_in_worker(work: Callable[[Any], Any], item: Any, workdir: str | None = None) -> Any:
    _as_caller(workdir)
    return work(item)


def _warm_in_worker(warm: Callable[[], Any], workdir: str | None = None) -> None:
    _as_caller(workdir)
    warm()


class RayExecutor:
    """Items as Ray tasks (``pip install robench[ray]``): a local instance, or a cluster at ``address``.

    A task asks for one CPU, and one GPU when ``gpus`` is set. ``work`` is shipped to the workers
    once (``ray.put``); it must be picklable (a module-level function, or a partial of one). Workers
    import the code this process runs and read relative paths from its working directory
    (``_same_code_env``, ``_as_caller``); everything else they need travels in ``work`` itself.
    """

    def __init__(self, address: str | None, *, gpus: int = 0) -> None:
        try:
            import ray
        except ImportError:
            raise RobenchError("--executor ray needs Ray; install it with: pip install 'robench[ray]'") from None
        self.ray = ray
        self.address = address
        self.gpus = gpus
        self.started_here = False
        self._warming: list[Any] = []
        import os

        self.workdir = os.getcwd()

    def _start(self) -> None:
        """Start a local Ray instance or connect to ``address``, unless this process already has."""
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            # Ray's own start-up lines (INFO, through our root handler) would land inside the progress bar
            logging.getLogger("ray").setLevel(logging.WARNING)
            # a local instance robench starts binds to loopback only: no traffic leaves the machine
            local = {} if self.address else {"_node_ip_address": "127.0.0.1"}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, ignore_reinit_error=True, runtime_env=_same_code_env(), **local)
        except Exception as exc:  # ConnectionError, a bad address, ...
            raise RobenchError(f"cannot start or reach Ray at {self.address or 'a local instance'} ({exc}); "
                               "check --address or use --executor local") from None
        self.started_here = True

    def prepare(self, warm: Callable[[], Any]) -> None:
        """One ``warm()`` task per CPU of the cluster, submitted now: the workers import and load
        while the caller builds its own context and plans, instead of after. Fire and forget: a
        warm task that fails costs nothing but its time (the items report their own errors)."""
        self._start()
        ray = self.ray
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(_warm_in_worker)
        warm_ref = ray.put(warm)
        self._warming = [task.remote(warm_ref, self.workdir) for _ in range(cpus)]

    def map(self, work: Callable[[Item], Result], items: Sequence[Item],
            on_result: Callable[[Item, Result | BaseException], None]) -> None:
        ray = self.ray
        if not items:
            return
        self._start()
        pending: dict[Any, Item] = {}
        try:
            # a task lost with its worker process runs once more elsewhere before it counts as failed
            task = ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=1, retry_exceptions=False)(_call_in_worker)
            work_ref = ray.put(work)
            pending = {task.remote(work_ref, item, self.workdir): item for item in items}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    item = pending.pop(ref)
                    try:
                        result: Result | BaseException = ray.get(ref)
                    except Exception as exc:  # the worker died: hand the error back, go on
                        result = exc
                    on_result(item, result)
        except KeyboardInterrupt:
            for ref in list(pending):
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        """Shut Ray down if this executor started it (a caller's own ``ray.init`` is left running).

        Warm tasks still running (a run shorter than a worker's start) are awaited briefly and
        collected, so that shutting down does not kill them and Ray print their deaths."""
        warming, self._warming = self._warming, []
        if warming:
            ready, _ = self.ray.wait(warming, num_returns=len(warming), timeout=WARM_WAIT_S)
            for ref in ready:
                try:
                    self.ray.get(ref)
                except Exception:  # noqa: BLE001 - a warm task's failure is the units' to report
                    pass
        if self.started_here:
            self.started_here = False
            self.ray.shutdown()


def _same_code_env() -> dict[str, Any]:
    """Workers import the package this process runs (its folder first on their path), never a
    ``robench/`` folder that happens to lie in their working directory."""
    import os
    from pathlib import Path

    import robench

    root = str(Path(robench.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def make_executor(name: str, *, address: str | None = None, device: torch.device | None = None) -> Executor:
    if name == "local":
        if address:
            raise RobenchError("--address is for --executor ray; drop it or add --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, gpus=1 if device is not None and device.type == "cuda" else 0)
    raise RobenchError(f"unknown executor {name!r}; valid choices: {', '.join(EXECUTORS)}")

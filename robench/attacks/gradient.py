"""Gradient attacks through foolbox: one adapter, so any foolbox attack can be named in a suite.

Registered short names pick the foolbox class that matches the threat model's norm (``bim`` is
``LinfBasicIterativeAttack`` under L-inf and ``L2BasicIterativeAttack`` under L2);
``foolbox.ClassName`` names any other foolbox attack directly. ``pgd`` is robench's own
(``robench/attacks/pgd.py``: same parameters, faster); foolbox's PGD stays reachable as
``foolbox.LinfPGD`` / ``foolbox.L2PGD``. Parameters of a card go to the foolbox class, except
``restarts`` (robench runs the attack again from a new random start on the examples still robust,
keeping the first proposal that breaks each one).

Randomness: PGD-style random starts are drawn from the per-example counter streams of
``robench.rng``, so they do not depend on the batch; other foolbox attacks draw from torch's
global generator, which robench seeds (in a forked RNG state) from the batch's seeds.
"""
from __future__ import annotations

import inspect
from typing import Any

import eagerpy as ep
import foolbox as fb
import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.base import Attack, AttackResult
from robench.errors import RobenchError
from robench.registry import attacks
from robench.target import QueryCounter, logits_in_chunks
from robench.threat import ThreatModel, random_delta

#: short name -> foolbox class per norm
FOOLBOX_BY_NORM: dict[str, dict[str, str]] = {
    "fgsm": {"linf": "LinfFastGradientAttack", "l2": "L2FastGradientAttack"},
    "bim": {"linf": "LinfBasicIterativeAttack", "l2": "L2BasicIterativeAttack"},
    "mifgsm": {"linf": "LinfMomentumIterativeFastGradientMethod", "l2": "L2MomentumIterativeFastGradientMethod"},
    "deepfool": {"linf": "LinfDeepFoolAttack", "l2": "L2DeepFoolAttack"},
    "fmn": {"linf": "LInfFMNAttack", "l2": "L2FMNAttack"},
    "cw": {"l2": "L2CarliniWagnerAttack"},
    "ddn": {"l2": "DDNAttack"},
}


#: foolbox's PGD per norm (not registered: ``pgd`` is native; used to compare against foolbox)
FOOLBOX_PGD: dict[str, str] = {"linf": "LinfProjectedGradientDescentAttack", "l2": "L2ProjectedGradientDescentAttack"}


def _norm_of(distance: Any) -> str | None:
    """'linf' / 'l2' for a foolbox LpDistance, None for anything else."""
    p = getattr(distance, "p", None)
    return {float("inf"): "linf", 2: "l2"}.get(p)


def _seeded_start(cls: type) -> type:
    """Subclass a foolbox gradient-descent attack so its random start uses per-example streams."""

    class SeededStart(cls):  # type: ignore[misc, valid-type]
        robench_seeds: Tensor | None = None
        robench_counter: int = 0

        def get_random_start(self, x0: ep.Tensor, epsilon: float) -> ep.Tensor:
            raw = x0.raw
            delta = random_delta(_norm_of(self.distance) or "linf", float(epsilon), tuple(raw.shape[1:]), seeds=self.robench_seeds.to(raw.device),
                                        counter=self.robench_counter, dtype=raw.dtype)
            return ep.astensor(raw + delta)  # foolbox clips to the bounds itself

    SeededStart.__name__ = f"Seeded{cls.__name__}"
    return SeededStart


class FoolboxAttack(Attack):
    """Runs a foolbox attack at the threat model's epsilon; its clipped output is the proposal."""

    gradient_free = False

    def __init__(self, name: str, class_names: dict[str, str], *, restarts: int = 1, max_batch: int | None = None, **params: Any) -> None:
        if restarts < 1:
            raise RobenchError(f"{name}: restarts must be >= 1, got {restarts}")
        self.name = name  # type: ignore[misc]
        self._class_names = class_names
        self.restarts = int(restarts)
        self.max_batch = max_batch
        for norm, class_name in class_names.items():
            cls = getattr(fb.attacks, class_name)
            valid = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
            unknown = set(params) - valid
            if unknown:
                raise RobenchError(
                    f"{name}: unknown parameter(s) {', '.join(sorted(unknown))} for foolbox {class_name}; "
                    f"valid: {', '.join(sorted(valid | {'restarts', 'max_batch'}))}"
                )
        self.foolbox_params = dict(params)

    def params(self) -> dict[str, Any]:
        return {"restarts": self.restarts, **self.foolbox_params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}[{'/'.join(self._class_names.values())}]({args})"

    def budget(self, threat: ThreatModel) -> int | None:
        """``steps`` (times ``binary_search_steps`` where the class has them), as given or the class's default."""
        class_name = self._class_names.get(threat.norm)
        if class_name is None:
            return None
        defaults = {k: p.default for k, p in inspect.signature(getattr(fb.attacks, class_name).__init__).parameters.items()}
        value = {**defaults, **self.foolbox_params}
        steps = value.get("steps", 1)
        searches = value.get("binary_search_steps", 1)
        if not isinstance(steps, int) or not isinstance(searches, int):
            return None
        return (steps + 1) * searches * self.restarts

    def supports(self, norm: str) -> bool:
        return norm in self._class_names

    def _foolbox_attack(self, norm: str) -> Any:
        class_name = self._class_names.get(norm)
        if class_name is None:
            raise RobenchError(
                f"attack {self.name!r} has no {norm} version; it supports {', '.join(self._class_names)}"
            )
        cls = getattr(fb.attacks, class_name)
        if hasattr(cls, "get_random_start"):
            cls = _seeded_start(cls)
        return cls(**self.foolbox_params)

    def run(self, target: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, seeds: Tensor) -> AttackResult:
        attack = self._foolbox_attack(threat.norm)
        counter = QueryCounter(target).eval()
        model = fb.PyTorchModel(counter, bounds=threat.bounds, device=x.device)
        n = len(x)
        x_adv = x.clone()
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        remaining = torch.arange(n, device=x.device)
        max_batch = self.max_batch or 4096
        for restart in range(self.restarts):
            for start in range(0, len(remaining), max_batch):
                idx = remaining[start : start + max_batch]
                counter.rows = 0
                if hasattr(attack, "robench_seeds"):
                    attack.robench_seeds, attack.robench_counter = seeds[idx], 2 * restart
                with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                    torch.manual_seed(rng.derive_seed(seeds[idx].tolist(), restart))
                    _, clipped, _ = attack(model, x[idx], y[idx], epsilons=threat.epsilon)
                queries[idx] += -(-counter.rows // len(idx))  # rows per example, rounded up
                x_adv[idx] = clipped.detach()
            if restart + 1 < self.restarts:
                with torch.no_grad():
                    still_correct = logits_in_chunks(target, x_adv[remaining], max_batch).argmax(1) == y[remaining]
                queries[remaining] += 1
                remaining = remaining[still_correct]
                if len(remaining) == 0:
                    break
        return AttackResult(x_adv, queries)


def _factory(name: str, class_names: dict[str, str]):
    def make(**params: Any) -> FoolboxAttack:
        return FoolboxAttack(name, class_names, **params)

    make.__doc__ = f"foolbox {' / '.join(class_names.values())}"
    return make


for _short, _classes in FOOLBOX_BY_NORM.items():
    attacks.register(_short, description=f"foolbox {' / '.join(_classes.values())}")(_factory(_short, _classes))


def foolbox_by_class_name(name: str):
    """Resolve ``foolbox.ClassName`` to an adapter factory (None if it is not a foolbox attack)."""
    if not name.startswith("foolbox."):
        return None
    class_name = name.split(".", 1)[1]
    cls = getattr(fb.attacks, class_name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, fb.attacks.base.Attack):
        return None
    norm = _norm_of(getattr(cls, "distance", None))
    norms = {norm: class_name} if norm else {"linf": class_name, "l2": class_name}
    return _factory(name, norms)


attacks.fallback = foolbox_by_class_name

"""Gradient attacks through foolbox: one adapter, so any foolbox attack can be named in a suite.

Registered short names pick the foolbox class that matches the threat model's norm (``bim`` is
``LinfBasicIterativeAttack`` under L-inf and ``L2BasicIterativeAttack`` under L2);
``foolbox.ClassName`` names any other foolbox attack directly. ``pgd`` is robench's own
(``robench/attacks/pgd.py``: same parameters, faster); foolbox's PGD stays reachable as
``foolbox.LinfPGD`` / ``foolbox.L2PGD``. So is ``mifgsm`` (``robench/attacks/mifgsm.py``: the
paper's L1-normalized momentum, which foolbox omits, with early exit and exact query counts);
foolbox's is ``foolbox.LinfMomentumIterativeFastGradientMethod`` / ``foolbox.L2Momentum...``.
Parameters of a card go to the foolbox class, except ``restarts`` (robench runs the attack again from a new random start on the examples still robust,
keeping the first proposal that breaks each one).

Restarts, the check between them and query counts are ``robench.attacks.iterative``'s; rows are
counted per example (foolbox asks for whole copies of a chunk), not the chunk's total rounded.

Randomness: PGD-style random starts are drawn from the per-example counter streams of
``robench.rng``, so they do not depend on the batch; other foolbox attacks draw from torch's
global generator, which robench seeds (in a forked RNG state) from the batch's seeds.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

import eagerpy as ep
import foolbox as fb
import torch
from torch import Tensor, nn

from robench import rng
from robench.attacks.iterative import Batch, IterativeAttack, Run, RunResult, Setup
from robench.errors import RobenchError
from robench.hyperparameters import Int, declare
from robench.registry import attacks
from robench.target import is_differentiable, is_randomized
from robench.threat import ThreatModel, ball_of

#: short name -> foolbox class per norm
FOOLBOX_BY_NORM: dict[str, dict[str, str]] = {
    "fgsm": {"linf": "LinfFastGradientAttack", "l2": "L2FastGradientAttack"},
    "bim": {"linf": "LinfBasicIterativeAttack", "l2": "L2BasicIterativeAttack"},
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
        robench_stream: rng.Stream | None = None

        def get_random_start(self, x0: ep.Tensor, epsilon: float) -> ep.Tensor:
            raw = x0.raw
            ball = ball_of(_norm_of(self.distance) or "linf")
            delta = ball.uniform(self.robench_stream, tuple(raw.shape[1:]), float(epsilon), raw.dtype)
            return ep.astensor(raw + delta)  # foolbox clips to the bounds itself

    SeededStart.__name__ = f"Seeded{cls.__name__}"
    return SeededStart


class FoolboxAttack(IterativeAttack):
    """Runs a foolbox attack at the threat model's epsilon; its clipped output is the proposal.

    Restarts, the check between them and query counts are ``IterativeAttack``'s."""

    gradient_free = False
    #: restart r's random start is draw 2r (L2: the direction) and 2r + 1 (the L2 radius), each in
    #: its own units: the adapter's layout since its first release, kept so its numbers do not
    #: change (the radius's uniform counter 2r + 1 is also the second uniform of restart r / 2's
    #: L2 direction for even r, restart 0 its own)
    streams: ClassVar[rng.Layout] = rng.Layout(stride=2)

    #: robench's own parameters; foolbox's are checked against the foolbox class's signature
    hyperparameters = declare(
        restarts=Int(1, "runs from fresh random starts, each on the examples still robust", ge=1),
        max_batch=Int(None, "rows per forward pass; None: chosen from the input size", ge=1),
    )

    def __init__(self, name: str, class_names: dict[str, str], *, restarts: int = 1, max_batch: int | None = None, **params: Any) -> None:
        self.name = name  # type: ignore[misc]
        self._class_names = class_names
        self._set({"restarts": restarts, "max_batch": max_batch})
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

    def prepare(self, batch: Batch) -> Setup:
        """The foolbox attack for the threat model's norm and its model, counting rows per example."""
        counter = _ExampleCounter(batch.target).eval()
        model = fb.PyTorchModel(counter, bounds=batch.threat.bounds, device=batch.x.device)
        return Setup(context=(self._foolbox_attack(batch.threat.norm), model, counter))

    def attack_run(self, batch: Batch, run: Run, stream: rng.Stream, setup: Setup) -> RunResult:
        """foolbox on the batch, ``max_batch`` rows at a time; its clipped output is the proposal
        (whether it breaks is checked by the base before the next restart)."""
        attack, model, counter = setup.context
        proposal = batch.x.clone()
        used = torch.zeros(len(batch.x), dtype=torch.long, device=batch.x.device)
        for start in range(0, len(batch.x), batch.max_batch):
            chunk = torch.arange(start, min(start + batch.max_batch, len(batch.x)), device=batch.x.device)
            counter.reset(len(chunk))
            if hasattr(attack, "robench_stream"):
                attack.robench_stream = stream.subset(chunk)
            with torch.random.fork_rng(devices=[batch.x.device] if batch.x.device.type == "cuda" else []):
                torch.manual_seed(rng.derive_seed(batch.seeds[chunk].tolist(), run.restart))
                _, clipped, _ = attack(model, batch.x[chunk], batch.y[chunk], epsilons=batch.threat.epsilon)
            used[chunk] = counter.rows_per_example.to(used.device)
            proposal[chunk] = clipped.detach()
        return RunResult(proposal, used)


class _ExampleCounter(nn.Module):
    """Counts the rows foolbox asks the target for, per example of the current chunk.

    foolbox evaluates the model on the whole chunk at once (k copies of its n rows, in order: k
    passes per example), so a call of k * n rows costs each example k; a call of m rows that is not
    a whole number of copies is counted by position (row j is example j mod n). The count is exact
    per example, not the chunk's total spread evenly (the adapter used to round that up).
    """

    def __init__(self, target: nn.Module) -> None:
        super().__init__()
        self.target = target
        self.differentiable = is_differentiable(target)
        self.randomized = is_randomized(target)
        self.rows_per_example = torch.zeros(0, dtype=torch.long)

    def reset(self, n: int) -> None:
        self.rows_per_example = torch.zeros(n, dtype=torch.long)

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.rows_per_example)
        copies, rest = divmod(len(x), n)
        self.rows_per_example += copies
        self.rows_per_example[:rest] += 1
        return self.target(x)


def _factory(name: str, class_names: dict[str, str]):
    def make(*, restarts: int = 1, max_batch: int | None = None, **params: Any) -> FoolboxAttack:
        return FoolboxAttack(name, class_names, restarts=restarts, max_batch=max_batch, **params)

    make.__doc__ = f"foolbox {' / '.join(class_names.values())}"
    make.hyperparameters = FoolboxAttack.hyperparameters  # type: ignore[attr-defined]
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

"""The conformance kit: the checks robench runs on its own registry, for your attack, defense or certifier.

A plugin author runs in their own pytest exactly what robench's conformance tests run on every
registered attack, defense and certifier (in the spirit of scikit-learn's
``parametrize_with_checks``)::

    # test_my_attack.py
    from robench.testing import parametrize_with_checks
    from my_attacks import MyAttack

    @parametrize_with_checks([MyAttack(steps=5)])
    def test_robench_contract(obj, check):
        check(obj)

or one call that runs every check and raises on the first failure::

    from robench.testing import check_attack
    check_attack(MyAttack(steps=5))

Every attack and certifier first shows the declarations the harness reads (``robench.method``:
name, input kinds, ``sound``, the norms it supports, a budget per example) and, where it declares
its hyperparameters (``robench.hyperparameters``), that they match its constructor's keywords and
defaults and that a value below a declared minimum is refused with the one message. Then, on small fixed targets (a conv net on 1x6x6 images and a 1-D conv net on 1x12
sequences, three classes), for each norm the object supports:

* **attacks** (``Attack`` subclasses): proposals have the inputs' shape and dtype, lie in the ball
  and the data bounds, are finite; queries are one non-negative integer per example and add up
  to the rows the target was asked for (exact per example); the same seeds give the same
  proposals; an example's proposal does not depend on the other examples of its batch; the
  inputs are not modified.
* **defenses** (``factory(model, **params) -> nn.Module``): logits of shape (N, classes), finite;
  flags are booleans; a target that does not declare ``randomized`` answers the same input the
  same way twice, one that does is reproducible after ``robench.target.reseed``; BPDA/EOT give a
  finite gradient, non-zero where the raw one is masked; the wrapped model is not modified.
* **certifiers** (``Certifier`` subclasses), on a small ReLU MLP (or what the certifier's
  ``example_target(model)`` wraps it in: smoothing certifies the gaussian-noise defense): statuses
  are valid codes; a certified example is classified correctly, and, for a certifier that declares
  itself ``sound``, no point of the ball found by sampling (2,000 random points per example, the
  ball's vertices or surface) or by PGD changes its prediction; every counterexample lies in the
  ball and is misclassified; the same call gives the same answer.

Each check raises ``AssertionError`` with a sentence saying what broke, or skips (``pytest.skip``
when pytest is running) when the object has no version for a norm or input kind.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "check_attack", "check_defense", "check_certifier", "attack_checks", "defense_checks", "certifier_checks",
    "parametrize_with_checks", "DefenseUnderTest", "toy_problem", "ToyImageNet", "ToySignalNet", "EPSILON",
]

#: the radius each norm's checks use (inputs in [0, 1])
EPSILON: dict[str, float] = {"linf": 0.1, "l2": 0.5}
NORMS: tuple[str, ...] = ("linf", "l2")
KINDS: tuple[str, ...] = ("image", "sequence")


# -- toy targets ---------------------------------------------------------------------------


class ToyImageNet(nn.Module):
    """Three classes from 1x6x6 inputs: small, smooth, deterministic."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.linear = nn.Linear(4 * 4 * 4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(torch.relu(self.conv(x)).flatten(1))


class ToySignalNet(nn.Module):
    """Three classes from 1x12 sequences: the sequence twin of the image net."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv1d(1, 4, 3)
        self.linear = nn.Linear(4 * 10, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(torch.relu(self.conv(x)).flatten(1))


def _toy_mlp(features: int) -> nn.Sequential:
    """A small ReLU MLP (Flatten, Linear, ReLU, Linear), a plain Sequential every certifier reads."""
    generator = torch.Generator().manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(features, 12), nn.ReLU(), nn.Linear(12, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.6)
    return net


def toy_problem(kind: str = "image", n: int = 6, *, mlp: bool = False) -> tuple[nn.Module, Tensor, Tensor]:
    """(model, x, y): a fixed toy model of ``kind`` ("image": 1x6x6, "sequence": 1x12), ``n``
    inputs in [0, 1] and the labels the model gives them (so every example starts correct)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    shape = (1, 6, 6) if kind == "image" else (1, 12)
    if mlp:
        model: nn.Module = _toy_mlp(36 if kind == "image" else 12)
    else:
        model = ToyImageNet() if kind == "image" else ToySignalNet()
    model.eval()
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


# -- shared helpers ------------------------------------------------------------------------


def _skip(reason: str) -> None:
    """Skip under pytest; elsewhere a check that does not apply simply returns."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - pytest is how this kit is meant to run
        raise _NotApplicable(reason) from None
    pytest.skip(reason)


class _NotApplicable(Exception):
    """A check that does not apply to this object (outside pytest)."""


class _Counted(nn.Module):
    """Counts the rows the wrapped model is asked to classify (every call, forward or backward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        return self.model(x)


def _seeds(key: str, n: int) -> Tensor:
    from robench import rng

    return rng.example_seeds(0, key, torch.arange(n))


def _threat(norm: str):
    from robench.threat import ThreatModel

    return ThreatModel(norm, EPSILON[norm], (0.0, 1.0))


def _name(obj: Any) -> str:
    return getattr(obj, "name", None) or type(obj).__name__


# -- attacks -------------------------------------------------------------------------------


def _attack_applies(attack: Any, norm: str, kind: str) -> None:
    from robench.target import supports_input

    if not attack.supports(norm):
        _skip(f"{_name(attack)} has no {norm} version")
    if not supports_input(getattr(attack, "inputs", ("any",)), kind):
        _skip(f"{_name(attack)} does not take {kind} inputs")


def _run_attack(attack: Any, model: nn.Module, x: Tensor, y: Tensor, norm: str, seeds: Tensor):
    from robench.errors import RobenchError

    threat = _threat(norm)
    try:
        return threat, attack.run(model, x, y, threat, seeds=seeds)
    except RobenchError as error:
        if f"no {norm} version" in str(error):  # the one acceptable refusal: an unsupported norm
            _skip(str(error))
        raise


def check_attack_proposals_in_threat_model(attack: Any, norm: str = "linf", kind: str = "image") -> None:
    """Proposals: the inputs' shape and dtype, in the ball, in the bounds, finite; inputs untouched."""
    _attack_applies(attack, norm, kind)
    model, x, y = toy_problem(kind)
    before = x.clone()
    threat, result = _run_attack(attack, model, x, y, norm, _seeds(f"conformance|{_name(attack)}", len(x)))
    assert torch.equal(x, before), f"{_name(attack)} modified its inputs x"
    assert result.x_adv.shape == x.shape, f"{_name(attack)}: x_adv has shape {tuple(result.x_adv.shape)}, inputs {tuple(x.shape)}"
    assert result.x_adv.dtype == x.dtype, f"{_name(attack)}: x_adv is {result.x_adv.dtype}, inputs {x.dtype}"
    inside = threat.contains(result.x_adv, x, tolerance=1e-6)
    assert inside.all(), (f"{_name(attack)}: proposals of examples {(~inside).nonzero().flatten().tolist()} lie outside "
                          f"the {norm} ball of {threat.epsilon} or the bounds [0, 1] (or are not finite)")


def check_attack_counts_queries_exactly(attack: Any, norm: str = "linf", kind: str = "image") -> None:
    """Queries: one non-negative integer per example, adding up to the rows the target answered."""
    _attack_applies(attack, norm, kind)
    model, x, y = toy_problem(kind)
    counted = _Counted(model).eval()
    _, result = _run_attack(attack, counted, x, y, norm, _seeds(f"conformance|{_name(attack)}", len(x)))
    queries = result.queries
    assert isinstance(queries, Tensor) and queries.shape == (len(x),) and not queries.is_floating_point(), (
        f"{_name(attack)}: queries must be an integer tensor of shape ({len(x)},), got "
        f"{getattr(queries, 'dtype', type(queries).__name__)} of shape {tuple(getattr(queries, 'shape', ()))}")
    assert (queries >= 0).all() and (queries > 0).any(), f"{_name(attack)}: queries {queries.tolist()} must be >= 0, some > 0"
    assert int(queries.sum()) == counted.rows, (
        f"{_name(attack)}: queries add up to {int(queries.sum())} but the target was asked for {counted.rows} rows; "
        "count every forward row (a forward+backward pass of one example is one query)")


def check_attack_is_deterministic(attack: Any, norm: str = "linf", kind: str = "image") -> None:
    """The same seeds give the same proposals and counts (no global RNG, no clock)."""
    _attack_applies(attack, norm, kind)
    model, x, y = toy_problem(kind)
    seeds = _seeds(f"conformance|{_name(attack)}", len(x))
    _, first = _run_attack(attack, model, x, y, norm, seeds)
    torch.manual_seed(12345)  # a different global RNG state must not matter either
    _, again = _run_attack(attack, model, x, y, norm, seeds)
    assert torch.equal(again.x_adv, first.x_adv), f"{_name(attack)}: the same seeds gave different proposals"
    assert torch.equal(again.queries, first.queries), f"{_name(attack)}: the same seeds gave different query counts"


def check_attack_is_batch_independent(attack: Any, norm: str = "linf", kind: str = "image") -> None:
    """An example's proposal depends on its own seed only, not on the other examples of the batch."""
    _attack_applies(attack, norm, kind)
    model, x, y = toy_problem(kind)
    seeds = _seeds(f"conformance|{_name(attack)}", len(x))
    _, batch = _run_attack(attack, model, x, y, norm, seeds)
    for i in (0, 2, len(x) - 1):
        _, alone = _run_attack(attack, model, x[i : i + 1], y[i : i + 1], norm, seeds[i : i + 1])
        assert torch.allclose(alone.x_adv, batch.x_adv[i : i + 1], atol=1e-5), (
            f"{_name(attack)}: example {i}'s proposal changes when it runs alone; draw randomness from its own seed "
            "(robench.rng) and never from a batch-wide generator")


def check_method_declarations(method: Any, norm: str = "linf", kind: str = "image") -> None:
    """The declarations the harness reads (``robench.method.Method``): a name, input kinds, whether
    it is ``sound``, which norms it supports and a budget per example."""
    from robench.method import Method

    assert isinstance(method, Method), (
        f"{type(method).__name__} lacks part of the method contract (name, inputs, sound, supports, budget); "
        "subclass robench.attacks.Attack or robench.certify.Certifier")
    assert isinstance(method.sound, bool), f"{_name(method)}: sound must be a bool, got {method.sound!r}"
    assert isinstance(method.supports(norm), bool), f"{_name(method)}: supports({norm!r}) must return a bool"
    if method.supports(norm):
        budget = method.budget(_threat(norm))
        assert budget is None or (isinstance(budget, int) and budget >= 0), (
            f"{_name(method)}: budget must be None or an integer >= 0, got {budget!r}")
    if _is_attack(method):
        assert method.sound is False, f"{_name(method)}: an attack certifies nothing (sound = False)"


def check_hyperparameters_declared(method: Any, norm: str = "linf", kind: str = "image") -> None:
    """Where a class declares its hyperparameters (``robench.hyperparameters``; optional: a card's
    values for one that does not are checked by its type hints), it declares each keyword of its
    constructor, with the signature's default, and its constructor refuses a value just below a
    declared minimum with the one message, ``"{owner}: {name} must be {expected}, got {value!r}"``."""
    import inspect
    import re

    from robench.errors import RobenchError
    from robench.hyperparameters import declarations

    cls = type(method)
    declared = declarations(cls)
    if not declared:
        return
    signature = inspect.signature(cls.__init__)
    keywords = {n: p for n, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(keywords) == set(declared), (
        f"{_name(method)}: keywords {sorted(set(keywords) - set(declared))} are not declared in its hyperparameters, "
        f"declared {sorted(set(declared) - set(keywords))} are not keywords of its constructor")
    for key, parameter in keywords.items():
        assert parameter.default == declared[key].default and type(parameter.default) is type(declared[key].default), (
            f"{_name(method)}: {key} defaults to {parameter.default!r} in the signature, {declared[key].default!r} "
            "in its declaration")
    if any(p.default is inspect.Parameter.empty and p.kind is not p.KEYWORD_ONLY and n != "self"
           for n, p in signature.parameters.items()):
        return  # built by a factory with positional arguments (the foolbox adapter): not rebuilt here
    for key, declaration in declared.items():
        bad = declaration.just_below() if declaration.kind in (int, float) else None
        if bad is None:
            continue
        try:
            cls(**{key: bad})
        except RobenchError as error:
            expected = f"{key} must be {declaration.expected()}, got {bad!r}"
            assert re.fullmatch(rf".+: {re.escape(expected)}", str(error)), (
                f"{_name(method)}: {key}={bad!r} is refused with {str(error)!r}, not the one message "
                f"'<owner>: {expected}' (robench.hyperparameters.check)")
        else:
            raise AssertionError(f"{_name(method)}: {key}={bad!r} is below its declared minimum but the constructor "
                                 "accepts it; validate with self._set(locals())")


def _is_attack(obj: Any) -> bool:
    from robench.attacks.base import Attack

    return isinstance(obj, Attack)


ATTACK_CHECKS: tuple[Callable[..., None], ...] = (
    check_method_declarations, check_hyperparameters_declared,
    check_attack_proposals_in_threat_model, check_attack_counts_queries_exactly,
    check_attack_is_deterministic, check_attack_is_batch_independent,
)


# -- defenses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefenseUnderTest:
    """A defense factory and the parameters to build it with (what a card gives)."""

    factory: Callable[..., nn.Module]
    params: tuple[tuple[str, Any], ...] = ()
    name: str = ""
    #: the input kinds it supports (default: the factory's ``inputs`` attribute, else any)
    inputs: tuple[str, ...] | None = None

    def supports(self, kind: str) -> bool:
        from robench.target import supports_input

        return supports_input(self.inputs or tuple(getattr(self.factory, "inputs", ("any",))), kind)

    def build(self, model: nn.Module) -> nn.Module:
        return self.factory(model, **dict(self.params)).eval()

    def __repr__(self) -> str:
        label = self.name or getattr(self.factory, "__name__", "defense")
        return label + (f"({', '.join(f'{k}={v!r}' for k, v in self.params)})" if self.params else "")


def _as_defense(obj: Any) -> DefenseUnderTest:
    return obj if isinstance(obj, DefenseUnderTest) else DefenseUnderTest(obj)


def _state(model: nn.Module) -> dict[str, Any]:
    """What a defense must leave as it was on the model it wraps: parameters, buffers, attributes."""
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    attributes = {f"{name}.{k}": v for name, m in model.named_modules() for k, v in vars(m).items()
                  if not k.startswith("_") and not isinstance(v, (Tensor, nn.Module))}
    return {"tensors": tensors, "attributes": attributes, "training": model.training}


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["attributes"] == b["attributes"] and a["training"] == b["training"]
            and a["tensors"].keys() == b["tensors"].keys()
            and all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"]))


def _defense_applies(defense: DefenseUnderTest, kind: str) -> None:
    if not defense.supports(kind):
        _skip(f"{defense!r} does not take {kind} inputs")


def check_defense_logits(defense: Any, kind: str = "image") -> None:
    """Logits of shape (N, classes), finite; flags are booleans; the wrapped model is not modified."""
    from robench.target import is_differentiable, is_randomized

    defense = _as_defense(defense)
    _defense_applies(defense, kind)
    model, x, _ = toy_problem(kind)
    before = _state(model)
    target = defense.build(model)
    with torch.no_grad():
        logits = target(x)
    assert isinstance(logits, Tensor) and logits.shape == (len(x), 3), (
        f"{defense!r} returned {tuple(getattr(logits, 'shape', ()))} for {len(x)} inputs; logits must be (N, classes)")
    assert torch.isfinite(logits).all(), f"{defense!r} returned NaN or infinite logits"
    for flag, value in (("differentiable", is_differentiable(target)), ("randomized", is_randomized(target))):
        assert isinstance(value, bool), f"{defense!r}: the {flag} flag must be a bool, got {value!r}"
    assert _same_state(before, _state(model)), f"{defense!r} modified the model it wraps (weights, buffers, mode or attributes)"


def check_defense_randomness_is_declared(defense: Any, kind: str = "image") -> None:
    """A target that does not declare ``randomized`` answers the same input the same way twice; one
    that does gives the same draws again after ``robench.target.reseed`` (runs are reproducible)."""
    from robench.target import is_randomized, reseed

    defense = _as_defense(defense)
    _defense_applies(defense, kind)
    model, x, _ = toy_problem(kind)
    target = defense.build(model)
    randomized = any(is_randomized(m) for m in target.modules())
    with torch.no_grad(), torch.random.fork_rng():
        if not randomized:
            first, second = target(x), target(x)
            assert torch.equal(first, second), (
                f"{defense!r} answers the same input differently on two calls but does not declare randomized = True; "
                "declare it so that robench uses EOT and a majority vote")
            return
        reseed(target, 7)
        first = target(x)
        reseed(target, 7)
        second = target(x)
    assert torch.equal(first, second), (
        f"{defense!r} is randomized but not reproducible: draw from a robench.target.SeededDraws (attribute `draws`) "
        "or define reseed(seed)")


def check_defense_gradients(defense: Any, kind: str = "image") -> None:
    """Through robench's BPDA/EOT view the input gradient is finite, and non-zero where the raw one is masked."""
    from robench.attacks.adaptive import adaptive_target
    from robench.target import is_differentiable

    defense = _as_defense(defense)
    _defense_applies(defense, kind)
    model, x, y = toy_problem(kind)
    target = defense.build(model)
    attackable = adaptive_target(target, eot_samples=2)
    x_grad = x.clone().requires_grad_(True)
    with torch.random.fork_rng():
        nn.functional.cross_entropy(attackable(x_grad), y).backward()
    assert x_grad.grad is not None and torch.isfinite(x_grad.grad).all(), f"{defense!r}: no finite input gradient through BPDA/EOT"
    if not all(is_differentiable(m) for m in target.modules()):
        assert x_grad.grad.abs().sum() > 0, f"{defense!r}: BPDA gives a zero gradient where the raw one is masked"


DEFENSE_CHECKS: tuple[Callable[..., None], ...] = (
    check_defense_logits, check_defense_randomness_is_declared, check_defense_gradients,
)


# -- certifiers ----------------------------------------------------------------------------

#: random points sampled per certified example in the soundness check
BALL_SAMPLES = 2000
#: the radii the certifier checks use: small enough that a toy MLP certifies some examples
CERTIFY_EPSILON: dict[str, float] = {"linf": 0.02, "l2": 0.08}


def _certifier_applies(certifier: Any, norm: str) -> None:
    if not certifier.supports(norm):
        _skip(f"{_name(certifier)} has no {norm} version")


def _certify(certifier: Any, model: nn.Module, x: Tensor, y: Tensor, norm: str):
    """(threat, certification) of ``certifier`` on its example target around ``model``."""
    from robench.errors import RobenchError
    from robench.threat import ThreatModel

    threat = ThreatModel(norm, CERTIFY_EPSILON[norm], (0.0, 1.0))
    try:
        certifier.check(model, threat, tuple(x.shape[1:]))
    except RobenchError as error:
        _skip(f"{_name(certifier)} refuses the toy MLP: {error}")
    return threat, certifier.certify(model, x, y, threat, seeds=_seeds(f"conformance|{_name(certifier)}", len(x)))


def _example_target(certifier: Any, model: nn.Module) -> nn.Module:
    wrap = getattr(certifier, "example_target", None)
    return wrap(model) if callable(wrap) else model


def _linf_deltas(shape: tuple[int, ...], epsilon: float, generator: torch.Generator) -> Tensor:
    """Even samples uniform in the cube, odd ones on its vertices (where a linear piece peaks)."""
    inside = (torch.rand(shape, generator=generator) * 2 - 1) * epsilon
    corners = torch.randint(0, 2, shape, generator=generator).float().mul(2).sub(1) * epsilon
    even = torch.arange(shape[0]).view(-1, *[1] * (len(shape) - 1)) % 2 == 0
    return torch.where(even, inside, corners)


def _l2_deltas(shape: tuple[int, ...], epsilon: float, generator: torch.Generator) -> Tensor:
    """Even samples on the sphere, odd ones uniform in the ball (radius u^(1/d))."""
    g = torch.randn(shape, generator=generator)
    per_row = (shape[0], shape[1], *[1] * (len(shape) - 2))
    direction = g / g.flatten(2).norm(dim=2).clamp_min(1e-12).view(per_row)
    d = 1
    for size in shape[2:]:
        d *= size
    radius = torch.rand(shape[:2], generator=generator) ** (1.0 / d)
    radius[::2] = 1.0
    return direction * epsilon * radius.view(per_row)


#: a test oracle per norm, written apart from the balls it checks
_BALL_SAMPLERS: dict[str, Callable[[tuple[int, ...], float, torch.Generator], Tensor]] = {
    "linf": _linf_deltas, "l2": _l2_deltas,
}


def _ball_points(threat: Any, x: Tensor, samples: int, seed: int) -> Tensor:
    """``samples`` points of the ball around each row of ``x``, clipped to the bounds: shape (samples, N, ...)."""
    generator = torch.Generator().manual_seed(seed)
    delta = _BALL_SAMPLERS[threat.norm]((samples, *x.shape), threat.epsilon, generator)
    return (x.unsqueeze(0) + delta).clamp(*threat.bounds)


def check_certifier_is_sound(certifier: Any, norm: str = "linf") -> None:
    """A certified example is correct at x, and neither sampling the ball nor PGD changes its prediction."""
    from robench import rng
    from robench.attacks.pgd import PGD
    from robench.certify.base import CERTIFIED, COUNTEREXAMPLE, UNKNOWN

    _certifier_applies(certifier, norm)
    network, x, y = toy_problem("image", n=24, mlp=True)
    model = _example_target(certifier, network)
    threat, result = _certify(certifier, model, x, y, norm)
    status = result.status
    assert status.shape == (len(x),), f"{_name(certifier)}: status must have shape ({len(x)},), got {tuple(status.shape)}"
    codes = {UNKNOWN, CERTIFIED, COUNTEREXAMPLE}
    assert set(status.tolist()) <= codes, f"{_name(certifier)}: status codes {sorted(set(status.tolist()))} outside {sorted(codes)}"
    certified = (status == CERTIFIED).nonzero().flatten()
    if len(certified) == 0:
        return
    xc, yc = x[certified], y[certified]
    with torch.no_grad():
        assert (model(xc).argmax(1) == yc).all(), f"{_name(certifier)} certified an example it misclassifies at x"
    if getattr(certifier, "sound", True) is False:
        return  # a statistical certificate (smoothing's): an attack may rightly break what it certified
    with torch.no_grad():
        points = _ball_points(threat, xc, BALL_SAMPLES, seed=11)
        predictions = model(points.flatten(0, 1)).argmax(1).view(BALL_SAMPLES, len(xc))
    flipped = (predictions != yc.unsqueeze(0)).any(0)
    assert not flipped.any(), (f"{_name(certifier)} certified examples {certified[flipped].tolist()} but sampled points of the "
                               f"{norm} ball change their prediction: the certificate is unsound")
    seeds = rng.example_seeds(0, "conformance|pgd", certified)
    x_adv = PGD(steps=50, restarts=2).run(model, xc, yc, threat, seeds=seeds).x_adv
    with torch.no_grad():
        broken = (model(x_adv).argmax(1) != yc) & threat.contains(x_adv, xc)
    assert not broken.any(), f"{_name(certifier)} certified examples {certified[broken].tolist()} that PGD breaks: unsound"


def check_certifier_counterexamples_verify(certifier: Any, norm: str = "linf") -> None:
    """Every counterexample lies in the ball and the bounds and is misclassified; the answer is repeatable."""
    from robench.certify.base import COUNTEREXAMPLE

    _certifier_applies(certifier, norm)
    network, x, y = toy_problem("image", n=24, mlp=True)
    model = _example_target(certifier, network)
    y = y.clone()
    y[:2] = (y[:2] + 1) % 3  # two clean mistakes: x itself is a counterexample
    threat, result = _certify(certifier, model, x, y, norm)
    found = result.status == COUNTEREXAMPLE
    assert result.counterexample.shape == x.shape, f"{_name(certifier)}: counterexample must have the inputs' shape"
    if found.any():
        xf, cf = x[found], result.counterexample[found]
        assert threat.contains(cf, xf).all(), f"{_name(certifier)}: a counterexample lies outside the ball or the bounds"
        with torch.no_grad():
            assert (model(cf).argmax(1) != y[found]).all(), f"{_name(certifier)}: a counterexample is classified correctly"
    from robench.certify.base import CERTIFIED

    assert not (result.status[:2] == CERTIFIED).any(), f"{_name(certifier)} certified an example misclassified at x"
    _, again = _certify(certifier, model, x, y, norm)
    assert torch.equal(again.status, result.status), f"{_name(certifier)}: the same call gave different statuses"


CERTIFIER_CHECKS: tuple[Callable[..., None], ...] = (check_method_declarations, check_hyperparameters_declared,
                                                     check_certifier_is_sound, check_certifier_counterexamples_verify)


# -- running the checks --------------------------------------------------------------------


def _bound(check: Callable[..., None], **where: str) -> Callable[[Any], None]:
    def run(obj: Any) -> None:
        check(obj, **where)

    run.__name__ = check.__name__ + "".join(f"[{v}]" for v in where.values())
    run.__doc__ = check.__doc__
    return run


def attack_checks(norms: Sequence[str] = NORMS, kinds: Sequence[str] = KINDS) -> Iterator[Callable[[Any], None]]:
    """Every attack check, once per norm and input kind."""
    for check in ATTACK_CHECKS:
        for norm in norms:
            for kind in kinds:
                yield _bound(check, norm=norm, kind=kind)


def defense_checks(kinds: Sequence[str] = KINDS) -> Iterator[Callable[[Any], None]]:
    """Every defense check, once per input kind."""
    for check in DEFENSE_CHECKS:
        for kind in kinds:
            yield _bound(check, kind=kind)


def certifier_checks(norms: Sequence[str] = NORMS) -> Iterator[Callable[[Any], None]]:
    """Every certifier check, once per norm."""
    for check in CERTIFIER_CHECKS:
        for norm in norms:
            yield _bound(check, norm=norm)


def checks_for(obj: Any) -> Iterator[Callable[[Any], None]]:
    """The checks that apply to ``obj``: an attack, a certifier, or a defense (a factory or a
    :class:`DefenseUnderTest`)."""
    from robench.attacks.base import Attack
    from robench.certify.base import Certifier

    if isinstance(obj, Attack):
        return attack_checks()
    if isinstance(obj, Certifier):
        return certifier_checks()
    if isinstance(obj, DefenseUnderTest) or callable(obj):
        return defense_checks()
    raise TypeError(f"robench.testing checks attacks, certifiers and defense factories, not {type(obj).__name__}")


def _run_all(obj: Any) -> None:
    for check in checks_for(obj):
        try:
            check(obj)
        except _NotApplicable:
            continue
        except BaseException as error:
            if type(error).__name__ == "Skipped":  # pytest.skip inside a direct call: that check does not apply
                continue
            raise


def check_attack(attack: Any) -> None:
    """Run every attack check on ``attack`` (an ``Attack`` instance); raise on the first failure."""
    _run_all(attack)


def check_defense(factory: Callable[..., nn.Module], *, inputs: tuple[str, ...] | None = None, **params: Any) -> None:
    """Run every defense check on ``factory(model, **params)`` for each input kind it supports
    (``inputs``, default: the factory's ``inputs`` attribute, else any); raise on the first failure."""
    _run_all(DefenseUnderTest(factory, tuple(sorted(params.items())), inputs=inputs))


def check_certifier(certifier: Any) -> None:
    """Run every certifier check on ``certifier`` (a ``Certifier`` instance); raise on the first failure."""
    _run_all(certifier)


def parametrize_with_checks(objects: Iterable[Any]) -> Any:
    """A ``pytest.mark.parametrize`` over (object, check) for every check that applies to each
    object, with readable ids; the test body is ``check(obj)``."""
    import pytest

    cases = []
    for obj in objects:
        label = repr(obj)
        for check in checks_for(obj):
            cases.append(pytest.param(obj, check, id=f"{label}-{check.__name__}"))
    return pytest.mark.parametrize("obj, check", cases)

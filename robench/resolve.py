"""Names to objects: the data set, the model, the defended targets, the attacks, the threat models.

Every check that can fail on the user's input happens here, before any unit runs: unknown names,
bad parameters, an attack without a version for the norm, a model, defense or attack that does
not support the data's kind of input (images or sequences), a defense that returns the wrong
logits. A unit then only attacks.
"""
from __future__ import annotations

import inspect
import logging
import typing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from robench.attacks.base import Attack
from robench.batching import chunk_rows
from robench.cards import AttackSpec, CertifySpec, DefenseCard, SuiteCard, all_defense_cards, load_defense_card, load_suite_card
from robench.data import Dataset, load_dataset, n_features, select_examples
from robench.console import one_line
from robench.errors import RobenchError
from robench.hyperparameters import declarations, from_hint
from robench.registry import Entry
from robench.registry import attacks as attack_registry
from robench.registry import certifiers as certifier_registry
from robench.registry import defenses as defense_registry
from robench.registry import models as model_registry
from robench.spec import EvalConfig, resolve_device
from robench.discover import DISCOVERY_EXAMPLES, Findings, discover
from robench.tags import Declared, TargetTags, target_tags, with_findings, with_overrides
from robench.target import Normalized, check_logits, describe_inputs, input_kind, supports_input
from robench.threat import NORMS, ThreatModel

if TYPE_CHECKING:
    from robench.certify import Certifier

log = logging.getLogger(__name__)


def accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes a keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def declared_types(fn: Any) -> dict[str, Any]:
    """The type hints of a factory's parameters (a class: its ``__init__``'s); {} if unreadable."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - hints that do not resolve: nothing to check against
        return {}


def check_params(fn: Any, what: str, params: dict[str, Any]) -> None:
    """A card's values, before anything is built: against the factory's declarations
    (``robench.hyperparameters``) where it has them, else against its type hints (an integer is an
    integer, 1.5 is not truncated; a number is finite; a flag is true or false), with the one
    message ``"{what}: {name} must be ..., got ..."``. Names it neither declares nor hints pass."""
    declared = declarations(fn)
    hints = declared_types(fn) if set(params) - set(declared) else {}
    for name, value in params.items():
        declaration = declared.get(name) or from_hint(hints.get(name))
        if declaration is not None:
            declaration.check(what, name, value)


def call_factory(fn: Any, what: str, *args: Any, **params: Any) -> Any:
    """Call a factory, turning a bad keyword into an error that lists the valid ones, and any
    exception of user code into one line."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        valid = [n for n, p in signature.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)][len(args):]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise RobenchError(f"{what}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}")
    check_params(fn, what, params)
    try:
        return fn(*args, **params)
    except RobenchError:
        raise
    except TypeError as exc:
        raise RobenchError(f"{what}: bad parameters ({exc})") from None
    except (Exception, SystemExit) as exc:  # user code that fails while building: a bad input, said in one line
        raise RobenchError(f"{what} raised {one_line(exc)}; fix it or check its parameters") from None


def _require_inputs(entry: Entry, what: str, kind: str, data: Dataset) -> None:
    if not supports_input(entry.inputs, kind):
        raise RobenchError(f"{what} supports {describe_inputs(entry.inputs)}, but data set {data.name!r} holds "
                           f"{describe_inputs((kind,))}; choose another, or a data set it fits")


def load_model(spec: str, data: Dataset) -> nn.Module:
    """A registered zoo model, or ``package.module:callable`` returning a trained ``nn.Module``."""
    entry = model_registry.entry(spec)
    if ":" not in spec:
        role = entry.extra.get("role", "classifier")
        if role != "classifier":
            hint = ("it powers a purification defense (pixeldefend for images; wavenet-purify and parallel-purify "
                    "for sequences)" if role == "density" else f"attack {spec}-probe, a linear probe on it")
            raise RobenchError(f"model {spec!r} is {'an' if role[0] in 'aeiou' else 'a'} {role}, not a classifier; {hint}")
    _require_inputs(entry, f"model {spec!r}", input_kind(data.input_shape), data)
    try:
        model = entry.factory() if ":" in spec and not accepts(entry.factory, "data") else entry.factory(data)
    except RobenchError:
        raise
    except (Exception, SystemExit) as exc:
        raise RobenchError(f"model {spec!r} raised {one_line(exc)} while loading; fix the callable or its data") from None
    if not isinstance(model, nn.Module):
        raise RobenchError(f"model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def build_attack(spec: AttackSpec, max_batch: int | None = None) -> Attack:
    factory = attack_registry.get(spec.attack)
    params = dict(spec.params)
    if max_batch is not None and "max_batch" not in params and accepts(factory, "max_batch"):
        params["max_batch"] = max_batch
    return call_factory(factory, f"attack {spec.label!r} ({spec.attack})", **params)


def build_defense(card: DefenseCard, model: nn.Module, data: Dataset) -> nn.Module:
    """``factory(model, **params)``; a factory that takes ``data`` also gets the data set."""
    factory = defense_registry.get(card.factory)
    params = dict(card.params)
    if accepts(factory, "data") and "data" not in params:
        params["data"] = data
    target = call_factory(factory, f"defense {card.name!r} ({card.factory})", model, **params)
    if not isinstance(target, nn.Module):
        raise RobenchError(f"defense {card.name!r}: factory {card.factory!r} returned {type(target).__name__}, not an nn.Module")
    return target.eval()


def card_overrides(card: DefenseCard) -> dict[str, bool]:
    """A card's explicit flags: they win over what the defense's module tree declares, in its tags
    only (nothing is written onto the module, which may be the user's own model)."""
    return {name: value for name, value in (("differentiable", card.differentiable), ("randomized", card.randomized))
            if value is not None}


def attacked_model(card: DefenseCard, model_name: str) -> str:
    """What a defense's rows call the model attacked: ``--model``, or, for a defense that trains a
    model of its own (its factory declares ``own_model``), e.g. ``adv-trained(cnn)``."""
    own = defense_registry.entry(card.factory).extra.get("own_model")
    return f"{card.name}({own})" if own else model_name


def defense_cards(names: tuple[str, ...], data: Dataset, folders: tuple[str, ...] = ()) -> list[DefenseCard]:
    """The named cards (each must fit the data), or the default set: every card that fits
    (named cards are looked up in ``folders`` first, then robench's own)."""
    kind = input_kind(data.input_shape)
    if names:
        cards = [load_defense_card(spec, folders) for spec in names]
        for card in cards:
            _require_inputs(defense_registry.entry(card.factory), f"defense {card.name!r} ({card.factory})", kind, data)
    else:
        every = all_defense_cards(default_only=True, folders=folders)
        cards = [c for c in every if supports_input(defense_registry.entry(c.factory).inputs, kind)]
        skipped = [c.name for c in every if c not in cards]
        if skipped:
            log.info("default defenses that do not fit %s inputs, skipped: %s", kind, ", ".join(skipped))
    if not cards:
        raise RobenchError(f"no defense cards fit data set {data.name!r}; pass --defense NAME|PATH")
    names_seen = [c.name for c in cards]
    if len(set(names_seen)) != len(names_seen):
        raise RobenchError(f"defense names must be distinct, got {', '.join(names_seen)}")
    return cards


def suite_attacks(suite: SuiteCard, config: EvalConfig, data: Dataset) -> dict[str, tuple[AttackSpec, Attack]]:
    """The suite's attacks, built, each checked against the norm and the data's kind of input."""
    built = {spec.label: (spec, build_attack(spec, config.max_batch)) for spec in suite.attacks}
    unsupported = [label for label, (_, attack) in built.items() if not attack.supports(config.norm)]
    if unsupported:
        raise RobenchError(f"suite {suite.name!r}: attack(s) {', '.join(unsupported)} have no {config.norm} version; "
                           f"use --norm {' or '.join(n for n in NORMS if n != config.norm)} or drop them from the suite")
    kind = input_kind(data.input_shape)
    for label, (_, attack) in built.items():
        if not supports_input(attack.inputs, kind):
            raise RobenchError(f"suite {suite.name!r}: attack {label!r} supports {describe_inputs(attack.inputs)}, but data "
                               f"set {data.name!r} holds {describe_inputs((kind,))}; drop it from the suite")
    return built


def suite_certifiers(suite: SuiteCard, config: EvalConfig, data: Dataset) -> dict[str, tuple[CertifySpec, Certifier]]:
    """The suite's certifiers (registered, from a plugin, or ``file.py:Class`` beside the card),
    built, each checked against the norm and the data's kind of input, as attacks are."""
    if not suite.certifiers:
        return {}
    from robench.certify import make_certifier

    built: dict[str, tuple[CertifySpec, Certifier]] = {}
    kind = input_kind(data.input_shape)
    for spec in suite.certifiers:
        check_params(certifier_registry.get(spec.method), f"certifier {spec.label!r} ({spec.method})", dict(spec.params))
        certifier = make_certifier(spec.method, **spec.params)
        if not certifier.supports(config.norm):
            norms = tuple(getattr(certifier, "norms", ()))
            raise RobenchError(f"suite {suite.name!r}: certifier {spec.label!r} ({spec.method}) certifies "
                               f"{' and '.join(norms) or 'other'} balls only; "
                               f"{f'use --norm {norms[0]} or drop it' if norms else 'drop it'}")
        if not supports_input(certifier.inputs, kind):
            raise RobenchError(f"suite {suite.name!r}: certifier {spec.label!r} supports {describe_inputs(certifier.inputs)}, "
                               f"but data set {data.name!r} holds {describe_inputs((kind,))}; drop it from the suite")
        built[spec.label] = (spec, certifier)
    return built


@dataclass
class Context:
    """What every unit of a run needs, resolved once per process from the configuration."""

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
    #: per defense, what its rows call the model attacked
    models: dict[str, str] = field(default_factory=dict)
    #: label -> (CertifySpec, certifier) of the suite's [[certify]] tables
    certifiers: dict[str, tuple[CertifySpec, Certifier]] = field(default_factory=dict)
    _targets: dict[str, nn.Module] = field(default_factory=dict)
    _tags: dict[str, TargetTags] = field(default_factory=dict)
    _views: dict[str, nn.Module] = field(default_factory=dict)

    def target(self, defense: str) -> nn.Module:
        """The defended target, built on first use (a Ray worker builds only the ones it attacks)."""
        if defense not in self._targets:
            self._targets[defense] = build_defense(self.cards[defense], self.model, self.data).to(self.device)
        return self._targets[defense]

    def tags(self, defense: str) -> TargetTags:
        """The defended target's tags (its whole module tree, its card's flags winning), computed
        once: every reader of a run gets them from here."""
        if defense not in self._tags:
            target = self.target(defense)
            overrides = card_overrides(self.cards[defense])
            tags = with_overrides(target_tags(target), target, overrides)
            self._tags[defense] = with_findings(tags, self._discover(target, tags, overrides))
        return self._tags[defense]

    def _discover(self, target: nn.Module, tags: TargetTags, overrides: dict[str, bool]) -> Findings:
        """Run the target to find what it does not declare (``robench.discover``): randomness where
        neither its blocks nor its card say it is randomized, gradient cuts where nothing declares
        it non-differentiable. A card's explicit flag is the user's word: nothing is looked for."""
        look_for_randomness = not tags.randomized and "randomized" not in overrides
        look_for_cuts = tags.differentiable and "differentiable" not in overrides
        if not (look_for_randomness or look_for_cuts):
            return Findings()
        x = self.x[:DISCOVERY_EXAMPLES].to(self.device)
        y = self.y[:DISCOVERY_EXAMPLES].to(self.device)
        try:
            return discover(target, x, y, max_batch=self.max_batch, randomness=look_for_randomness, gradients=look_for_cuts)
        except Exception:  # noqa: BLE001 - a target that raises fails its own units, which record the error
            log.debug("discovery on %s raised; its units will report the error", type(target).__name__, exc_info=True)
            return Findings()

    def attack_target(self, defense: str) -> nn.Module:
        """The target as attacks see it: a ``Declared`` view carrying its tags, so an attack that
        reads them (SPSA's loss draws) gets the card's flags without a walk of the tree."""
        if defense not in self._views:
            self._views[defense] = Declared(self.target(defense), self.tags(defense), vote=self.vote(defense)).eval()
        return self._views[defense]

    def vote(self, defense: str):
        """A randomized target's majority vote, the verifier's own, for attacks to confirm a break
        before an example leaves their working set (None for a deterministic target)."""
        from robench.verify import majority_vote

        tags = self.tags(defense)
        return majority_vote(self.target(defense), tags, max_batch=self.max_batch) if tags.randomized else None

    @property
    def gradient_free(self) -> list[str]:
        return [label for label, (_, attack) in self.attacks.items() if attack.gradient_free]


def build_context(config: EvalConfig, *, model: nn.Module | None = None, data: Dataset | None = None) -> Context:
    """Resolve and validate everything named by ``config`` (``model`` and ``data`` objects, when
    given, stand in for the names: ``robench.evaluate`` passes them), before any attack runs."""
    if config.n_examples < 1:
        raise RobenchError(f"--n-examples must be >= 1, got {config.n_examples}")
    if config.shard_size < 1:
        raise RobenchError(f"--shard-size must be >= 1, got {config.shard_size}")
    data = load_dataset(config.dataset) if data is None else data
    cards = defense_cards(config.defenses, data, config.card_dirs)
    suite = load_suite_card(config.suite, config.card_dirs)
    attacks = suite_attacks(suite, config, data)
    certifiers = suite_certifiers(suite, config, data)
    epsilons = config.epsilons or (data.default_epsilon(config.norm),)
    threats = {float(e): ThreatModel(config.norm, float(e), data.bounds) for e in epsilons}  # type: ignore[arg-type]
    config = replace(config, epsilons=tuple(threats))  # what run.json records: the epsilons that ran
    for threat in threats.values():
        threat.check_input_size(n_features(data.input_shape))
    x, y, ids = select_examples(data, config.n_examples)
    device = resolve_device(config.device)
    model = load_model(config.model, data) if model is None else model.eval()
    if config.normalize is not None:
        mean, std = config.normalize
        if len(mean) not in (1, data.input_shape[0]):
            raise RobenchError(f"--normalize gives {len(mean)} channel(s) but the data set's inputs have {data.input_shape[0]}")
        model = Normalized(model, tuple(mean), tuple(std)).eval()
    model = model.to(device)
    return Context(config, data, x, y, ids, device, model, {c.name: c for c in cards}, suite, attacks, threats,
                   config.max_batch or chunk_rows(x), models={c.name: attacked_model(c, config.model) for c in cards},
                   certifiers=certifiers)


@torch.no_grad()
def _n_classes(target: nn.Module, x: Tensor) -> int:
    return int(check_logits(target(x), len(x)).shape[1])


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
                f"defense {name!r} on model {ctx.config.model!r} raised {one_line(exc)} on two test inputs of shape "
                f"{tuple(ctx.x.shape[1:])}; check that the model fits the data set"
            ) from None
        for label, (spec, certifier) in ctx.certifiers.items():
            for threat in ctx.threats.values():
                try:
                    certifier.check(target, threat, tuple(ctx.x.shape[1:]))
                except RobenchError as exc:
                    raise RobenchError(f"certifier {label!r} cannot certify defense {name!r}: {exc}; name the defenses "
                                       "it supports with --defense, or drop it from the suite") from None
        if top_label >= n_classes:
            raise RobenchError(
                f"labels go up to {top_label} but defense {name!r} on model {ctx.config.model!r} has {n_classes} "
                "outputs; use a model trained for this data set"
            )


def fingerprints(ctx: Context) -> dict[str, str]:
    """What the names in a configuration stood for, by content: the data, each card, the model's
    weights. A resume compares them, so a run never mixes rows of two versions of one file."""
    import hashlib
    import json
    from dataclasses import asdict

    def digest(payload: object) -> str:
        return hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=10).hexdigest()

    weights = hashlib.blake2b(digest_size=10)
    for name, tensor in sorted(ctx.model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    found = {"dataset": ctx.data.fingerprint, "model weights": weights.hexdigest(),
             f"suite {ctx.suite.name!r}": digest({**asdict(ctx.suite), "source": ""})}
    for name, card in ctx.cards.items():
        found[f"defense card {name!r}"] = digest({**asdict(card), "source": ""})
    return found

"""What robench finds out about a target by running it, instead of trusting what it declares.

A model handed over as a plain callable declares nothing, and the two ways a defense hides its
weakness are exactly what it would not declare (Athalye, Carlini, Wagner 2018): **randomness**
(an attack that stops on one lucky draw counts a break the defense would not make again) and
**gradient-cutting layers** (rounding, ``no_grad`` or NumPy steps whose input gradient is zero,
so gradient attacks stall). Before any attack runs, robench:

* runs the target several times on the same inputs, clean ones and points next to its decision
  boundary (found by bisection between examples of different classes): if any two passes differ,
  the target is randomized, and the run treats it so everywhere (EOT for gradients, loss draws for
  SPSA, the verifier's majority vote);
* where the input gradient of the loss vanishes, finds the modules that cut it: a module whose
  own input gradient is zero for every row while its output gets a gradient (checked locally, by
  backpropagating a random vector through that module alone). The deepest such module is given
  a straight-through (identity) backward; where the cut lies in a module's own code before its
  first child (``self.net(torch.round(x))``), that child's input is given one (BPDA with the
  identity, Athalye et al. 2018, Sec. 4.1). Forward values never change.

Everything here is deterministic (a fixed seed inside a forked RNG state) and costs a few
forward and backward passes of a few examples. The findings are data (:class:`Findings`), kept
in the target's tags and written to run.json; nothing is written onto the user's module.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.target import NoGradient, cross_entropy, logits_in_chunks, straight_through

#: forward passes of the same inputs compared to find randomness
RANDOMNESS_PASSES = 4
#: examples the discovery runs on (clean ones; as many boundary points again)
DISCOVERY_EXAMPLES = 16
#: bisection steps towards the boundary between two examples of different predicted classes
BOUNDARY_STEPS = 12
#: a target's input gradient "vanishes" when at least this share of rows is exactly zero
VANISHING_SHARE = 0.5

#: where a straight-through backward goes: replace a module's backward ("module"), or give the
#: input of a module the gradient of its parent's input ("before": a cut in the parent's own code)
MODULE, BEFORE = "module", "before"


@dataclass(frozen=True)
class GradientCut:
    """A place that cuts the input gradient, by the qualified module name (``named_modules``)."""

    kind: str  # MODULE or BEFORE
    module: str
    parent: str = ""  # for BEFORE: the module whose input's gradient the child's input takes

    def describe(self) -> str:
        where = self.module or "the model"
        if self.kind == MODULE:
            return f"straight-through backward of {where}"
        return f"straight-through from the input of {self.parent or 'the model'} to the input of {where}"


@dataclass(frozen=True)
class Findings:
    """What running the target showed: randomness, and where its input gradient is cut."""

    randomized: bool = False
    gradient_cuts: tuple[GradientCut, ...] = ()

    def describe(self) -> list[str]:
        lines = []
        if self.randomized:
            lines.append("two forward passes of the same inputs differed: run as a randomized target "
                         "(EOT, loss draws, majority vote)")
        lines.extend(f"input gradient cut: BPDA with {cut.describe()}" for cut in self.gradient_cuts)
        return lines


# -- randomness ----------------------------------------------------------------------------


@torch.no_grad()
def boundary_points(target: nn.Module, x: Tensor, max_batch: int, steps: int = BOUNDARY_STEPS) -> Tensor:
    """Points next to the target's decision boundary: for each example, bisection on the segment
    to the next example of another predicted class (rows with no such partner are left out)."""
    predicted = logits_in_chunks(target, x, max_batch).argmax(1)
    partner = torch.full((len(x),), -1, dtype=torch.long)
    for i in range(len(x)):
        for shift in range(1, len(x)):
            j = (i + shift) % len(x)
            if predicted[j] != predicted[i]:
                partner[i] = j
                break
    rows = (partner >= 0).nonzero().flatten()
    if len(rows) == 0:
        return x[:0]
    a, b = x[rows], x[partner[rows]]
    low = torch.zeros(len(rows), device=x.device)
    high = torch.ones(len(rows), device=x.device)
    same = predicted[rows]
    view = (-1, *[1] * (x.dim() - 1))
    for _ in range(steps):
        middle = (low + high) / 2
        point = a + middle.view(view) * (b - a)
        stays = logits_in_chunks(target, point, max_batch).argmax(1) == same
        low = torch.where(stays, middle, low)
        high = torch.where(stays, high, middle)
    return a + ((low + high) / 2).view(view) * (b - a)


@torch.no_grad()
def finds_randomness(target: nn.Module, x: Tensor, *, max_batch: int, passes: int = RANDOMNESS_PASSES) -> bool:
    """True if ``passes`` forward passes of the same inputs (``x`` and points next to the decision
    boundary) give different logits anywhere. Run in a forked RNG state with a fixed seed."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        probe = torch.cat([x, boundary_points(target, x, max_batch)])
        first = logits_in_chunks(target, probe, max_batch).float()
        for _ in range(passes - 1):
            again = logits_in_chunks(target, probe, max_batch).float()
            if again.shape != first.shape or not _same(again, first):
                return True
    return False


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal up to the last bits a deterministic kernel may vary by (GPU reductions), no further."""
    scale = 1.0 + float(torch.nan_to_num(a).abs().max())
    return bool(((a - b).abs() <= 1e-6 * scale).all()) and bool((a.isnan() == b.isnan()).all())


# -- gradient cuts -------------------------------------------------------------------------


def vanishing_share(target: nn.Module, x: Tensor, y: Tensor, *, max_batch: int) -> float:
    """The share of rows whose cross-entropy input gradient is exactly zero (1.0: no gradient at all)."""
    from robench.target import loss_and_gradient

    try:
        _, grad, _ = loss_and_gradient(target, x, y, max_batch=max_batch)
    except NoGradient:
        return 1.0
    return float((grad.flatten(1).abs().amax(1) == 0).float().mean())


@dataclass
class _Call:
    name: str
    module: nn.Module
    inputs: Tensor
    output: Tensor
    order: int


def _record_calls(target: nn.Module, x: Tensor) -> list[_Call]:
    """One forward of ``x`` with every module's first tensor input and tensor output recorded."""
    calls: list[_Call] = []
    pending: dict[int, list[tuple[Tensor, int]]] = {}
    handles = []
    counter = iter(range(1 << 30))

    def before(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor):
            pending.setdefault(id(module), []).append((args[0].detach(), next(counter)))

    def after(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            stack = pending.get(id(module))
            if stack and isinstance(output, Tensor):
                inputs, order = stack.pop()
                calls.append(_Call(name, module, inputs, output.detach(), order))
        return hook

    for name, module in target.named_modules():
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after(name)))
    try:
        with torch.no_grad():
            target(x)
    finally:
        for handle in handles:
            handle.remove()
    return sorted(calls, key=lambda call: call.order)


def _cuts_locally(call: _Call, generator: torch.Generator) -> bool:
    """True if the module, run alone on its recorded input, passes no gradient back to it (every
    row zero, or no autograd path at all) while it has a floating-point output."""
    if not (call.inputs.is_floating_point() and call.output.is_floating_point()):
        return False
    inputs = call.inputs.clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            output = call.module(inputs)
        except Exception:  # noqa: BLE001 - a module that cannot run alone is not judged
            return False
        if not isinstance(output, Tensor) or not output.requires_grad:
            return True
        direction = torch.randn(output.shape, generator=generator).to(output.device, output.dtype)
        (grad,) = torch.autograd.grad((output * direction).sum(), inputs, allow_unused=True)
    return grad is None or bool((grad.flatten(1).abs().amax(1) == 0).all())


def locate_gradient_cuts(target: nn.Module, x: Tensor) -> tuple[GradientCut, ...]:
    """The deepest modules whose input gradient is cut (see the module docstring), each as a
    straight-through backward of the module (same input and output shape) or, for a cut in a
    module's own code, from its input to the input of its first child that shares its shape."""
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(0)
        calls = _record_calls(target, x)
        cutting = {call.name for call in calls if _cuts_locally(call, generator)}
    cuts: list[GradientCut] = []
    for call in calls:
        if call.name not in cutting:
            continue
        prefix = call.name + "." if call.name else ""
        if any(other != call.name and other.startswith(prefix) for other in cutting):
            continue  # a deeper module cuts: that one is the place
        if call.output.shape == call.inputs.shape:
            cuts.append(GradientCut(MODULE, call.name))
            continue
        children = [c for c in calls if c.name != call.name and c.name.startswith(prefix) and c.order > call.order
                    and "." not in c.name[len(prefix):] and c.inputs.shape == call.inputs.shape]
        if children:
            cuts.append(GradientCut(BEFORE, children[0].name, parent=call.name))
    return tuple(dict.fromkeys(cuts))


@contextmanager
def straight_through_at(target: nn.Module, cuts: tuple[GradientCut, ...]) -> Iterator[None]:
    """Within this block, ``target``'s forward passes backpropagate through the identity at
    ``cuts``; the forward values are bit-identical (``robench.target.straight_through``)."""
    if not cuts:
        yield
        return
    modules = dict(target.named_modules())
    parent_inputs: dict[str, list[Tensor]] = {}
    handles = []

    def identity_backward(module: nn.Module, args: tuple, output: object) -> object:
        if (args and isinstance(args[0], Tensor) and isinstance(output, Tensor) and args[0].requires_grad
                and torch.is_grad_enabled() and output.shape == args[0].shape):
            return straight_through(output, args[0].to(output.dtype))
        return None

    def remember(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], Tensor):
                parent_inputs.setdefault(name, []).append(args[0])
        return hook

    def forget(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if parent_inputs.get(name):
                parent_inputs[name].pop()
        return hook

    def take_parent_gradient(parent: str):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            stack = parent_inputs.get(parent)
            if not stack or not args or not isinstance(args[0], Tensor) or not torch.is_grad_enabled():
                return None
            source = stack[-1]
            if not source.requires_grad or source.shape != args[0].shape:
                return None
            return (straight_through(args[0], source.to(args[0].dtype)), *args[1:])
        return hook

    try:
        for cut in cuts:
            if cut.module not in modules or (cut.kind == BEFORE and cut.parent not in modules):
                continue
            if cut.kind == MODULE:
                handles.append(modules[cut.module].register_forward_hook(identity_backward))
            else:
                parent = modules[cut.parent]
                handles.append(parent.register_forward_pre_hook(remember(cut.parent)))
                handles.append(parent.register_forward_hook(forget(cut.parent)))
                handles.append(modules[cut.module].register_forward_pre_hook(take_parent_gradient(cut.parent)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def discover(target: nn.Module, x: Tensor, y: Tensor, *, max_batch: int, randomness: bool = True,
             gradients: bool = True) -> Findings:
    """Run the target on ``x`` (a few clean examples) and report what it hides: randomness, and
    the cuts of its input gradient when that gradient vanishes for most rows (and BPDA at the
    cuts brings it back)."""
    x = x[:DISCOVERY_EXAMPLES]
    y = y[:DISCOVERY_EXAMPLES]
    randomized = randomness and finds_randomness(target, x, max_batch=max_batch)
    cuts: tuple[GradientCut, ...] = ()
    if gradients and len(x):
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(0)
            vanishing = vanishing_share(target, x, y, max_batch=max_batch) >= VANISHING_SHARE
        if vanishing:
            cuts = locate_gradient_cuts(target, x)
    return Findings(randomized=randomized, gradient_cuts=cuts)

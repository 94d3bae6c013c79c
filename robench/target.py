"""The Target contract: what robench knows about a module it attacks, in one place.

A target maps inputs in the data bounds to logits of shape (N, classes). Beyond that, robench
reads only what this module defines:

* **tags**: what robench reads about a target is one frozen ``TargetTags``, computed once per
  target by ``robench.tags.target_tags`` from the whole module tree (as scikit-learn's ``get_tags``)
  and read everywhere else; nothing reads a flag off a module directly. Blocks declare flags as
  attributes: ``differentiable = False`` when the block's forward pass has no useful gradient
  (JPEG, quantisation), so gradient attacks go through BPDA; ``randomized = True`` when two
  forward passes of the same input may differ, so gradients use EOT and predictions use repeated
  draws. A target is randomized if *any* block in it declares ``randomized = True`` and not
  differentiable if any declares ``differentiable = False``: a randomized block nested inside a
  user's ``nn.Sequential`` counts. A randomized block may also declare ``independent_rows =
  True``: each row's randomness is drawn apart from the other rows of the call, so one call on k
  stacked copies of a batch is k independent draws, and EOT and the majority vote run them as one
  call (a block that draws one parameter per call, shared by its rows, must leave it False).
  A defense card's explicit ``differentiable`` / ``randomized`` are *overrides*: they win over the
  tree and live only in the tags (``target_tags(module, overrides=...)``); nothing is ever
  written onto a user's module. A wrapper that knows its tags whole (robench's EOT/BPDA view, a
  ``Declared`` view) defines ``robench_tags()``, and the walk does not look inside it.
* **BPDA stand-ins**: a :class:`Preprocessed` block's ``bpda(x)`` (a differentiable stand-in for
  its transform, identity by default) or any module's ``bpda_forward(x)`` (a stand-in for its
  whole forward pass); see ``robench.attacks.adaptive``.
* **seeded draws**: a randomized block draws from a :class:`SeededDraws` (attribute ``draws``) or
  defines ``reseed(seed: int)``; :func:`reseed` restarts every such block at the start of a work
  unit, so results do not depend on what ran before in the same process.
* **costs**: ``queries_per_row`` (target rows per forward row: EOT wrappers answer several draws
  per row; a tag) and ``probe_as`` (the module whose timing a wrapper shares, for
  ``robench.batching``); read them with :func:`queries_per_row` / :func:`probe_target`.
* **smoothing**: a block that is a Gaussian-smoothed classifier declares ``gaussian_smoothing``
  (a :class:`GaussianSmoothing`: its base classifier and noise level), the tag randomized
  smoothing certifies.
* **input kinds**: images (N x C x H x W) or sequences (N x C x L); attacks, defenses and models
  declare the kinds they support (:data:`ANY` for all), checked before a run starts.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

from robench.errors import RobenchError
from robench.tags import target_tags

# -- input kinds ---------------------------------------------------------------------------

IMAGE, SEQUENCE, ANY = "image", "sequence", "any"
#: the concrete kinds of input, by the rank of one example: C x H x W, C x L
INPUT_KINDS: dict[int, str] = {3: IMAGE, 2: SEQUENCE}


def input_kind(example_shape: tuple[int, ...]) -> str:
    """``image`` for one example of shape C x H x W, ``sequence`` for C x L."""
    kind = INPUT_KINDS.get(len(example_shape))
    if kind is None:
        raise RobenchError(f"inputs of shape {tuple(example_shape)} per example are neither images (C, H, W) "
                           "nor sequences (C, L); reshape the data set")
    return kind


def supports_input(supported: Collection[str], kind: str) -> bool:
    return ANY in supported or kind in supported


def describe_inputs(supported: Collection[str]) -> str:
    if ANY in supported:
        return "any input"
    return " and ".join({IMAGE: "images (N x C x H x W)", SEQUENCE: "sequences (N x C x L)"}.get(k, k) for k in supported)


# -- flags and costs -----------------------------------------------------------------------


def is_differentiable(target: nn.Module) -> bool:
    """``target_tags(target).differentiable``, for external code (robench reads the tags it computed once)."""
    return target_tags(target).differentiable


def is_randomized(target: nn.Module) -> bool:
    """``target_tags(target).randomized``, for external code (robench reads the tags it computed once)."""
    return target_tags(target).randomized


def repeat_rows(x: Tensor, copies: int) -> Tensor:
    """``copies`` copies of the batch ``x`` stacked along the rows (copy-major: row i of copy c is
    row c * len(x) + i), the layout in which one forward gives ``copies`` draws per row."""
    return x.repeat(copies, *([1] * (x.dim() - 1)))


def queries_per_row(target: nn.Module) -> int:
    """Rows of the underlying target one forward row costs (an EOT view: its draws): the
    ``queries_per_row`` tag, which only the root declares (no walk of the tree)."""
    declare = getattr(target, "robench_tags", None)
    return declare().queries_per_row if callable(declare) else int(getattr(target, "queries_per_row", 1))


def probe_target(target: nn.Module) -> nn.Module:
    """The module whose forward timing ``target`` shares (a BPDA wrapper: the wrapped target)."""
    return getattr(target, "probe_as", None) or target


# -- seeded draws --------------------------------------------------------------------------


class SeededDraws:
    """Randomness for randomized blocks: one seeded ``torch.Generator`` per device.

    Each forward pass draws afresh (EOT and the verifier's majority vote rely on that), yet a run
    is reproducible: the sequence of draws is fixed by ``seed`` and the order of calls. Draws do
    depend on the batch an example ran in (unlike ``robench.rng``): a randomized defense's single
    draw is meant to be unpredictable, and only statistics over draws are reported.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._salted = self.seed
        self._generators: dict[str, torch.Generator] = {}

    def reseed(self, salt: int) -> None:
        """Restart the draws from a seed mixed with ``salt`` (see :func:`reseed`)."""
        from robench.rng import derive_seed

        self._generators.clear()
        self._salted = derive_seed(self.seed, salt)

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self._salted)
        return self._generators[key]


def reseed(target: nn.Module, seed: int) -> None:
    """Restart a target's randomness: torch's global RNG (for blocks that draw from it) and every
    block's own draws (a ``reseed(seed)`` method or a :class:`SeededDraws` as ``draws``).

    The runner calls this at the start of every work unit, inside a forked RNG state, so a unit's
    draws do not depend on the units before it and the caller's global RNG is left as it was.
    """
    torch.manual_seed(seed)
    for module in target.modules():
        if callable(getattr(module, "reseed", None)):
            module.reseed(seed)
        elif hasattr(getattr(module, "draws", None), "reseed"):
            module.draws.reseed(seed)


# -- BPDA: straight-through gradients ------------------------------------------------------

#: ids of the blocks that backpropagate through their stand-in in the current bpda_backward block
_BPDA_BLOCKS: ContextVar[frozenset[int]] = ContextVar("robench_bpda_blocks", default=frozenset())


@contextmanager
def bpda_backward(blocks: Collection[nn.Module]) -> Iterator[None]:
    """Within this block, the :class:`Preprocessed` blocks among ``blocks`` (the target's
    ``non_differentiable`` tag) backpropagate through ``bpda``."""
    token = _BPDA_BLOCKS.set(frozenset(id(block) for block in blocks))
    try:
        yield
    finally:
        _BPDA_BLOCKS.reset(token)


def bpda_applies(block: nn.Module) -> bool:
    """Whether ``block`` substitutes its BPDA stand-in now (see :func:`bpda_backward`)."""
    return id(block) in _BPDA_BLOCKS.get()


def straight_through(exact: Tensor, approx: Tensor) -> Tensor:
    """The value of ``exact`` with the gradient of ``approx`` (BPDA, Athalye et al. 2018, Sec. 4.1).

    ``approx - approx.detach()`` is exactly zero for finite values, so the result equals
    ``exact`` bit for bit while the backward pass sees only ``approx``.
    """
    if exact.shape != approx.shape:
        raise RobenchError(
            f"BPDA approximation has shape {tuple(approx.shape)} but the exact output has {tuple(exact.shape)}; "
            "bpda()/bpda_forward() must return the same shape as transform()/forward()"
        )
    return exact.detach() + (approx - approx.detach())


class Preprocessed(nn.Module):
    """``model(transform(x))``: the common shape of input-transformation defenses.

    Most defenses broken by Athalye, Carlini & Wagner (2018) have this shape, with a ``transform``
    whose gradient is zero or useless. Inside :func:`bpda_backward` a non-differentiable block (in
    the target's ``non_differentiable`` tag: declared so, or made so by its card) computes the exact
    ``transform(x)`` on the forward pass and backpropagates through ``bpda(x)``, so predictions
    stay honest while gradients become useful.
    """

    differentiable = True
    randomized = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def bpda(self, x: Tensor) -> Tensor:
        """Differentiable approximation of ``transform`` for BPDA (Athalye et al. 2018): identity."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        transformed = self.transform(x)
        if bpda_applies(self) and torch.is_grad_enabled() and x.requires_grad:
            transformed = straight_through(transformed, self.bpda(x))
        return self.model(transformed)


# -- input normalization -------------------------------------------------------------------


class Normalized(nn.Module):
    """``model((x - mean) / std)`` per channel: a model trained on normalized inputs, attacked in
    pixel space. The threat model stays on the inputs in [0, 1]; only the model sees them shifted
    and scaled (as RobustBench wraps its models)."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise RobenchError(f"normalization needs as many means as stds, got {len(mean)} and {len(std)}")
        if any(not s > 0 for s in std):
            raise RobenchError(f"normalization stds must be > 0, got {std}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if len(self.mean) not in (1, channels):
            raise RobenchError(f"normalization has {len(self.mean)} channel(s) but the inputs have {channels}")
        view = (1, -1, *[1] * (x.dim() - 2))
        return self.model((x - self.mean.to(x.dtype).view(view)) / self.std.to(x.dtype).view(view))

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 6) for v in self.mean.tolist())}, std={tuple(round(v, 6) for v in self.std.tolist())}"


def parse_normalization(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``MEAN,STD`` with one value each, or per channel with ``/``: ``0.49/0.48/0.45,0.25/0.24/0.26``."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        mean, std = (tuple(float(v) for v in part.split("/")) for part in parts)
    except ValueError:
        raise RobenchError(f"--normalize {text!r}: write MEAN,STD (e.g. 0.1307,0.3081), per channel separated by / "
                           "(e.g. 0.485/0.456/0.406,0.229/0.224/0.225)") from None
    if len(mean) != len(std) or any(not (v == v and abs(v) != float("inf")) for v in (*mean, *std)) or any(v <= 0 for v in std):
        raise RobenchError(f"--normalize {text!r}: needs as many finite means as stds, and stds > 0")
    return mean, std


# -- forward passes ------------------------------------------------------------------------


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Logit of the true class minus the largest other logit (negative = misclassified).

    This is the margin loss of Carlini & Wagner (2017) used by Uesato et al. (2018), Eq. 4.
    """
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - others.amax(dim=1)


def check_logits(logits: Tensor, n_rows: int) -> Tensor:
    """Fail clearly on a target that returns the wrong shape or non-finite logits."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n_rows or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise RobenchError(f"the target returned {shape} for {n_rows} inputs; it must return logits of shape (N, classes >= 2)")
    if not bool(torch.isfinite(logits).all()):
        raise RobenchError("the target returned NaN or infinite logits; check the model and its input range")
    return logits


@torch.no_grad()
def logits_in_chunks(target: nn.Module, x: Tensor, max_batch: int) -> Tensor:
    """Forward ``x`` through ``target`` in chunks of at most ``max_batch`` rows."""
    if len(x) <= max_batch:
        return target(x)
    return torch.cat([target(x[start : start + max_batch]) for start in range(0, len(x), max_batch)])


def confirmed_breaks(target: nn.Module, x: Tensor, y: Tensor, wrong: Tensor) -> tuple[Tensor, Tensor]:
    """``wrong`` (per row: the attack's own view misclassifies ``x``), kept only where the target's
    ``vote`` confirms it, and the target rows each row's confirmation cost.

    A randomized target's one draw (or EOT mean) may call a point adversarial that the verifier's
    majority vote then does not (Pintor et al. 2022's "silent success"): an attack that stopped
    there would waste the example. Attack views of randomized targets carry ``vote(x, y) ->
    (misclassified by the majority, rows spent per row)``; every attack asks it before an example
    leaves its working set. Targets without ``vote`` (deterministic ones) cost nothing extra."""
    spent = torch.zeros(len(x), dtype=torch.long, device=x.device)
    vote = getattr(target, "vote", None)
    if vote is None or not bool(wrong.any()):
        return wrong, spent
    rows = wrong.nonzero().flatten()
    majority, cost = vote(x[rows].detach(), y[rows])
    confirmed = torch.zeros_like(wrong)
    confirmed[rows] = majority.to(wrong.device)
    spent[rows] = int(cost)
    return confirmed, spent


class NoGradient(RobenchError):
    """The target's output does not depend on its input through autograd."""


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-row cross-entropy in float32 (the loss of PGD, Madry et al. 2018)."""
    return nn.functional.cross_entropy(logits.float(), labels, reduction="none")


def loss_and_gradient(
    target: nn.Module, x: Tensor, y: Tensor, *, loss: Callable[..., Tensor] = cross_entropy, max_batch: int,
    extra: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row ``loss(logits, y)`` (``loss(logits, y, extra)`` when per-row ``extra`` is given, e.g.
    target classes), the input gradient of its sum, and whether each row is still classified
    correctly, in chunks of at most ``max_batch`` rows: the one loop every gradient attack and
    diagnostic shares. Raises :class:`NoGradient` when the output does not depend on the input
    through autograd (a ``no_grad`` or NumPy step inside the target)."""
    losses, grads, logits = loss_gradient_logits(target, x, y, loss=loss, max_batch=max_batch, extra=extra)
    return losses, grads, logits.argmax(1) == y


def loss_gradient_logits(
    target: nn.Module, x: Tensor, y: Tensor, *, loss: Callable[..., Tensor] = cross_entropy, max_batch: int,
    extra: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`loss_and_gradient` that returns the (detached, float32) logits instead of 'still correct'."""
    losses, grads, all_logits = [], [], []
    for start in range(0, len(x), max_batch):
        xb = x[start : start + max_batch].detach().requires_grad_(True)
        yb = y[start : start + max_batch]
        with torch.enable_grad():
            logits = target(xb)
            if not logits.requires_grad:
                raise NoGradient("the output does not depend on the input through autograd")
            logits = logits.float()
            row_loss = loss(logits, yb) if extra is None else loss(logits, yb, extra[start : start + max_batch])
            (grad,) = torch.autograd.grad(row_loss.sum(), xb, allow_unused=True)
        if grad is None:
            raise NoGradient("the loss does not depend on the input through autograd")
        losses.append(row_loss.detach())
        grads.append(grad)
        all_logits.append(logits.detach())
    if len(grads) == 1:
        return losses[0], grads[0], all_logits[0]
    return torch.cat(losses), torch.cat(grads), torch.cat(all_logits)


class QueryCounter(nn.Module):
    """Counts the rows a wrapped target is asked to classify (for attacks run by other libraries)."""

    def __init__(self, target: nn.Module) -> None:
        super().__init__()
        self.target = target
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        # an EOT wrapper asks its target for several draws per row: count what the target answered
        self.rows += len(x) * queries_per_row(self.target)
        return self.target(x)
